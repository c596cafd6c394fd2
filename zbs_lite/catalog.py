"""The contract between zbs-lite's management plane and its iSCSI data plane.

The data plane (``zbs_lite.iscsi``) never touches SQLite and never waits for the management
plane: it works from a :class:`CatalogSnapshot`, an immutable view of every target and its
LUNs that the management plane builds on its own threads after each committed change and
hands over through :meth:`Catalog.subscribe`. The data plane installs each snapshot on its
event loop, re-applies masking, whitelists and LUN sizes for the sessions of the targets
that changed (fencing revoked initiators, raising UNIT ATTENTION after a resize), and
reports the sessions it carries back through :meth:`Catalog.connection_opened`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol


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


@dataclass(frozen=True, slots=True)
class LunView:
    """One servable LUN. The catalog holds one per LUN (100,000 at SmartX's limit): slots keep
    each to its fields (no per-object dict)."""

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


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class CatalogSnapshot:
    """Every target the data plane serves and its LUNs, as of one committed change.

    Consecutive snapshots share the objects of the targets that did not change, so the
    data plane finds what changed by identity (:meth:`changed_targets`) in time
    proportional to the number of targets, never of LUNs.
    """

    generation: int = 0
    by_id: Mapping[str, TargetView] = field(default_factory=_empty)
    by_iqn: Mapping[str, TargetView] = field(default_factory=_empty)
    luns_of: Mapping[str, tuple[LunView, ...]] = field(default_factory=_empty)

    def targets(self) -> Iterable[TargetView]:
        return self.by_id.values()

    def target_by_iqn(self, iqn: str) -> TargetView | None:
        return self.by_iqn.get(iqn)

    def luns(self, target_id: str) -> tuple[LunView, ...]:
        """One target's LUNs in LUN id order."""
        return self.luns_of.get(target_id, ())

    def changed_targets(self, older: CatalogSnapshot) -> set[str]:
        """Ids of the targets added, removed or changed (the target or any of its LUNs) since ``older``."""
        changed = set(self.by_id.keys() ^ older.by_id.keys())
        for tid, target in self.by_id.items():
            if older.by_id.get(tid) is not target or older.luns_of.get(tid) is not self.luns_of.get(tid):
                changed.add(tid)
        return changed

    def replace(
        self, targets: Mapping[str, TargetView | None], luns: Mapping[str, tuple[LunView, ...]]
    ) -> CatalogSnapshot:
        """The next snapshot: ``targets`` (None removes one) and ``luns`` replace those entries."""
        by_id = dict(self.by_id)
        luns_of = dict(self.luns_of)
        for tid, target in targets.items():
            if target is None:
                by_id.pop(tid, None)
                luns_of.pop(tid, None)
            else:
                by_id[tid] = target
        for tid, views in luns.items():
            if tid in by_id:
                luns_of[tid] = views
        return CatalogSnapshot(
            generation=self.generation + 1,
            by_id=MappingProxyType(by_id),
            by_iqn=MappingProxyType({t.iqn: t for t in by_id.values()}),
            luns_of=MappingProxyType(luns_of),
        )


Subscriber = Callable[[CatalogSnapshot], None]


class Catalog(Protocol):
    def snapshot(self) -> CatalogSnapshot:
        """The latest snapshot (any thread)."""

    def subscribe(self, fn: Subscriber) -> None:
        """Call ``fn`` with every newer snapshot, in order, from the thread that committed the change;
        the commit is acknowledged to its client only after ``fn`` returns."""

    def unsubscribe(self, fn: Subscriber) -> None: ...

    def connection_opened(self, conn: ConnectionInfo) -> None: ...

    def connection_closed(self, conn_id: str) -> None: ...


class Publisher:
    """Holds the latest snapshot and hands each new one to the subscribers (for both catalogs)."""

    def __init__(self, first: CatalogSnapshot) -> None:
        self._snapshot = first
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def snapshot(self) -> CatalogSnapshot:
        return self._snapshot

    def subscribe(self, fn: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        with self._lock:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

    def publish(self, snap: CatalogSnapshot) -> None:
        """Callers serialise publications (the database's write lock, MemoryCatalog's lock)."""
        self._snapshot = snap
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(snap)


class MemoryCatalog(Publisher):
    """A catalog held in memory: for data-plane tests that need no management plane."""

    def __init__(self) -> None:
        super().__init__(CatalogSnapshot())
        self._write = threading.Lock()
        self._luns: dict[str, LunView] = {}
        self.connections: dict[str, ConnectionInfo] = {}

    def _target_luns(self, target_id: str) -> tuple[LunView, ...]:
        return tuple(sorted((x for x in self._luns.values() if x.target_id == target_id), key=lambda x: x.lun_id))

    def put_target(self, target: TargetView) -> None:
        with self._write:
            self.publish(self.snapshot().replace({target.id: target}, {target.id: self._target_luns(target.id)}))

    def put_lun(self, lun: LunView) -> None:
        with self._write:
            self._luns[lun.id] = lun
            self.publish(self.snapshot().replace({}, {lun.target_id: self._target_luns(lun.target_id)}))

    def remove_lun(self, lun_id: str) -> None:
        with self._write:
            lun = self._luns.pop(lun_id, None)
            if lun is not None:
                self.publish(self.snapshot().replace({}, {lun.target_id: self._target_luns(lun.target_id)}))

    def connection_opened(self, conn: ConnectionInfo) -> None:
        with self._write:
            self.connections[conn.id] = conn

    def connection_closed(self, conn_id: str) -> None:
        with self._write:
            self.connections.pop(conn_id, None)
