"""One listening address: a chunk server (serves data) or the VIP (discovery and redirects only)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Protocol

from zbs_lite.catalog import Catalog, CatalogSnapshot
from zbs_lite.iscsi.commands import SessionLimits
from zbs_lite.iscsi.connection import Connection
from zbs_lite.iscsi.scsi import Executor
from zbs_lite.throttle import LoginThrottle

log = logging.getLogger(__name__)

STREAM_LIMIT = 4 << 20


class Plane(Protocol):
    """What a portal needs from the data plane that owns it (DataPlane)."""

    @property
    def catalog(self) -> Catalog: ...

    @property
    def executor(self) -> Executor: ...

    @property
    def snapshot(self) -> CatalogSnapshot: ...

    @property
    def throttle(self) -> LoginThrottle: ...

    @property
    def limits(self) -> SessionLimits: ...

    def pick_chunk(self, initiator: str, target_iqn: str) -> str | None: ...

    def unit_attention(self, lun_id: str, asc_ascq: tuple[int, int]) -> None: ...


class Portal:
    """A chunk (``role="chunk"``, n >= 1) or the VIP (``role="vip"``, n = 0); the Host of its connections."""

    def __init__(self, plane: Plane, role: str, n: int, host: str, port: int) -> None:
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

    @property
    def catalog(self) -> Catalog:
        return self.plane.catalog

    @property
    def executor(self) -> Executor:
        return self.plane.executor

    @property
    def snapshot(self) -> CatalogSnapshot:
        return self.plane.snapshot

    @property
    def throttle(self) -> LoginThrottle:
        return self.plane.throttle

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
        conn = Connection(self, reader, writer, self.plane.limits)
        self.conns.add(conn)
        try:
            await conn.run()
        finally:
            self.conns.discard(conn)

    def new_tsih(self) -> int:
        return (next(self._tsih) % 0xFFFF) + 1

    @staticmethod
    def _key(conn: Connection) -> tuple[str, bytes, str] | None:
        ident = conn.identity
        return None if ident.target is None else (ident.initiator.lower(), ident.isid, ident.target.iqn)

    def session_started(self, conn: Connection) -> None:
        key = self._key(conn)
        assert key is not None
        old = self.sessions.get(key)
        if old is not None and old is not conn:
            log.info("%s: reinstating session of %s, dropping the old connection", self.name, conn.identity.initiator)
            old.abort()
        self.sessions[key] = conn

    def session_ended(self, conn: Connection) -> None:
        key = self._key(conn)
        if key is not None and self.sessions.get(key) is conn:
            del self.sessions[key]

    def redirect(self, initiator: str, target_iqn: str) -> str | None:
        return self.plane.pick_chunk(initiator, target_iqn)

    def unit_attention(self, lun_id: str, asc_ascq: tuple[int, int]) -> None:
        self.plane.unit_attention(lun_id, asc_ascq)
