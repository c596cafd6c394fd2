"""The data plane's catalog over the SQLite store: snapshots built by the writers, sessions recorded by a thread.

Every commit that touches targets or LUNs hands this catalog the ids of the targets it
touched (``Database.on_commit``); it re-reads those targets and their LUNs (at most 255,
one indexed query each), shares everything else with the previous snapshot, and
publishes the new snapshot before the commit's writer answers its client. The data plane's
loop never reads SQLite.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from typing import Any

from zbs_lite.catalog import CatalogSnapshot, ConnectionInfo, InitiatorChap, LunView, Publisher, TargetView
from zbs_lite.db import Database
from zbs_lite.storage import Pool

log = logging.getLogger(__name__)


class DbCatalog(Publisher):
    def __init__(self, db: Database, pool: Pool, cluster_id: str) -> None:
        self._db = db
        self._lun_dir = str(pool.lun_dir)  # paths built by hand: pathlib costs ~70 us per LUN view
        self._sizes: dict[int, int] = {}  # see _shared_size
        self._cluster_id = cluster_id
        with db.read() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM targets")]
            super().__init__(self._read(conn, CatalogSnapshot(), ids))
        self._chunk_ips: dict[int, str] = {}
        self._conn_queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        threading.Thread(target=self._connection_writer, name="connections", daemon=True).start()
        db.on_commit.append(self._committed)

    def set_chunk_ips(self, ips: dict[int, str]) -> None:
        self._chunk_ips = dict(ips)

    def _committed(self, touched: frozenset[str]) -> None:
        """Runs in the committing thread, under the write lock: snapshots follow the commit order."""
        with self._db.read() as conn:
            snap = self._read(conn, self.snapshot(), touched)
        self.publish(snap)

    def _read(self, conn: sqlite3.Connection, base: CatalogSnapshot, target_ids: Any) -> CatalogSnapshot:
        targets: dict[str, TargetView | None] = {}
        luns: dict[str, tuple[LunView, ...]] = {}
        for tid in target_ids:
            row = conn.execute(
                "SELECT * FROM targets WHERE id = ? AND entity_async_status IS NOT 'CREATING'", (tid,)
            ).fetchone()
            if row is None:
                targets[tid] = None
                continue
            old = base.by_id.get(tid)
            new = _target_view(row)
            targets[tid] = old if old == new else new  # unchanged: the same object, so nothing to re-apply
            luns[tid] = self._luns(conn, tid, base.luns(tid))
        return base.replace(targets, luns)

    def _luns(self, conn: sqlite3.Connection, target_id: str, before: tuple[LunView, ...]) -> tuple[LunView, ...]:
        """The target's servable LUNs; views of unchanged rows are reused, and if none changed the
        previous tuple itself, so a commit that only touched statistics changes nothing downstream."""
        rows = conn.execute(
            "SELECT id, local_id, name, lun_id, target_id, file_size, allowed_initiators, thin_provision"
            " FROM luns WHERE target_id = ? AND file_size > 0 ORDER BY lun_id",  # a LUN is served once its file is
            (target_id,),
        ).fetchall()
        # the previous snapshot's views are the cache: no second index of every LUN to keep
        cache = {v.id: v for v in before}
        views = []
        for r in rows:
            view = cache.get(r[0])
            if view is None or not _shows(view, r):
                view = LunView(
                    id=r[0],
                    local_id=r[1],
                    name=r[2],
                    lun_id=r[3],
                    target_id=target_id,  # one string for all of the target's views
                    size=self._shared_size(r[5]),
                    path=f"{self._lun_dir}/{r[1]}",
                    allowed_initiators=r[6],
                    thin_provision=bool(r[7]),
                )
            views.append(view)
        same = len(views) == len(before) and all(a is b for a, b in zip(views, before))
        return before if same else tuple(views)

    def _shared_size(self, size: int) -> int:
        """One int object per LUN size: sizes repeat (a StorageClass's few), and each view holding
        its own costs 32 bytes per LUN. At most 256 sizes are kept, so odd sizes cannot grow it."""
        shared = self._sizes.get(size)
        if shared is None:
            if len(self._sizes) >= 256:
                return size
            self._sizes[size] = shared = size
        return shared

    # ------------------------------------------------------------------ sessions

    def connection_opened(self, conn: ConnectionInfo) -> None:
        """Queued, so an iSCSI login never waits for a long API transaction."""
        self._conn_queue.put(("open", conn))

    def connection_closed(self, conn_id: str) -> None:
        self._conn_queue.put(("close", conn_id))

    def flush_connections(self, timeout: float = 10) -> None:
        """Wait until every queued session change is in the database (tests, status)."""
        done = threading.Event()
        self._conn_queue.put(("flush", done))
        done.wait(timeout)

    def _connection_writer(self) -> None:
        while True:
            op, arg = self._conn_queue.get()
            if op == "flush":
                arg.set()
            elif op == "open":
                self._record_open(arg)
            else:
                self._record_close(arg)

    def _record_open(self, conn: ConnectionInfo) -> None:
        try:
            with self._db.write() as db:
                db.execute(
                    "INSERT OR REPLACE INTO connections (id, cluster_id, target_id, initiator_ip, client_port,"
                    " initiator_iqn, conn_type, tr_type, chunk, host_ip) VALUES (?,?,?,?,?,?, 'ISCSI', 'TCP', ?, ?)",
                    (
                        conn.id,
                        self._cluster_id,
                        conn.target_id or None,
                        conn.initiator_ip,
                        conn.client_port,
                        conn.initiator_iqn,
                        conn.chunk,
                        self._chunk_ips.get(conn.chunk, ""),
                    ),
                )
        except Exception:
            log.exception("could not record iSCSI connection %s", conn.id)

    def _record_close(self, conn_id: str) -> None:
        try:
            with self._db.write() as db:
                db.execute("DELETE FROM connections WHERE id = ?", (conn_id,))
        except Exception:
            log.exception("could not forget iSCSI connection %s", conn_id)

    def clear_connections(self) -> None:
        with self._db.write() as db:
            db.execute("DELETE FROM connections")


def _shows(view: LunView, r: sqlite3.Row) -> bool:
    """Whether ``view`` still shows LUN row ``r`` (the columns ``_luns`` reads, in its order)."""
    return (view.local_id, view.name, view.lun_id, view.size, view.allowed_initiators, view.thin_provision) == (
        r[1],
        r[2],
        r[3],
        r[5],
        r[6],
        bool(r[7]),
    )


def _target_view(r: sqlite3.Row) -> TargetView:
    return TargetView(
        id=r["id"],
        name=r["name"],
        iqn=r["iqn_name"],
        ip_whitelist=r["ip_whitelist"],
        iqn_whitelist=r["iqn_whitelist"],
        chap_enabled=bool(r["chap_enabled"]),
        chap_name=r["chap_name"] or "",
        chap_secret=r["chap_secret"] or "",
        initiator_chaps=tuple(InitiatorChap(**c) for c in json.loads(r["initiator_chaps"])),
    )
