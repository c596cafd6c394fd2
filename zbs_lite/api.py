"""The CloudTower v2 iSCSI subset: queries, mutations and the tasks that apply them.

A mutation validates its whole body, then writes every row it touches plus one task per
resource in ONE transaction, and answers. The task runner applies the data side (files)
in submission order after ``task_delay`` and commits the outcome; tasks are persisted, so
one interrupted by a crash is simply run again at the next start (every data operation
is idempotent).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zbs_lite import validate as v
from zbs_lite.db import Database, new_id, now_iso
from zbs_lite.errors import ApiError, bad, not_found
from zbs_lite.model import BPS_UNIT_FIELDS, CLUSTER, CONNECTION, LUN, QOS_FIELDS, SNAPSHOT, TARGET, TASK, Resource
from zbs_lite.storage import Pool, allocated
from zbs_lite.where import parse_query, translate

log = logging.getLogger(__name__)

QOS_INPUT = (*QOS_FIELDS, *BPS_UNIT_FIELDS)
TARGET_COMMON = (
    "description",
    "ip_whitelist",
    "iqn_whitelist",
    "chap_enabled",
    "chap_name",
    "chap_secret",
    "initiator_chaps",
    *QOS_INPUT,
)
TARGET_CREATE = (
    "name",
    "cluster_id",
    "replica_num",
    "thin_provision",
    "stripe_num",
    "stripe_size",
    "stripe_size_unit",
    *TARGET_COMMON,
)
LUN_COMMON = ("allowed_initiators", *QOS_INPUT)
LUN_CREATE = (
    "name",
    "iscsi_target_id",
    "assigned_size",
    "assigned_size_unit",
    "replica_num",
    "lun_id",
    "thin_provision",
)
LUN_UPDATE = ("name", "assigned_size", "assigned_size_unit", "replica_num", *LUN_COMMON)
ACTIVE = ("PENDING", "EXECUTING")
Items = list[tuple[str | None, str]]
Row = Mapping[str, Any]


@dataclass
class Settings:
    username: str
    password: str
    cluster_name: str = "zbs-lite"
    task_delay: float = 0.05
    token_ttl: float = 3600.0
    api_host: str = "127.0.0.1"
    vip: str = "127.0.0.1:3260"
    chunk_ips: tuple[str, ...] = ()


def _b(x: Any) -> bool:
    return bool(x)


class Tokens:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.ttl
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            exp = self._tokens.get(token)
        return exp is not None and exp > time.monotonic()


class TaskRunner:
    """Runs persisted tasks one at a time, in submission order, each after its delay."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._queue: deque[tuple[float, str]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="zbs-lite-tasks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, task_ids: list[str], delay: float) -> None:
        due = time.monotonic() + delay
        with self._cond:
            self._queue.extend((due, t) for t in task_ids)
            self._cond.notify()

    def stop(self, timeout: float = 30) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._queue or self._queue[0][0] > time.monotonic()):
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(wait)
                if self._stop:
                    return
                _, task_id = self._queue.popleft()
                self._busy = True
            try:
                self.api.run_task(task_id)
            except Exception:
                log.exception("task %s crashed", task_id)
            finally:
                with self._cond:
                    self._busy = False


class Api:
    def __init__(self, db: Database, pool: Pool, settings: Settings) -> None:
        self.db = db
        self.pool = pool
        self.s = settings
        self.tokens = Tokens(settings.token_ttl)
        self.runner = TaskRunner(self)
        self.sync_connections: Callable[[], None] | None = None
        self._seq_lock = threading.Lock()
        self.cluster_id = self._ensure_cluster()
        with db.read() as conn:
            self._seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0]
        self.ops: dict[str, Callable[[Any], Any]] = {
            "get-clusters": lambda b: self._get(CLUSTER, b),
            "get-iscsi-targets": lambda b: self._get(TARGET, b),
            "get-iscsi-targets-connection": lambda b: self._count(TARGET, b),
            "get-iscsi-luns": lambda b: self._get(LUN, b),
            "get-iscsi-luns-connection": lambda b: self._count(LUN, b),
            "get-iscsi-lun-snapshots": lambda b: self._get(SNAPSHOT, b),
            "get-iscsi-lun-snapshots-connection": lambda b: self._count(SNAPSHOT, b),
            "get-iscsi-connections": lambda b: self._get(CONNECTION, b),
            "get-iscsi-connections-connection": lambda b: self._count(CONNECTION, b),
            "get-tasks": lambda b: self._get(TASK, b),
            "get-tasks-connection": lambda b: self._count(TASK, b),
            "create-iscsi-target": self.create_targets,
            "update-iscsi-target": self.update_targets,
            "delete-iscsi-target": self.delete_targets,
            "create-iscsi-lun": self.create_luns,
            "update-iscsi-lun": self.update_luns,
            "delete-iscsi-lun": self.delete_luns,
            "clone-iscsi-lun-from-snapshot": self.clone_luns,
            "copy-iscsi-lun": self.copy_luns,
            "rollback-iscsi-lun-from-snapshot": self.rollback_luns,
            "create-iscsi-lun-snapshot": self.create_snapshots,
            "delete-iscsi-lun-snapshot": self.delete_snapshots,
            "update-cluster-enable-iscsi-setting": self.update_cluster_iscsi,
        }

    # ---------------------------------------------------------------- auth

    def login(self, body: Any) -> dict[str, Any]:
        v.check_keys(
            body, "", ("username", "password", "source", "auth_config_id", "mfa_type"), ("username", "password")
        )
        user, pw = body["username"], body["password"]
        if not isinstance(user, str) or not isinstance(pw, str):
            raise bad("username", "username and password must be strings")
        ok_user = hmac.compare_digest(user.encode(), self.s.username.encode())
        ok_pw = hmac.compare_digest(pw.encode(), self.s.password.encode())
        if not (ok_user and ok_pw):
            raise ApiError(401, "login: invalid username or password")
        return {"task_id": None, "data": {"token": self.tokens.issue()}}

    # ---------------------------------------------------------------- cluster

    def _ensure_cluster(self) -> str:
        with self.db.write() as conn:
            row = conn.execute("SELECT id FROM clusters").fetchone()
            if row is None:
                cid = new_id()
                conn.execute(
                    "INSERT INTO clusters (id, local_id, name, ip, iscsi_vip, management_vip, version, type,"
                    " architecture, connect_state) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        cid,
                        str(uuid.uuid4()),
                        self.s.cluster_name,
                        self.s.api_host,
                        "",
                        self.s.api_host,
                        "5.7.0-zbs-lite",
                        "SMTX_ZBS",
                        "X86_64",
                        "CONNECTED",
                    ),
                )
            else:
                cid = row["id"]
            conn.execute(
                "UPDATE clusters SET name=?, ip=?, management_vip=? WHERE id=?",
                (self.s.cluster_name, self.s.api_host, self.s.api_host, cid),
            )
        self.cluster_id = str(cid)
        self.set_vip(self.s.vip)
        return str(cid)

    def set_vip(self, portal: str) -> None:
        """``iscsi_vip`` is an address in ZBS; zbs-lite adds ``:port`` when it is not 3260."""
        self.s.vip = portal
        host, _, port = portal.rpartition(":")
        with self.db.write() as conn:
            conn.execute(
                "UPDATE clusters SET iscsi_vip = ? WHERE id = ?", (host if port == "3260" else portal, self.cluster_id)
            )

    def cluster_ref(self) -> dict[str, str]:
        return {"id": self.cluster_id, "name": self.s.cluster_name}

    # ---------------------------------------------------------------- queries

    _SELECT = {
        "Cluster": "SELECT clusters.* FROM clusters",
        "IscsiTarget": "SELECT targets.* FROM targets",
        "IscsiLun": "SELECT luns.*, targets.name AS target_name FROM luns JOIN targets ON targets.id = luns.target_id",
        "IscsiLunSnapshot": "SELECT snapshots.*, luns.name AS lun_name, targets.name AS target_name FROM snapshots"
        " JOIN luns ON luns.id = snapshots.lun_id JOIN targets ON targets.id = snapshots.target_id",
        "Task": "SELECT tasks.* FROM tasks",
        "IscsiConnection": "SELECT connections.*, targets.name AS target_name FROM connections"
        " LEFT JOIN targets ON targets.id = connections.target_id",
    }

    def _get(self, res: Resource, body: Any) -> list[dict[str, Any]]:
        if res is CONNECTION and self.sync_connections is not None:
            self.sync_connections()  # sessions reported before this call are visible to it
        with self.db.read() as conn:
            sql, params = self.select_sql(conn, res, body)
            rows = conn.execute(sql, params).fetchall()
            return self._render(conn, res, rows)

    def select_sql(self, conn: sqlite3.Connection, res: Resource, body: Any) -> tuple[str, list[Any]]:
        """The SELECT a get-* body turns into (cursor resolved, ordered, limited)."""
        q = parse_query(res, body)
        sql = f"{self._SELECT[res.name]} WHERE ({q.where.text})"
        params = list(q.where.params)
        if q.after is not None:
            cur = conn.execute(f"SELECT {q.order_col} FROM {res.table} WHERE id = ?", (q.after,)).fetchone()  # noqa: S608
            if cur is None:
                raise bad("after", f"no {res.name} with id {q.after!r} to page after")
            val = cur[0]
            idc = f"{res.table}.id"
            if q.order_field == "id":
                cmp = f"{idc} {'<' if q.desc else '>'} ?"
                params.append(q.after)
            elif val is None:
                cmp = (
                    f"({q.order_col} IS NULL AND {idc} < ?)" if q.desc else f"({q.order_col} IS NOT NULL OR {idc} > ?)"
                )
                params.append(q.after)
            else:
                op = "<" if q.desc else ">"
                cmp = f"({q.order_col} {op} ? OR ({q.order_col} = ? AND {idc} {op} ?))"
                if q.desc:
                    cmp = f"({cmp} OR {q.order_col} IS NULL)"
                params.extend([val, val, q.after])
            sql += f" AND {cmp}"
        direction = "DESC" if q.desc else "ASC"
        # "+" keeps SQLite from walking the primary key for ORDER BY and testing every row against
        # a relation filter; it then uses the relation's index and sorts the few matches.
        plus = "+" if q.related else ""
        sql += f" ORDER BY {plus}{q.order_col} {direction}"
        if q.order_field != "id":
            sql += f", {plus}{res.table}.id {direction}"  # ties broken by id, so cursors are stable
        if q.first is not None or q.skip:
            sql += " LIMIT ? OFFSET ?"
            params.extend([q.first if q.first is not None else -1, q.skip])
        return sql, params

    def _count(self, res: Resource, body: Any) -> dict[str, Any]:
        if res is CONNECTION and self.sync_connections is not None:
            self.sync_connections()
        if body is None:
            body = {}
        q = parse_query(res, {"where": body.get("where")} if isinstance(body, dict) else body)
        with self.db.read() as conn:
            sql = f"SELECT COUNT(*) FROM {res.table} WHERE {q.where.text}"  # noqa: S608 - names from the model
            n = conn.execute(sql, q.where.params).fetchone()[0]
        return {"aggregate": {"count": n}}

    def _render(self, conn: sqlite3.Connection, res: Resource, raw: list[sqlite3.Row]) -> list[dict[str, Any]]:
        rows = [dict(r) for r in raw]  # sqlite3.Row looks names up column by column; dicts are ~10x faster
        if res is TARGET:
            luns: dict[str, list[dict[str, str]]] = {}
            ids = [r["id"] for r in rows]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for lr in conn.execute(
                    f"SELECT id, name, target_id FROM luns WHERE target_id IN ({marks}) ORDER BY lun_id",  # noqa: S608
                    chunk,
                ):
                    luns.setdefault(lr["target_id"], []).append({"id": lr["id"], "name": lr["name"]})
            return [self.target_json(r, luns.get(r["id"], [])) for r in rows]
        render = {
            "Cluster": self.cluster_json,
            "IscsiLun": self.lun_json,
            "IscsiLunSnapshot": self.snapshot_json,
            "Task": self.task_json,
            "IscsiConnection": self.connection_json,
        }[res.name]
        return [render(r) for r in rows]

    def cluster_json(self, r: Row) -> dict[str, Any]:
        return {
            "id": r["id"],
            "local_id": r["local_id"],
            "name": r["name"],
            "ip": r["ip"],
            "iscsi_vip": r["iscsi_vip"],
            "management_vip": r["management_vip"],
            "version": r["version"],
            "type": r["type"],
            "architecture": r["architecture"],
            "connect_state": r["connect_state"],
            "entityAsyncStatus": r["entity_async_status"],
            "host_num": len(self.s.chunk_ips) or 1,
            **self._capacity(),
            "dns": [],
            "ntp_servers": [],
            "recommended_cpu_models": [],
            "total_cpu_models": [],
            "labels": [],
        }

    def _capacity(self) -> dict[str, int]:
        """The cluster's data space as CloudTower reports it: one host, one copy, nothing failed."""
        total, used = self.pool.capacity()
        return {
            "total_data_capacity": total,
            "used_data_space": used,
            "valid_data_space": total,
            "failure_data_space": 0,
        }

    def target_json(self, r: Row, luns: list[dict[str, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": r["id"],
            "local_id": r["local_id"],
            "name": r["name"],
            "iqn_name": r["iqn_name"],
            "description": r["description"],
            "cluster": self.cluster_ref(),
            "replica_num": r["replica_num"],
            "thin_provision": _b(r["thin_provision"]),
            "stripe_num": r["stripe_num"],
            "stripe_size": r["stripe_size"],
            "ip_whitelist": r["ip_whitelist"],
            "iqn_whitelist": r["iqn_whitelist"],
            "chap_enabled": _b(r["chap_enabled"]),
            "chap_name": r["chap_name"],
            "chap_secret": r["chap_secret"],
            "initiator_chaps": json.loads(r["initiator_chaps"]),
            "external_use": _b(r["external_use"]),
            "internal": _b(r["internal"]),
            "luns": luns,
            "labels": [],
            "entityAsyncStatus": r["entity_async_status"],
        }
        for q in QOS_FIELDS:
            out[q] = r[q]
        return out

    def lun_json(self, r: Row) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": r["id"],
            "local_id": r["local_id"],
            "zbs_volume_id": r["local_id"],
            "name": r["name"],
            "lun_id": r["lun_id"],
            "iscsi_target": {"id": r["target_id"], "name": r["target_name"]},
            "assigned_size": r["assigned_size"],
            "replica_num": r["replica_num"],
            "thin_provision": _b(r["thin_provision"]),
            "stripe_num": r["stripe_num"],
            "stripe_size": r["stripe_size"],
            "allowed_initiators": r["allowed_initiators"],
            "shared_size": r["shared_size"],
            # what the LUN's file holds now (data written since its task finished included)
            "unique_size": allocated(self.pool.lun_path(r["local_id"])) or r["unique_size"],
            "unique_logical_size": r["unique_logical_size"],
            "snapshot_num": r["snapshot_num"],
            "local_created_at": r["local_created_at"],
            "consistency_group": None,
            "labels": [],
            "entityAsyncStatus": r["entity_async_status"],
        }
        for q in QOS_FIELDS:
            out[q] = r[q]
        return out

    def snapshot_json(self, r: Row) -> dict[str, Any]:
        return {
            "id": r["id"],
            "local_id": r["local_id"],
            "name": r["name"],
            "iscsi_lun": {"id": r["lun_id"], "name": r["lun_name"]},
            "iscsi_target": {"id": r["target_id"], "name": r["target_name"]},
            "unique_size": allocated(self.pool.snapshot_path(r["local_id"])) or r["unique_size"],
            "local_created_at": r["local_created_at"],
            "consistency_group_snapshot": None,
            "labels": [],
            "entityAsyncStatus": r["entity_async_status"],
        }

    def task_json(self, r: Row) -> dict[str, Any]:
        return {
            "id": r["id"],
            "description": r["description"],
            "status": r["status"],
            "error_code": r["error_code"],
            "error_message": r["error_message"],
            "progress": r["progress"],
            "local_created_at": r["local_created_at"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "resource_id": r["resource_id"],
            "resource_type": r["resource_type"],
            "resource_mutation": r["resource_mutation"],
            "snapshot": r["snapshot"],
            "internal": _b(r["internal"]),
            "key": r["task_key"],
            "args": {},
            "steps": [],
            "type": None,
            "cluster": self.cluster_ref(),
            "user": {"id": "zbs-lite-" + self.s.username, "name": self.s.username},
        }

    def connection_json(self, r: Row) -> dict[str, Any]:
        target = {"id": r["target_id"], "name": r["target_name"]} if r["target_name"] is not None else None
        return {
            "id": r["id"],
            "initiator_ip": r["initiator_ip"],
            "initiator_iqn": r["initiator_iqn"],
            "client_port": r["client_port"],
            "host": {
                "id": f"{self.cluster_id}-chunk{r['chunk']}",
                "name": f"chunk{r['chunk']}",
                "management_ip": r["host_ip"],
            },
            "cluster": self.cluster_ref(),
            "iscsi_target": target,
            "type": r["conn_type"],
            "tr_type": r["tr_type"],
        }

    # ---------------------------------------------------------------- helpers for mutations

    def _one(self, conn: sqlite3.Connection, res: Resource, rid: Any, field: str) -> sqlite3.Row:
        if not isinstance(rid, str) or not rid:
            raise bad(field, "expected an id")
        row = conn.execute(f"{self._SELECT[res.name]} WHERE {res.table}.id = ?", (rid,)).fetchone()
        if row is None:
            raise not_found(res.name, rid)
        if row["entity_async_status"] == "DELETING":
            raise ApiError(400, f"{field}: {res.name} {rid} is being deleted", code="ResourceLocked")
        return row

    def _matching(self, conn: sqlite3.Connection, res: Resource, body: Any) -> list[sqlite3.Row]:
        if not isinstance(body, dict) or not isinstance(body.get("where"), dict):
            raise bad("where", "is required (an object)")
        sql = translate(res, body["where"])
        return conn.execute(f"{self._SELECT[res.name]} WHERE {sql.text} ORDER BY {res.table}.id", sql.params).fetchall()

    def _task(
        self,
        conn: sqlite3.Connection,
        kind: str,
        description: str,
        resource: Resource,
        rid: str,
        mutation: str,
        payload: dict[str, Any] | None = None,
    ) -> str:
        tid = new_id()
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        conn.execute(
            "INSERT INTO tasks (id, seq, cluster_id, description, status, progress, local_created_at, internal,"
            " resource_id, resource_type, resource_mutation, snapshot, kind, payload)"
            " VALUES (?,?,?,?, 'PENDING', 0, ?, 0, ?,?,?,?,?,?)",
            (
                tid,
                seq,
                self.cluster_id,
                description,
                now_iso(),
                rid,
                resource.name,
                mutation,
                "{}",
                kind,
                json.dumps(payload or {}),
            ),
        )
        return tid

    def _pending_task(self, conn: sqlite3.Connection, rid: str) -> str | None:
        row = conn.execute(
            "SELECT id FROM tasks WHERE resource_id = ? AND status IN ('PENDING','EXECUTING')"
            " ORDER BY seq DESC LIMIT 1",
            (rid,),
        ).fetchone()
        return row["id"] if row else None

    def _reply(self, res: Resource, items: list[tuple[str | None, str]], deleted: bool = False) -> list[dict[str, Any]]:
        """``[{task_id, data}]`` in request order, rows read after the commit."""
        if deleted:
            return [{"task_id": t, "data": {"id": rid}} for t, rid in items]
        out = []
        with self.db.read() as conn:
            for tid, rid in items:
                row = conn.execute(f"{self._SELECT[res.name]} WHERE {res.table}.id = ?", (rid,)).fetchone()
                if row is None:  # a zero-delay task already finished and removed it (failed create)
                    out.append({"task_id": tid, "data": {"id": rid}})
                    continue
                out.append({"task_id": tid, "data": self._render(conn, res, [row])[0]})
        return out

    def _mutate(
        self, res: Resource, fn: Callable[[sqlite3.Connection], list[tuple[str | None, str]]], **kw: Any
    ) -> Any:
        # Submitting under the write lock keeps the run order equal to the commit order.
        with self.db.write_lock:
            try:
                with self.db.write() as conn:
                    items = fn(conn)
            except sqlite3.IntegrityError as exc:
                raise ApiError(400, f"conflict: {self._integrity_message(exc)}") from None
            self.runner.submit([t for t, _ in items if t], self.s.task_delay)
        return self._reply(res, items, **kw)

    @staticmethod
    def _integrity_message(exc: sqlite3.IntegrityError) -> str:
        text = str(exc)
        if "targets.cluster_id, targets.name" in text:
            return "name: a target with this name already exists"
        if "luns.target_id, luns.name" in text:
            return "name: a LUN with this name already exists in the target"
        if "luns.target_id, luns.lun_id" in text:
            return "lun_id: already used in the target"
        if "snapshots.lun_id, snapshots.name" in text:
            return "name: a snapshot with this name already exists for the LUN"
        return "the change conflicts with existing objects"

    @staticmethod
    def _items(body: Any, what: str) -> list[dict[str, Any]]:
        if not isinstance(body, list) or not body:
            raise bad("body", f"expected a non-empty array of {what}")
        if len(body) > 1000:
            raise bad("body", "at most 1000 items per request")
        return body

    # ---------------------------------------------------------------- targets

    def _target_common(self, item: dict[str, Any], path: str, current: sqlite3.Row | None) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        if (d := v.get_str(item, "description", path, ascii_only=False)) is not None:
            cols["description"] = d
        if (w := v.get_str(item, "ip_whitelist", path)) is not None:
            cols["ip_whitelist"] = v.ip_list(w, f"{path}.ip_whitelist")
        if (w := v.get_str(item, "iqn_whitelist", path, max_len=65536)) is not None:
            cols["iqn_whitelist"] = v.iqn_list(w, f"{path}.iqn_whitelist", allow_empty=True)
        enabled = v.get_bool(item, "chap_enabled", path)
        if enabled is not None:
            cols["chap_enabled"] = int(enabled)
        if item.get("chap_name") is not None:
            cols["chap_name"] = v.chap_name(item["chap_name"], f"{path}.chap_name", max_len=223)
        if item.get("chap_secret") is not None:
            cols["chap_secret"] = v.chap_secret(item["chap_secret"], f"{path}.chap_secret", lo=12, hi=16)
        if item.get("initiator_chaps") is not None:
            cols["initiator_chaps"] = json.dumps(v.initiator_chaps(item["initiator_chaps"], f"{path}.initiator_chaps"))
        final_enabled = cols.get("chap_enabled", current["chap_enabled"] if current else 0)
        if final_enabled:
            for key in ("chap_name", "chap_secret"):
                if not cols.get(key, current[key] if current else None):
                    raise bad(f"{path}.{key}", "is required when chap_enabled is true")
        cols.update(v.qos(item, path))
        return cols

    def create_targets(self, body: Any) -> Any:
        items = self._items(body, "targets")

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            count = conn.execute("SELECT COUNT(*) FROM targets").fetchone()[0]
            names: set[str] = set()
            for i, item in enumerate(items):
                p = f"[{i}]"
                v.check_keys(item, p, TARGET_CREATE, ("name", "cluster_id", "replica_num", "thin_provision"))
                name = v.target_name(item, p)
                if item["cluster_id"] != self.cluster_id:
                    raise ApiError(404, f"{p}.cluster_id: cluster {item['cluster_id']!r} not found")
                replica = v.replica(item, "replica_num", p)
                thin = v.get_bool(item, "thin_provision", p)
                stripes = v.stripe_num(item, p) or 8
                ssize = v.stripe_size(item, p) or 256 * 1024
                cols = self._target_common(item, p, None)
                if count + len(names) >= v.MAX_TARGETS:
                    raise bad(f"{p}.name", f"a cluster holds at most {v.MAX_TARGETS} targets")
                if name in names or conn.execute("SELECT 1 FROM targets WHERE name = ?", (name,)).fetchone():
                    raise bad(f"{p}.name", f"a target named {name!r} already exists")
                names.add(name)
                tid = new_id()
                row = {
                    "id": tid,
                    "cluster_id": self.cluster_id,
                    "local_id": str(uuid.uuid4()),
                    "name": name,
                    "iqn_name": v.IQN_PREFIX + name,
                    "description": "",
                    "replica_num": replica,
                    "thin_provision": int(bool(thin)),
                    "stripe_num": stripes,
                    "stripe_size": ssize,
                    "ip_whitelist": "*/*",
                    "iqn_whitelist": "*/*",
                    "chap_enabled": 0,
                    "external_use": 0,
                    "internal": 0,
                    "entity_async_status": "CREATING",
                    "local_created_at": now_iso(),
                    **cols,
                }
                conn.execute(
                    f"INSERT INTO targets ({','.join(row)}) VALUES ({','.join('?' * len(row))})",  # noqa: S608
                    list(row.values()),
                )
                out.append(
                    (
                        self._task(
                            conn, "target.create", f"Create iSCSI target {name}", TARGET, tid, "createIscsiTarget"
                        ),
                        tid,
                    )
                )
            return out

        return self._mutate(TARGET, fn)

    def update_targets(self, body: Any) -> Any:
        v.check_keys(body, "", ("where", "data"), ("where", "data"))
        data = v.check_keys(body["data"], "data", (*TARGET_COMMON, "replica_num"))

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for row in self._matching(conn, TARGET, body):
                if row["entity_async_status"] == "DELETING":
                    raise ApiError(400, f"target {row['name']} is being deleted", code="ResourceLocked")
                cols = self._target_common(data, "data", row)
                replica = v.replica(data, "replica_num", "data")
                if replica is not None:
                    if replica < row["replica_num"]:
                        raise bad("data.replica_num", f"may only grow (is {row['replica_num']})")
                    cols["replica_num"] = replica
                cols["entity_async_status"] = "UPDATING"
                conn.execute(
                    f"UPDATE targets SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",  # noqa: S608
                    [*cols.values(), row["id"]],
                )
                tid = self._task(
                    conn, "target.update", f"Update iSCSI target {row['name']}", TARGET, row["id"], "updateIscsiTarget"
                )
                out.append((tid, row["id"]))
            return out

        return self._mutate(TARGET, fn)

    def delete_targets(self, body: Any) -> Any:
        v.check_keys(body, "", ("where",), ("where",))

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for row in self._matching(conn, TARGET, body):
                if row["entity_async_status"] == "DELETING":
                    out.append((self._pending_task(conn, row["id"]), row["id"]))
                    continue
                n = conn.execute("SELECT COUNT(*) FROM luns WHERE target_id = ?", (row["id"],)).fetchone()[0]
                if n:
                    raise bad("where", f"target {row['name']} still has {n} LUN(s); delete them first")
                conn.execute("UPDATE targets SET entity_async_status = 'DELETING' WHERE id = ?", (row["id"],))
                tid = self._task(
                    conn, "target.delete", f"Delete iSCSI target {row['name']}", TARGET, row["id"], "deleteIscsiTarget"
                )
                out.append((tid, row["id"]))
            return out

        return self._mutate(TARGET, fn, deleted=True)

    # ---------------------------------------------------------------- LUNs

    def _free_lun_id(self, conn: sqlite3.Connection, target_id: str, want: int | None, field: str) -> int:
        used = {r[0] for r in conn.execute("SELECT lun_id FROM luns WHERE target_id = ?", (target_id,))}
        if len(used) >= v.MAX_LUNS_PER_TARGET:
            raise bad(field, f"the target already holds {v.MAX_LUNS_PER_TARGET} LUNs")
        if want is not None:
            if want in used:
                raise bad(field, f"LUN id {want} is already used in this target")
            return want
        return next(i for i in range(1, v.MAX_LUNS_PER_TARGET + 1) if i not in used)

    def _check_lun_name(self, conn: sqlite3.Connection, target_id: str, name: str, field: str) -> None:
        if conn.execute("SELECT 1 FROM luns WHERE target_id = ? AND name = ?", (target_id, name)).fetchone():
            raise bad(field, f"a LUN named {name!r} already exists in this target")

    def _insert_lun(
        self,
        conn: sqlite3.Connection,
        target: sqlite3.Row,
        *,
        name: str,
        lun_id: int,
        size: int,
        replica: int,
        thin: bool,
        stripe_num: int,
        stripe_size: int,
        allowed: str,
        qos: dict[str, int],
        source: dict[str, str] | None,
        description: str,
        mutation: str,
    ) -> tuple[str, str]:
        rid = new_id()
        row: dict[str, Any] = {
            "id": rid,
            "target_id": target["id"],
            "local_id": str(uuid.uuid4()),
            "name": name,
            "lun_id": lun_id,
            "assigned_size": size,
            "replica_num": replica,
            "thin_provision": int(thin),
            "stripe_num": stripe_num,
            "stripe_size": stripe_size,
            "allowed_initiators": allowed,
            "shared_size": 0,
            "unique_size": 0,
            "snapshot_num": 0,
            "local_created_at": now_iso(),
            "entity_async_status": "CREATING",
            "file_size": 0,
            **dict.fromkeys(QOS_FIELDS, 0),
            **qos,
        }
        sql = f"INSERT INTO luns ({','.join(row)}) VALUES ({','.join('?' * len(row))})"  # noqa: S608
        conn.execute(sql, list(row.values()))
        tid = self._task(conn, "lun.create", description, LUN, rid, mutation, {"source": source})
        return tid, rid

    def create_luns(self, body: Any) -> Any:
        items = self._items(body, "LUNs")

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for i, item in enumerate(items):
                p = f"[{i}]"
                v.check_keys(
                    item, p, (*LUN_CREATE, *LUN_COMMON), ("name", "iscsi_target_id", "assigned_size", "replica_num")
                )
                name = v.object_name(item, "name", p)
                size = v.lun_size(item, p)
                assert size is not None
                replica = v.replica(item, "replica_num", p)
                assert replica is not None
                want = v.get_int(item, "lun_id", p, lo=-v.INT64_MAX)
                if want is not None and not 1 <= want <= v.MAX_LUNS_PER_TARGET:
                    raise bad(f"{p}.lun_id", "must be between 1 and 255")
                thin = v.get_bool(item, "thin_provision", p)
                allowed = v.get_str(item, "allowed_initiators", p, max_len=65536)
                allowed = "*/*" if allowed is None else v.iqn_list(allowed, f"{p}.allowed_initiators", allow_empty=True)
                qos = v.qos(item, p)
                target = self._one(conn, TARGET, item["iscsi_target_id"], f"{p}.iscsi_target_id")
                self._check_lun_name(conn, target["id"], name, f"{p}.name")
                lun_id = self._free_lun_id(conn, target["id"], want, f"{p}.lun_id")
                out.append(
                    self._insert_lun(
                        conn,
                        target,
                        name=name,
                        lun_id=lun_id,
                        size=size,
                        replica=replica,
                        thin=bool(target["thin_provision"]) if thin is None else thin,
                        stripe_num=target["stripe_num"],
                        stripe_size=target["stripe_size"],
                        allowed=allowed,
                        qos=qos,
                        source=None,
                        description=f"Create iSCSI LUN {name}",
                        mutation="createIscsiLun",
                    )
                )
            return out

        return self._mutate(LUN, fn)

    def clone_luns(self, body: Any) -> Any:
        items = self._items(body, "clone requests")

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for i, item in enumerate(items):
                p = f"[{i}]"
                v.check_keys(
                    item, p, ("snapshot_id", "iscsi_target_id", "name"), ("snapshot_id", "iscsi_target_id", "name")
                )
                name = v.object_name(item, "name", p)
                snap = self._one(conn, SNAPSHOT, item["snapshot_id"], f"{p}.snapshot_id")
                target = self._one(conn, TARGET, item["iscsi_target_id"], f"{p}.iscsi_target_id")
                self._check_lun_name(conn, target["id"], name, f"{p}.name")
                out.append(
                    self._insert_lun(
                        conn,
                        target,
                        name=name,
                        lun_id=self._free_lun_id(conn, target["id"], None, f"{p}.iscsi_target_id"),
                        size=snap["size"],
                        replica=snap["replica_num"],
                        thin=bool(snap["thin_provision"]),
                        stripe_num=snap["stripe_num"],
                        stripe_size=snap["stripe_size"],
                        allowed="*/*",
                        qos={},
                        source={"snapshot": snap["local_id"]},
                        description=f"Clone iSCSI LUN {name} from snapshot {snap['name']}",
                        mutation="cloneIscsiLunFromSnapshot",
                    )
                )
            return out

        return self._mutate(LUN, fn)

    def copy_luns(self, body: Any) -> Any:
        items = self._items(body, "copy requests")

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for i, item in enumerate(items):
                p = f"[{i}]"
                v.check_keys(item, p, ("src_lun_id", "name", "dest_iscsi_target_id"), ("src_lun_id", "name"))
                name = v.object_name(item, "name", p)
                src = self._one(conn, LUN, item["src_lun_id"], f"{p}.src_lun_id")
                dest = item.get("dest_iscsi_target_id") or src["target_id"]
                target = self._one(conn, TARGET, dest, f"{p}.dest_iscsi_target_id")
                self._check_lun_name(conn, target["id"], name, f"{p}.name")
                out.append(
                    self._insert_lun(
                        conn,
                        target,
                        name=name,
                        lun_id=self._free_lun_id(conn, target["id"], None, f"{p}.dest_iscsi_target_id"),
                        size=src["assigned_size"],
                        replica=src["replica_num"],
                        thin=bool(src["thin_provision"]),
                        stripe_num=src["stripe_num"],
                        stripe_size=src["stripe_size"],
                        allowed="*/*",
                        qos={q: src[q] for q in QOS_FIELDS},
                        source={"lun": src["local_id"]},
                        description=f"Copy iSCSI LUN {src['name']} to {name}",
                        mutation="copyIscsiLun",
                    )
                )
            return out

        return self._mutate(LUN, fn)

    def update_luns(self, body: Any) -> Any:
        v.check_keys(body, "", ("where", "data"), ("where", "data"))
        data = v.check_keys(body["data"], "data", LUN_UPDATE)
        name = v.object_name(data, "name", "data") if data.get("name") is not None else None
        size = v.lun_size(data, "data")
        allowed = v.get_str(data, "allowed_initiators", "data", max_len=65536)
        if allowed is not None:
            allowed = v.iqn_list(allowed, "data.allowed_initiators", allow_empty=True)
        replica = v.replica(data, "replica_num", "data")
        qos = v.qos(data, "data")

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            rows = self._matching(conn, LUN, body)
            if name is not None and len(rows) > 1:
                raise bad("data.name", "cannot give one name to several LUNs")
            for row in rows:
                if row["entity_async_status"] == "DELETING":
                    raise ApiError(400, f"LUN {row['name']} is being deleted", code="ResourceLocked")
                cols: dict[str, Any] = dict(qos)
                if name is not None and name != row["name"]:
                    self._check_lun_name(conn, row["target_id"], name, "data.name")
                    cols["name"] = name
                if size is not None:
                    if size < row["assigned_size"]:
                        raise bad("data.assigned_size", f"LUNs only grow ({size} < current {row['assigned_size']})")
                    cols["assigned_size"] = size
                if replica is not None:
                    if replica < row["replica_num"]:
                        raise bad("data.replica_num", f"may only grow (is {row['replica_num']})")
                    cols["replica_num"] = replica
                if allowed is not None:
                    cols["allowed_initiators"] = allowed
                cols["entity_async_status"] = "UPDATING"
                conn.execute(
                    f"UPDATE luns SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",  # noqa: S608
                    [*cols.values(), row["id"]],
                )
                payload = {"size": cols.get("assigned_size", row["assigned_size"])}
                desc = f"Update iSCSI LUN {row['name']}"
                out.append((self._task(conn, "lun.update", desc, LUN, row["id"], "updateIscsiLun", payload), row["id"]))
            return out

        return self._mutate(LUN, fn)

    def delete_luns(self, body: Any) -> Any:
        v.check_keys(body, "", ("where", "data"), ("where",))
        remove = False
        if body.get("data") is not None:
            v.check_keys(body["data"], "data", ("remove_snapshot",))
            remove = bool(v.get_bool(body["data"], "remove_snapshot", "data"))

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for row in self._matching(conn, LUN, body):
                if row["entity_async_status"] == "DELETING":
                    out.append((self._pending_task(conn, row["id"]), row["id"]))
                    continue
                snaps = conn.execute("SELECT id FROM snapshots WHERE lun_id = ?", (row["id"],)).fetchall()
                if snaps and not remove:
                    raise bad(
                        "data.remove_snapshot",
                        f"LUN {row['name']} has {len(snaps)} snapshot(s); set remove_snapshot to delete them too",
                    )
                conn.execute("UPDATE luns SET entity_async_status = 'DELETING' WHERE id = ?", (row["id"],))
                conn.execute("UPDATE snapshots SET entity_async_status = 'DELETING' WHERE lun_id = ?", (row["id"],))
                desc = f"Delete iSCSI LUN {row['name']}"
                out.append((self._task(conn, "lun.delete", desc, LUN, row["id"], "deleteIscsiLun"), row["id"]))
            return out

        return self._mutate(LUN, fn, deleted=True)

    def rollback_luns(self, body: Any) -> Any:
        items = self._items(body, "rollback requests")

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for i, item in enumerate(items):
                p = f"[{i}]"
                v.check_keys(item, p, ("lun_id", "snapshot_id"), ("lun_id", "snapshot_id"))
                lun = self._one(conn, LUN, item["lun_id"], f"{p}.lun_id")
                snap = self._one(conn, SNAPSHOT, item["snapshot_id"], f"{p}.snapshot_id")
                conn.execute(
                    "UPDATE luns SET assigned_size = ?, entity_async_status = 'UPDATING' WHERE id = ?",
                    (snap["size"], lun["id"]),
                )
                payload = {"snapshot": snap["local_id"], "size": snap["size"]}
                desc = f"Roll back iSCSI LUN {lun['name']} to snapshot {snap['name']}"
                out.append(
                    (
                        self._task(conn, "lun.rollback", desc, LUN, lun["id"], "rollbackIscsiLunFromSnapshot", payload),
                        lun["id"],
                    )
                )
            return out

        return self._mutate(LUN, fn)

    # ---------------------------------------------------------------- snapshots

    def create_snapshots(self, body: Any) -> Any:
        items = self._items(body, "snapshots")

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for i, item in enumerate(items):
                p = f"[{i}]"
                v.check_keys(
                    item,
                    p,
                    ("iscsi_lun_id", "iscsi_target_id", "name", "effect"),
                    ("iscsi_lun_id", "iscsi_target_id", "name"),
                )
                name = v.object_name(item, "name", p)
                if item.get("effect") is not None:
                    v.check_keys(item["effect"], f"{p}.effect", ("sync",))
                    v.get_bool(item["effect"], "sync", f"{p}.effect")
                lun = self._one(conn, LUN, item["iscsi_lun_id"], f"{p}.iscsi_lun_id")
                if item["iscsi_target_id"] != lun["target_id"]:
                    raise bad(f"{p}.iscsi_target_id", "is not the target of the LUN")
                if conn.execute("SELECT 1 FROM snapshots WHERE lun_id = ? AND name = ?", (lun["id"], name)).fetchone():
                    raise bad(f"{p}.name", f"LUN {lun['name']} already has a snapshot named {name!r}")
                sid = new_id()
                row = {
                    "id": sid,
                    "lun_id": lun["id"],
                    "target_id": lun["target_id"],
                    "local_id": str(uuid.uuid4()),
                    "name": name,
                    "unique_size": 0,
                    "local_created_at": now_iso(),
                    "entity_async_status": "CREATING",
                    "size": lun["assigned_size"],
                    "replica_num": lun["replica_num"],
                    "thin_provision": lun["thin_provision"],
                    "stripe_num": lun["stripe_num"],
                    "stripe_size": lun["stripe_size"],
                }
                conn.execute(
                    f"INSERT INTO snapshots ({','.join(row)}) VALUES ({','.join('?' * len(row))})",  # noqa: S608
                    list(row.values()),
                )
                conn.execute("UPDATE luns SET snapshot_num = snapshot_num + 1 WHERE id = ?", (lun["id"],))
                payload = {"lun": lun["local_id"]}
                desc = f"Create snapshot {name} of iSCSI LUN {lun['name']}"
                out.append(
                    (self._task(conn, "snapshot.create", desc, SNAPSHOT, sid, "createIscsiLunSnapshot", payload), sid)
                )
            return out

        return self._mutate(SNAPSHOT, fn)

    def delete_snapshots(self, body: Any) -> Any:
        v.check_keys(body, "", ("where",), ("where",))

        def fn(conn: sqlite3.Connection) -> Items:
            out: Items = []
            for row in self._matching(conn, SNAPSHOT, body):
                if row["entity_async_status"] == "DELETING":
                    out.append((self._pending_task(conn, row["id"]), row["id"]))
                    continue
                conn.execute("UPDATE snapshots SET entity_async_status = 'DELETING' WHERE id = ?", (row["id"],))
                desc = f"Delete snapshot {row['name']}"
                out.append(
                    (
                        self._task(conn, "snapshot.delete", desc, SNAPSHOT, row["id"], "deleteIscsiLunSnapshot"),
                        row["id"],
                    )
                )
            return out

        return self._mutate(SNAPSHOT, fn, deleted=True)

    # ---------------------------------------------------------------- cluster settings

    def update_cluster_iscsi(self, body: Any) -> Any:
        v.check_keys(body, "", ("where", "enable_iscsi"), ("where", "enable_iscsi"))
        enable = bool(v.get_bool(body, "enable_iscsi", ""))
        out: list[dict[str, Any]] = []
        with self.db.write_lock:
            with self.db.write() as conn:
                for row in self._matching(conn, CLUSTER, body):
                    conn.execute("UPDATE clusters SET enabled_iscsi = ? WHERE id = ?", (int(enable), row["id"]))
                    desc = "Update iSCSI setting"
                    tid = self._task(conn, "cluster.update", desc, CLUSTER, row["id"], "updateClusterSettings")
                    data = {"id": f"{row['id']}-settings", "cluster": self.cluster_ref(), "enabled_iscsi": enable}
                    out.append({"task_id": tid, "data": data})
            self.runner.submit([o["task_id"] for o in out], self.s.task_delay)
        return out

    # ---------------------------------------------------------------- task execution

    def pending_tasks(self) -> list[str]:
        with self.db.read() as conn:
            return [
                r[0] for r in conn.execute("SELECT id FROM tasks WHERE status IN ('PENDING','EXECUTING') ORDER BY seq")
            ]

    def run_task(self, task_id: str) -> None:
        with self.db.write(hooks=False) as conn:
            task = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if task is None or task["status"] not in ACTIVE:
                return
            conn.execute("UPDATE tasks SET status = 'EXECUTING', started_at = ? WHERE id = ?", (now_iso(), task_id))
        kind, rid = task["kind"], task["resource_id"]
        payload = json.loads(task["payload"])
        try:
            finish = self._apply(kind, rid, payload)
        except OSError as exc:
            log.warning("task %s (%s %s) failed: %s", task_id, kind, rid, exc)
            self._fail(task, exc)
            return
        with self.db.write() as conn:
            finish(conn)
            self._clear_status(conn, task)
            conn.execute(
                "UPDATE tasks SET status = 'SUCCESSED', progress = 1, finished_at = ? WHERE id = ?",
                (now_iso(), task_id),
            )
        after = getattr(finish, "after_commit", None)
        if after is not None:
            after()

    def _clear_status(self, conn: sqlite3.Connection, task: sqlite3.Row) -> None:
        table = {"IscsiTarget": "targets", "IscsiLun": "luns", "IscsiLunSnapshot": "snapshots", "Cluster": "clusters"}[
            task["resource_type"]
        ]
        others = conn.execute(
            "SELECT 1 FROM tasks WHERE resource_id = ? AND status IN ('PENDING','EXECUTING') AND id != ?",
            (task["resource_id"], task["id"]),
        ).fetchone()
        if not others:
            conn.execute(
                f"UPDATE {table} SET entity_async_status = NULL WHERE id = ? AND entity_async_status != 'DELETING'",  # noqa: S608
                (task["resource_id"],),
            )

    def _lun_row(self, rid: str) -> sqlite3.Row:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM luns WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise FileNotFoundError(f"LUN {rid} vanished")
        return row

    def _apply(self, kind: str, rid: str, payload: dict[str, Any]) -> Callable[[sqlite3.Connection], None]:
        """Do the data work of a task; return what to commit once it is done."""
        pool = self.pool

        def nothing(conn: sqlite3.Connection) -> None:
            return None

        if kind in ("target.create", "target.update", "cluster.update"):
            return nothing
        if kind == "target.delete":

            def drop_target(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM targets WHERE id = ?", (rid,))

            return drop_target
        if kind in ("lun.create", "lun.update", "lun.rollback"):
            lun = self._lun_row(rid)
            path = pool.lun_path(lun["local_id"])
            thick = not lun["thin_provision"]
            size = lun["assigned_size"] if kind == "lun.create" else payload["size"]
            if kind == "lun.create":
                source = payload.get("source") or {}
                src = (
                    pool.snapshot_path(source["snapshot"])
                    if "snapshot" in source
                    else pool.lun_path(source["lun"])
                    if "lun" in source
                    else None
                )
                pool.create(path, size, thick=thick, source=src)
            elif kind == "lun.update":
                pool.resize(path, size, thick=thick)
            else:
                pool.overwrite(path, pool.snapshot_path(payload["snapshot"]), size, thick=thick)
            used = allocated(path)

            def done(conn: sqlite3.Connection) -> None:
                conn.execute("UPDATE luns SET file_size = ?, unique_size = ? WHERE id = ?", (size, used, rid))

            return done
        if kind == "lun.delete":
            lun = self._lun_row(rid)
            with self.db.read() as conn:
                snaps = [r[0] for r in conn.execute("SELECT local_id FROM snapshots WHERE lun_id = ?", (rid,))]
            files = [pool.lun_path(lun["local_id"]), *(pool.snapshot_path(s) for s in snaps)]

            def drop(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM snapshots WHERE lun_id = ?", (rid,))
                conn.execute("DELETE FROM luns WHERE id = ?", (rid,))

            drop.after_commit = lambda: _unlink(files)  # type: ignore[attr-defined]
            return drop
        if kind == "snapshot.create":
            with self.db.read() as conn:
                snap = conn.execute("SELECT * FROM snapshots WHERE id = ?", (rid,)).fetchone()
            if snap is None:
                raise FileNotFoundError(f"snapshot {rid} vanished")
            path = pool.snapshot_path(snap["local_id"])
            pool.create(path, snap["size"], thick=False, source=pool.lun_path(payload["lun"]))
            used = allocated(path)

            def snap_done(conn: sqlite3.Connection) -> None:
                conn.execute("UPDATE snapshots SET unique_size = ? WHERE id = ?", (used, rid))

            return snap_done
        if kind == "snapshot.delete":
            with self.db.read() as conn:
                snap = conn.execute("SELECT * FROM snapshots WHERE id = ?", (rid,)).fetchone()
            if snap is None:
                return nothing
            file = pool.snapshot_path(snap["local_id"])

            def drop_snap(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM snapshots WHERE id = ?", (rid,))
                conn.execute("UPDATE luns SET snapshot_num = snapshot_num - 1 WHERE id = ?", (snap["lun_id"],))

            drop_snap.after_commit = lambda: _unlink([file])  # type: ignore[attr-defined]
            return drop_snap
        raise ValueError(f"unknown task kind {kind}")

    def _fail(self, task: sqlite3.Row, exc: OSError) -> None:
        code = "ZBS_" + (errno_name(exc.errno) if exc.errno else "IO_ERROR")
        message = f"{task['description']}: {exc.strerror or exc}"
        with self.db.write() as conn:
            kind, rid = task["kind"], task["resource_id"]
            if kind == "lun.create":
                conn.execute("DELETE FROM snapshots WHERE lun_id = ?", (rid,))
                conn.execute("DELETE FROM luns WHERE id = ?", (rid,))
            elif kind == "snapshot.create":
                row = conn.execute("SELECT lun_id FROM snapshots WHERE id = ?", (rid,)).fetchone()
                conn.execute("DELETE FROM snapshots WHERE id = ?", (rid,))
                if row:
                    conn.execute("UPDATE luns SET snapshot_num = snapshot_num - 1 WHERE id = ?", (row["lun_id"],))
            elif kind == "lun.update":
                conn.execute("UPDATE luns SET assigned_size = file_size WHERE id = ?", (rid,))
            self._clear_status(conn, task)
            conn.execute(
                "UPDATE tasks SET status = 'FAILED', error_code = ?, error_message = ?, finished_at = ? WHERE id = ?",
                (code, message, now_iso(), task["id"]),
            )

    # ---------------------------------------------------------------- crash recovery

    def reconcile(self) -> dict[str, int]:
        """Make files match metadata after an unclean stop; returns what was fixed."""
        with self.db.read() as conn:
            luns = {r["local_id"]: r for r in conn.execute("SELECT * FROM luns")}
            snaps = {r["local_id"] for r in conn.execute("SELECT local_id FROM snapshots")}
        fixed = {"orphans_removed": 0, "missing_files": 0}
        for sub, known in (("luns", set(luns)), ("snaps", snaps)):
            for f in (self.pool.root / sub).iterdir():
                if f.name not in known:
                    log.warning("removing orphan data file %s", f)
                    f.unlink()
                    fixed["orphans_removed"] += 1
        for local_id, row in luns.items():
            if row["entity_async_status"] != "CREATING" and not self.pool.lun_path(local_id).exists():
                log.error("LUN %s (%s) has no data file", row["name"], local_id)
                fixed["missing_files"] += 1
        return fixed


def _unlink(files: list[Path]) -> None:
    for f in files:
        try:
            f.unlink(missing_ok=True)
        except OSError as exc:
            log.error("could not remove %s: %s", f, exc)


def errno_name(num: int) -> str:
    import errno as _errno

    return _errno.errorcode.get(num, "EIO")
