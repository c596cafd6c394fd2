"""The data plane: N chunk portals and the VIP redirector on one asyncio loop in its own thread.

`zbs-lite serve` creates a `DataPlane(catalog, vip, chunks)`; tests do the same with a
`MemoryCatalog`. Every chunk serves every target and LUN from the same files, so sessions
on two chunks see the same data; the VIP portal spreads normal logins over the live
chunks with a consistent hash, so an initiator lands on the same chunk while it is up.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import hashlib
import itertools
import logging
import threading
from typing import Any

from zbs_lite.catalog import Catalog, LunView
from zbs_lite.iscsi.connection import Connection
from zbs_lite.iscsi.scsi import LunFile, ScsiDevice
from zbs_lite.throttle import LoginThrottle

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 0.3
PROBE_TIMEOUT = 0.5
VNODES = 64
STREAM_LIMIT = 4 << 20


def _h(s: str) -> int:
    return int.from_bytes(hashlib.sha1(s.encode(), usedforsecurity=False).digest()[:8], "big")


class HashRing:
    """Consistent hashing of (initiator, target) onto chunk numbers, skipping dead chunks.

    With virtual nodes, a chunk that goes away only moves the sessions it carried; when it
    comes back it gets the same ones again.
    """

    def __init__(self, members: list[int], vnodes: int = VNODES) -> None:
        self._points = sorted((_h(f"chunk-{m}-{v}"), m) for m in members for v in range(vnodes))
        self._keys = [p for p, _ in self._points]

    def pick(self, key: str, alive: set[int]) -> int | None:
        if not alive or not self._points:
            return None
        start = bisect.bisect(self._keys, _h(key))
        for i in range(len(self._points)):
            member = self._points[(start + i) % len(self._points)][1]
            if member in alive:
                return member
        return None


class Portal:
    """One listening address: a chunk (`role="chunk"`, n >= 1) or the VIP (`role="vip"`, n = 0)."""

    def __init__(self, plane: DataPlane, role: str, n: int, host: str, port: int) -> None:
        self.plane = plane
        self.role = role
        self.n = n
        self.host = host
        self.port = port
        self.server: asyncio.Server | None = None
        self.conns: set[Connection] = set()
        self.sessions: dict[tuple[str, bytes, str], Connection] = {}
        self._tsih = itertools.count(1)

    @property
    def name(self) -> str:
        return "vip" if self.role == "vip" else f"chunk{self.n}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def up(self) -> bool:
        return self.server is not None

    async def start(self) -> None:
        if self.server is not None:
            return
        self.server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True, limit=STREAM_LIMIT
        )
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("%s listening on %s", self.name, self.address)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for c in list(self.conns):
            c.abort()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        log.info("%s stopped (%d connections killed)", self.name, len(self.conns))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        self.conns.add(conn)
        try:
            await conn.run()
        finally:
            self.conns.discard(conn)

    def new_tsih(self) -> int:
        return (next(self._tsih) % 0xFFFF) + 1

    def session_started(self, conn: Connection) -> None:
        assert conn.target is not None
        key = (conn.initiator.lower(), conn.isid, conn.target.iqn)
        old = self.sessions.get(key)
        if old is not None and old is not conn:
            log.info("%s: reinstating session of %s, dropping the old connection", self.name, conn.initiator)
            old.abort()
        self.sessions[key] = conn

    def session_ended(self, conn: Connection) -> None:
        if conn.target is None:
            return
        key = (conn.initiator.lower(), conn.isid, conn.target.iqn)
        if self.sessions.get(key) is conn:
            del self.sessions[key]

    def redirect(self, initiator: str, target_iqn: str) -> str | None:
        return self.plane.pick_chunk(initiator, target_iqn)


class DataPlane:
    """The contract with `zbs-lite serve` (see the module docstring and catalog.py)."""

    def __init__(
        self,
        catalog: Catalog,
        vip: tuple[str, int],
        chunks: list[tuple[str, int]],
        *,
        io_threads: int = 16,
        health_interval: float = HEALTH_INTERVAL,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.catalog = catalog
        self.throttle = throttle or LoginThrottle()  # CHAP failures back off like API logins
        self._vip_addr = vip
        self._chunk_addrs = list(chunks)
        self._io_threads = io_threads
        self._health_interval = health_interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.vip: Portal | None = None
        self.chunks: list[Portal] = []
        self.alive: set[int] = set()
        self.ring = HashRing(list(range(1, len(chunks) + 1)))
        self.files: dict[str, LunFile] = {}
        self.device: ScsiDevice
        self._files_gen = -1
        self._health: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- thread-side API
    def start(self) -> None:
        """Listen on every portal; returns once they accept connections."""
        if self._thread is not None:
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="zbs-iscsi", daemon=True)
        self._thread.start()
        ready.result(timeout=30)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        executor = concurrent.futures.ThreadPoolExecutor(self._io_threads, thread_name_prefix="zbs-io")
        loop.set_default_executor(executor)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as e:
            ready.set_exception(e)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            executor.shutdown(wait=True)
            loop.close()

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        if self.loop is None:
            raise RuntimeError("data plane not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread is None or self.loop is None:
            return
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self._thread = None

    def stop_chunk(self, n: int) -> None:
        """Close chunk n's listener and kill its sessions (a chunk server crash, seen from outside)."""
        self._call(self._stop_chunk(self._index(n)))

    def start_chunk(self, n: int) -> None:
        self._call(self._start_chunk(self._index(n)))

    def status(self) -> dict[str, Any]:
        return self._call(self._status())

    def _index(self, n: int) -> int:
        if not 1 <= n <= len(self._chunk_addrs):
            raise ValueError(f"chunk {n} does not exist (1..{len(self._chunk_addrs)})")
        return n

    # ---------------------------------------------------------------- loop side
    async def _start(self) -> None:
        self.device = ScsiDevice(asyncio.get_running_loop())
        self.chunks = [Portal(self, "chunk", i + 1, h, p) for i, (h, p) in enumerate(self._chunk_addrs)]
        self.vip = Portal(self, "vip", 0, *self._vip_addr)
        try:
            for c in self.chunks:
                await c.start()
                self.alive.add(c.n)
            await self.vip.start()
        except BaseException:
            await self._stop()
            raise
        self._health = asyncio.get_running_loop().create_task(self._health_loop())

    async def _stop(self) -> None:
        if self._health is not None:
            self._health.cancel()
            await asyncio.gather(self._health, return_exceptions=True)
        portals = ([self.vip] if self.vip else []) + self.chunks
        await asyncio.gather(*(p.stop() for p in portals), return_exceptions=True)
        for lf in self.files.values():
            lf.retire()
        self.files.clear()

    async def _stop_chunk(self, n: int) -> None:
        self.alive.discard(n)
        await self.chunks[n - 1].stop()

    async def _start_chunk(self, n: int) -> None:
        await self.chunks[n - 1].start()
        self.alive.add(n)

    async def _status(self) -> dict[str, Any]:
        return {
            "vip": self.vip.address if self.vip else None,
            "chunks": [
                {
                    "n": c.n,
                    "portal": c.address,
                    "up": c.up,
                    "healthy": c.n in self.alive,
                    "sessions": len(c.sessions),
                }
                for c in self.chunks
            ],
        }

    async def _probe(self, portal: Portal) -> bool:
        if not portal.up:
            return False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(portal.host, portal.port), PROBE_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True

    async def _health_loop(self) -> None:
        """Keep the redirector's ring to the chunks that accept connections; sweep stale LUN files."""
        while True:
            results = await asyncio.gather(*(self._probe(c) for c in self.chunks))
            for c, ok in zip(self.chunks, results):
                if ok and c.up and c.n not in self.alive:  # c.up: not stopped while the probe ran
                    log.info("redirector: %s is back", c.name)
                    self.alive.add(c.n)
                elif not ok and c.n in self.alive:
                    log.warning("redirector: %s is down, leaving the ring", c.name)
                    self.alive.discard(c.n)
            self._sweep_files()
            await asyncio.sleep(self._health_interval)

    def unit_attention(self, lun_id: str, asc_ascq: tuple[int, int]) -> None:
        """Raise a UNIT ATTENTION on every session that sees the LUN (all chunks)."""
        for portal in self.chunks:
            for conn in list(portal.sessions.values()):
                conn.unit_attention(lun_id, asc_ascq)

    def pick_chunk(self, initiator: str, target_iqn: str) -> str | None:
        n = self.ring.pick(f"{initiator.lower()}|{target_iqn}", self.alive)
        return None if n is None else self.chunks[n - 1].address

    # ---------------------------------------------------------------- LUN files
    def lun_file(self, lun: LunView) -> LunFile | None:
        """The shared open file of a LUN, acquired for one command (release it after)."""
        lf = self.files.get(lun.id)
        if lf is not None and lf.path != lun.path:
            lf.retire()
            lf = None
        if lf is None:
            try:
                lf = LunFile(lun.path)
            except OSError as e:
                log.error("cannot open LUN %s file %s: %s", lun.id, lun.path, e)
                return None
            self.files[lun.id] = lf
        if not lf.acquire():
            return None
        return lf

    def _sweep_files(self) -> None:
        gen = self.catalog.generation()
        if gen == self._files_gen or not self.files:
            return
        self._files_gen = gen
        live = {lun.id for t in self.catalog.targets() for lun in self.catalog.luns(t.id)}
        for lun_id in [k for k in self.files if k not in live]:
            self.files.pop(lun_id).retire()
