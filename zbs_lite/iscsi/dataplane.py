"""The data plane: N chunk portals and the VIP redirector on one asyncio loop in its own thread.

`zbs-lite serve` creates a `DataPlane(catalog, vip, chunks)`; tests do the same with a
`MemoryCatalog`. Every chunk serves every target and LUN from the same files, so sessions
on two chunks see the same data; the VIP portal spreads normal logins over the live
chunks with a consistent hash, so an initiator lands on the same chunk while it is up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from zbs_lite.catalog import Catalog, CatalogSnapshot, LunView
from zbs_lite.iscsi.backstore import BlockIo, LunFile
from zbs_lite.iscsi.commands import DATA_OUT_TIMEOUT, SESSION_BUFFER_BUDGET, SessionLimits
from zbs_lite.iscsi.portal import Portal
from zbs_lite.iscsi.redirector import HashRing, ring_key
from zbs_lite.iscsi.scsi import Executor
from zbs_lite.throttle import LoginThrottle

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 0.3
PROBE_TIMEOUT = 0.5
INSTALL_TIMEOUT = 10.0
T = TypeVar("T")


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
        data_out_timeout: float = DATA_OUT_TIMEOUT,
        buffer_budget: int = SESSION_BUFFER_BUDGET,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.catalog = catalog
        self.limits = SessionLimits(data_out_timeout, buffer_budget)
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
        self.executor: Executor
        self.snapshot = CatalogSnapshot()  # the loop's view of the catalog; replaced, never changed
        self._health: asyncio.Task[None] | None = None
        self._loop_thread = 0

    # ---------------------------------------------------------------- thread-side API
    def start(self) -> None:
        """Listen on every portal; returns once they accept connections."""
        if self._thread is not None:
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.catalog.subscribe(self._offer)
        self._thread = threading.Thread(target=self._run, args=(ready,), name="zbs-iscsi", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=30)
        except BaseException:
            self.catalog.unsubscribe(self._offer)
            raise

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

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        if self.loop is None:
            raise RuntimeError("data plane not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread is None or self.loop is None:
            return
        self.catalog.unsubscribe(self._offer)
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

    def _offer(self, snap: CatalogSnapshot) -> None:
        """A new catalog snapshot, from the thread that committed it: installed on the loop before
        this returns, so what the API acknowledged is what the data plane enforces."""
        loop = self.loop
        if loop is None:
            return  # not started: _start takes the catalog's latest snapshot itself
        if self._loop_thread == threading.get_ident():
            self._install(snap)
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            loop.call_soon_threadsafe(self._install, snap, done)
        except RuntimeError:
            return  # the loop is closed: nothing left to protect
        try:
            done.result(INSTALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            log.warning(
                "catalog change %d not installed within %ss; the loop is busy", snap.generation, INSTALL_TIMEOUT
            )

    # ---------------------------------------------------------------- loop side
    def _install(self, snap: CatalogSnapshot, done: concurrent.futures.Future[None] | None = None) -> None:
        """Make ``snap`` the loop's view: sessions of the changed targets re-apply masking, whitelists
        and sizes (fencing what they may no longer touch), and the files of LUNs that are gone are
        closed. ``done`` is set once no fenced command can still write."""
        writing: list[asyncio.Task[Any]] = []
        try:
            old = self.snapshot
            if snap.generation > old.generation:
                self.snapshot = snap
                changed = snap.changed_targets(old)
                for portal in self.chunks:
                    for conn in list(portal.conns):
                        if conn.target is not None and conn.target.id in changed:
                            writing += conn.catalog_changed(snap)
                kept = {lun.id for tid in changed for lun in snap.luns(tid)}
                for lun_id in {lun.id for tid in changed for lun in old.luns(tid)} - kept:
                    lf = self.files.pop(lun_id, None)
                    if lf is not None:
                        lf.retire()
        finally:
            if done is not None:
                if writing:
                    gathered = asyncio.gather(*writing, return_exceptions=True)
                    gathered.add_done_callback(lambda _: done.set_result(None))
                else:
                    done.set_result(None)

    async def _start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._install(self.catalog.snapshot())
        self.executor = Executor(BlockIo(asyncio.get_running_loop()), self.lun_file)
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
        """Keep the redirector's ring to the chunks that accept connections."""
        while True:
            results = await asyncio.gather(*(self._probe(c) for c in self.chunks))
            for c, ok in zip(self.chunks, results):
                if ok and c.up and c.n not in self.alive:  # c.up: not stopped while the probe ran
                    log.info("redirector: %s is back", c.name)
                    self.alive.add(c.n)
                elif not ok and c.n in self.alive:
                    log.warning("redirector: %s is down, leaving the ring", c.name)
                    self.alive.discard(c.n)
            await asyncio.sleep(self._health_interval)

    def unit_attention(self, lun_id: str, asc_ascq: tuple[int, int]) -> None:
        """Raise a UNIT ATTENTION on every session that sees the LUN (all chunks)."""
        for portal in self.chunks:
            for conn in list(portal.sessions.values()):
                conn.unit_attention(lun_id, asc_ascq)

    def pick_chunk(self, initiator: str, target_iqn: str) -> str | None:
        n = self.ring.pick(ring_key(initiator, target_iqn), self.alive)
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
