"""The contract between zbs-lite's management plane and its iSCSI data plane.

The data plane (``zbs_lite.iscsi``) never touches SQLite: it asks a :class:`Catalog` for
immutable views of targets and LUNs and reports the sessions it carries. The management
plane implements the catalog on top of its database and bumps :meth:`Catalog.generation`
after every committed change, so the data plane can re-check masking, whitelists and LUN
sizes cheaply on every command and raise UNIT ATTENTION after a resize.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class InitiatorChap:
    initiator_iqn: str
    chap_name: str
    chap_secret: str = field(repr=False)


@dataclass(frozen=True)
class TargetView:
    id: str
    name: str
    iqn: str
    ip_whitelist: str = "*/*"
    iqn_whitelist: str = "*/*"
    chap_enabled: bool = False
    chap_name: str = ""
    chap_secret: str = field(default="", repr=False)
    initiator_chaps: tuple[InitiatorChap, ...] = ()


@dataclass(frozen=True)
class LunView:
    id: str
    local_id: str
    name: str
    lun_id: int
    target_id: str
    size: int
    path: str
    allowed_initiators: str | None = None
    thin_provision: bool = True


@dataclass(frozen=True)
class ConnectionInfo:
    """One iSCSI session as the API's get-iscsi-connections shows it."""

    id: str
    target_id: str
    initiator_iqn: str
    initiator_ip: str
    client_port: int
    chunk: int


class Catalog(Protocol):
    def generation(self) -> int:
        """A counter that grows with every committed change of a target or a LUN."""

    def targets(self) -> list[TargetView]: ...

    def target_by_iqn(self, iqn: str) -> TargetView | None: ...

    def luns(self, target_id: str) -> list[LunView]: ...

    def connection_opened(self, conn: ConnectionInfo) -> None: ...

    def connection_closed(self, conn_id: str) -> None: ...


class MemoryCatalog:
    """A catalog held in memory: for data-plane tests that need no management plane."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gen = itertools.count(1)
        self._generation = 0
        self._targets: dict[str, TargetView] = {}
        self._luns: dict[str, LunView] = {}
        self.connections: dict[str, ConnectionInfo] = {}

    def _bump(self) -> None:
        self._generation = next(self._gen)

    def generation(self) -> int:
        return self._generation

    def put_target(self, target: TargetView) -> None:
        with self._lock:
            self._targets[target.id] = target
            self._bump()

    def put_lun(self, lun: LunView) -> None:
        with self._lock:
            self._luns[lun.id] = lun
            self._bump()

    def remove_lun(self, lun_id: str) -> None:
        with self._lock:
            self._luns.pop(lun_id, None)
            self._bump()

    def targets(self) -> list[TargetView]:
        with self._lock:
            return list(self._targets.values())

    def target_by_iqn(self, iqn: str) -> TargetView | None:
        with self._lock:
            return next((t for t in self._targets.values() if t.iqn == iqn), None)

    def luns(self, target_id: str) -> list[LunView]:
        with self._lock:
            return sorted((lun for lun in self._luns.values() if lun.target_id == target_id), key=lambda x: x.lun_id)

    def connection_opened(self, conn: ConnectionInfo) -> None:
        with self._lock:
            self.connections[conn.id] = conn

    def connection_closed(self, conn_id: str) -> None:
        with self._lock:
            self.connections.pop(conn_id, None)
