"""create-, update- and delete-iscsi-target."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from zbs_lite import validate
from zbs_lite.db import new_id, now_iso
from zbs_lite.effects import TaskKind
from zbs_lite.errors import ApiError, ErrorCode, bad
from zbs_lite.model import BPS_UNIT_FIELDS, QOS_FIELDS, TARGET
from zbs_lite.mutations.base import DeleteWhere, Items, Mutation, MutationContext, items
from zbs_lite.queries import matching

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


def _common_columns(item: dict[str, Any], path: str, current: sqlite3.Row | None) -> dict[str, Any]:
    """The columns create and update share (whitelists, CHAP, QoS), checked against the current row."""
    cols: dict[str, Any] = {}
    if (d := validate.get_str(item, "description", path, ascii_only=False)) is not None:
        cols["description"] = d
    if (w := validate.get_str(item, "ip_whitelist", path)) is not None:
        cols["ip_whitelist"] = validate.ip_list(w, f"{path}.ip_whitelist")
    if (w := validate.get_str(item, "iqn_whitelist", path, max_len=65536)) is not None:
        cols["iqn_whitelist"] = validate.iqn_list(w, f"{path}.iqn_whitelist", allow_empty=True)
    enabled = validate.get_bool(item, "chap_enabled", path)
    if enabled is not None:
        cols["chap_enabled"] = int(enabled)
    if item.get("chap_name") is not None:
        cols["chap_name"] = validate.chap_name(item["chap_name"], f"{path}.chap_name", max_len=223)
    if item.get("chap_secret") is not None:
        cols["chap_secret"] = validate.chap_secret(item["chap_secret"], f"{path}.chap_secret", lo=12, hi=16)
    if item.get("initiator_chaps") is not None:
        chaps = validate.initiator_chaps(item["initiator_chaps"], f"{path}.initiator_chaps")
        cols["initiator_chaps"] = json.dumps(chaps)
    final_enabled = cols.get("chap_enabled", current["chap_enabled"] if current else 0)
    if final_enabled:
        for key in ("chap_name", "chap_secret"):
            if not cols.get(key, current[key] if current else None):
                raise bad(f"{path}.{key}", "is required when chap_enabled is true")
    cols.update(validate.qos(item, path))
    return cols


class CreateTargets(Mutation):
    resource = TARGET

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        self.items = items(body, "targets")

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        count = conn.execute("SELECT COUNT(*) FROM targets").fetchone()[0]
        names: set[str] = set()
        cluster_id = self.ctx.cluster_id
        for i, item in enumerate(self.items):
            p = f"[{i}]"
            validate.check_keys(item, p, TARGET_CREATE, ("name", "cluster_id", "replica_num", "thin_provision"))
            name = validate.target_name(item, p)
            if item["cluster_id"] != cluster_id:
                raise ApiError(404, f"{p}.cluster_id: cluster {item['cluster_id']!r} not found")
            replica = validate.replica(item, "replica_num", p)
            thin = validate.get_bool(item, "thin_provision", p)
            stripes = validate.stripe_num(item, p) or 8
            stripe_size = validate.stripe_size(item, p) or 256 * 1024
            cols = _common_columns(item, p, None)
            if count + len(names) >= validate.MAX_TARGETS:
                raise bad(
                    f"{p}.name", f"a cluster holds at most {validate.MAX_TARGETS} targets", ErrorCode.LIMIT_EXCEEDED
                )
            if name in names or conn.execute("SELECT 1 FROM targets WHERE name = ?", (name,)).fetchone():
                raise bad(f"{p}.name", f"a target named {name!r} already exists", ErrorCode.ALREADY_EXISTS)
            names.add(name)
            rid = new_id()
            row = {
                "id": rid,
                "cluster_id": cluster_id,
                "local_id": str(uuid.uuid4()),
                "name": name,
                "iqn_name": validate.IQN_PREFIX + name,
                "description": "",
                "replica_num": replica,
                "thin_provision": int(bool(thin)),
                "stripe_num": stripes,
                "stripe_size": stripe_size,
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
            desc = f"Create iSCSI target {name}"
            out.append((self.ctx.tasks.add(conn, TaskKind.TARGET_CREATE, desc, TARGET, rid, "createIscsiTarget"), rid))
        return out


class UpdateTargets(Mutation):
    resource = TARGET

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        validate.check_keys(body, "", ("where", "data"), ("where", "data"))
        self.data = validate.check_keys(body["data"], "data", (*TARGET_COMMON, "replica_num"))

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        for row in matching(conn, TARGET, self.body):
            if row["entity_async_status"] == "DELETING":
                raise ApiError(400, f"target {row['name']} is being deleted", code=ErrorCode.RESOURCE_LOCKED)
            cols = _common_columns(self.data, "data", row)
            replica = validate.replica(self.data, "replica_num", "data")
            if replica is not None:
                if replica < row["replica_num"]:
                    raise bad("data.replica_num", f"may only grow (is {row['replica_num']})")
                cols["replica_num"] = replica
            cols["entity_async_status"] = "UPDATING"
            conn.execute(
                f"UPDATE targets SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",  # noqa: S608
                [*cols.values(), row["id"]],
            )
            desc = f"Update iSCSI target {row['name']}"
            tid = self.ctx.tasks.add(conn, TaskKind.TARGET_UPDATE, desc, TARGET, row["id"], "updateIscsiTarget")
            out.append((tid, row["id"]))
        return out


class DeleteTargets(DeleteWhere):
    resource = TARGET

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        validate.check_keys(body, "", ("where",), ("where",))

    def delete(self, conn: sqlite3.Connection, row: sqlite3.Row) -> str:
        n = conn.execute("SELECT COUNT(*) FROM luns WHERE target_id = ?", (row["id"],)).fetchone()[0]
        if n:
            raise bad("where", f"target {row['name']} still has {n} LUN(s); delete them first")
        conn.execute("UPDATE targets SET entity_async_status = 'DELETING' WHERE id = ?", (row["id"],))
        desc = f"Delete iSCSI target {row['name']}"
        return self.ctx.tasks.add(conn, TaskKind.TARGET_DELETE, desc, TARGET, row["id"], "deleteIscsiTarget")
