"""The data plane's view of the metadata (``zbs_lite.catalog.Catalog``) over the SQLite store.

Views are rebuilt lazily: a commit only bumps the generation; the first data-plane read
after it re-reads what it asks for (all targets, or one target's LUNs), so a burst of
mutations costs one small indexed query, never a rebuild of every LUN.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from zbs_lite.catalog import ConnectionInfo, InitiatorChap, LunView, TargetView
from zbs_lite.db import Database
from zbs_lite.storage import Pool

log = logging.getLogger(__name__)


class DbCatalog:
    def __init__(self, db: Database, pool: Pool, cluster_id: str) -> None:
        self._db = db
        self._pool = pool
        self._cluster_id = cluster_id
        self._lock = threading.Lock()  # one rebuild at a time
        self._gen_lock = threading.Lock()  # never held across I/O: commits only bump the counter
        self._generation = 1
        self._built = 0
        self._targets: list[TargetView] = []
        self._by_iqn: dict[str, TargetView] = {}
        self._luns: dict[str, tuple[int, list[LunView]]] = {}
        self._chunk_ips: dict[int, str] = {}
        self._conn_queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        threading.Thread(target=self._connection_writer, name="connections", daemon=True).start()
        db.on_commit.append(self.changed)

    def set_chunk_ips(self, ips: dict[int, str]) -> None:
        self._chunk_ips = dict(ips)

    def changed(self) -> None:
        with self._gen_lock:
            self._generation += 1

    def generation(self) -> int:
        return self._generation

    def _refresh_targets(self) -> None:
        """Targets are few (<= 4096) and small: re-read them all when anything changed."""
        with self._lock:
            if self._built == self._generation:
                return
            gen = self._generation
            with self._db.read() as conn:
                trows = conn.execute("SELECT * FROM targets WHERE entity_async_status IS NOT 'CREATING'").fetchall()
            targets = [
                TargetView(
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
                for r in trows
            ]
            self._targets = targets
            self._by_iqn = {t.iqn: t for t in targets}
            self._built = gen

    def targets(self) -> list[TargetView]:
        self._refresh_targets()
        return list(self._targets)

    def target_by_iqn(self, iqn: str) -> TargetView | None:
        self._refresh_targets()
        return self._by_iqn.get(iqn)

    def luns(self, target_id: str) -> list[LunView]:
        """One target's LUNs (<= 255, one indexed query), re-read only when asked after a change,
        so a commit never costs a rebuild of every LUN on the data plane's thread."""
        gen = self._generation
        cached = self._luns.get(target_id)
        if cached is not None and cached[0] == gen:
            return list(cached[1])
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, local_id, name, lun_id, target_id, file_size, allowed_initiators, thin_provision"
                " FROM luns WHERE target_id = ? AND entity_async_status IS NOT 'CREATING' ORDER BY lun_id",
                (target_id,),
            ).fetchall()
        views = [
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
        ]
        with self._lock:
            self._luns[target_id] = (gen, views)
        return list(views)

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
            with self._db.write(hooks=False) as db:
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
            with self._db.write(hooks=False) as db:
                db.execute("DELETE FROM connections WHERE id = ?", (conn_id,))
        except Exception:
            log.exception("could not forget iSCSI connection %s", conn_id)

    def clear_connections(self) -> None:
        with self._db.write(hooks=False) as db:
            db.execute("DELETE FROM connections")
