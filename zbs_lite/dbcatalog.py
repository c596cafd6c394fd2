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
        self._pool = pool
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
            targets[tid] = _target_view(row) if row is not None else None
            if row is not None:
                luns[tid] = self._luns(conn, tid)
        return base.replace(targets, luns)

    def _luns(self, conn: sqlite3.Connection, target_id: str) -> tuple[LunView, ...]:
        rows = conn.execute(
            "SELECT id, local_id, name, lun_id, target_id, file_size, allowed_initiators, thin_provision"
            " FROM luns WHERE target_id = ? AND entity_async_status IS NOT 'CREATING' ORDER BY lun_id",
            (target_id,),
        ).fetchall()
        return tuple(
            LunView(
                id=r[0],
                local_id=r[1],
                name=r[2],
                lun_id=r[3],
                target_id=r[4],
                size=r[5],
                path=str(self._pool.lun_path(r[1])),
                allowed_initiators=r[6],
                thin_provision=bool(r[7]),
            )
            for r in rows
        )

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
