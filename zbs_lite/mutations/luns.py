"""create-, clone-, copy-, update-, rollback- and delete-iscsi-lun."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from zbs_lite import validate
from zbs_lite.db import new_id, now_iso
from zbs_lite.effects import TaskKind
from zbs_lite.errors import ApiError, ErrorCode, bad
from zbs_lite.model import BPS_UNIT_FIELDS, LUN, QOS_FIELDS, SNAPSHOT, TARGET
from zbs_lite.mutations.base import DeleteWhere, Items, Mutation, MutationContext, items
from zbs_lite.queries import matching, one

LUN_COMMON = ("allowed_initiators", *QOS_FIELDS, *BPS_UNIT_FIELDS)
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


def free_lun_id(conn: sqlite3.Connection, target_id: str, want: int | None, field: str) -> int:
    used = {r[0] for r in conn.execute("SELECT lun_id FROM luns WHERE target_id = ?", (target_id,))}
    if len(used) >= validate.MAX_LUNS_PER_TARGET:
        raise bad(field, f"the target already holds {validate.MAX_LUNS_PER_TARGET} LUNs", ErrorCode.LIMIT_EXCEEDED)
    if want is not None:
        if want in used:
            raise bad(field, f"LUN id {want} is already used in this target", ErrorCode.ALREADY_EXISTS)
        return want
    return next(i for i in range(1, validate.MAX_LUNS_PER_TARGET + 1) if i not in used)


def check_name_free(conn: sqlite3.Connection, target_id: str, name: str, field: str) -> None:
    if conn.execute("SELECT 1 FROM luns WHERE target_id = ? AND name = ?", (target_id, name)).fetchone():
        raise bad(field, f"a LUN named {name!r} already exists in this target", ErrorCode.ALREADY_EXISTS)


@dataclass
class NewLun:
    """A LUN row to insert, with the create task that makes its file (empty, cloned or copied)."""

    name: str
    lun_id: int
    size: int
    replica: int
    thin: bool
    stripe_num: int
    stripe_size: int
    allowed: str
    qos: dict[str, int]
    source: dict[str, str] | None
    description: str
    mutation: str

    def insert(self, ctx: MutationContext, conn: sqlite3.Connection, target: sqlite3.Row) -> tuple[str, str]:
        rid = new_id()
        row: dict[str, Any] = {
            "id": rid,
            "target_id": target["id"],
            "local_id": str(uuid.uuid4()),
            "name": self.name,
            "lun_id": self.lun_id,
            "assigned_size": self.size,
            "replica_num": self.replica,
            "thin_provision": int(self.thin),
            "stripe_num": self.stripe_num,
            "stripe_size": self.stripe_size,
            "allowed_initiators": self.allowed,
            "shared_size": 0,
            "unique_size": 0,
            "snapshot_num": 0,
            "local_created_at": now_iso(),
            "entity_async_status": "CREATING",
            "file_size": 0,
            **dict.fromkeys(QOS_FIELDS, 0),
            **self.qos,
        }
        sql = f"INSERT INTO luns ({','.join(row)}) VALUES ({','.join('?' * len(row))})"  # noqa: S608
        conn.execute(sql, list(row.values()))
        payload = {"source": self.source}
        tid = ctx.tasks.add(conn, TaskKind.LUN_CREATE, self.description, LUN, rid, self.mutation, payload)
        return tid, rid


class CreateLuns(Mutation):
    resource = LUN

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        self.items = items(body, "LUNs")

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        for i, item in enumerate(self.items):
            p = f"[{i}]"
            validate.check_keys(
                item, p, (*LUN_CREATE, *LUN_COMMON), ("name", "iscsi_target_id", "assigned_size", "replica_num")
            )
            name = validate.object_name(item, "name", p)
            size = validate.lun_size(item, p)
            assert size is not None
            replica = validate.replica(item, "replica_num", p)
            assert replica is not None
            want = validate.get_int(item, "lun_id", p, lo=-validate.INT64_MAX)
            if want is not None and not 1 <= want <= validate.MAX_LUNS_PER_TARGET:
                raise bad(f"{p}.lun_id", "must be between 1 and 255")
            thin = validate.get_bool(item, "thin_provision", p)
            allowed = validate.get_str(item, "allowed_initiators", p, max_len=65536)
            if allowed is None:
                allowed = "*/*"
            else:
                allowed = validate.iqn_list(allowed, f"{p}.allowed_initiators", allow_empty=True)
            qos = validate.qos(item, p)
            target = one(conn, TARGET, item["iscsi_target_id"], f"{p}.iscsi_target_id")
            check_name_free(conn, target["id"], name, f"{p}.name")
            lun = NewLun(
                name=name,
                lun_id=free_lun_id(conn, target["id"], want, f"{p}.lun_id"),
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
            out.append(lun.insert(self.ctx, conn, target))
        return out


class CloneLuns(Mutation):
    resource = LUN

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        self.items = items(body, "clone requests")

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        for i, item in enumerate(self.items):
            p = f"[{i}]"
            keys = ("snapshot_id", "iscsi_target_id", "name")
            validate.check_keys(item, p, keys, keys)
            name = validate.object_name(item, "name", p)
            snap = one(conn, SNAPSHOT, item["snapshot_id"], f"{p}.snapshot_id")
            target = one(conn, TARGET, item["iscsi_target_id"], f"{p}.iscsi_target_id")
            check_name_free(conn, target["id"], name, f"{p}.name")
            lun = NewLun(
                name=name,
                lun_id=free_lun_id(conn, target["id"], None, f"{p}.iscsi_target_id"),
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
            out.append(lun.insert(self.ctx, conn, target))
        return out


class CopyLuns(Mutation):
    resource = LUN

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        self.items = items(body, "copy requests")

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        for i, item in enumerate(self.items):
            p = f"[{i}]"
            validate.check_keys(item, p, ("src_lun_id", "name", "dest_iscsi_target_id"), ("src_lun_id", "name"))
            name = validate.object_name(item, "name", p)
            src = one(conn, LUN, item["src_lun_id"], f"{p}.src_lun_id")
            dest = item.get("dest_iscsi_target_id") or src["target_id"]
            target = one(conn, TARGET, dest, f"{p}.dest_iscsi_target_id")
            check_name_free(conn, target["id"], name, f"{p}.name")
            lun = NewLun(
                name=name,
                lun_id=free_lun_id(conn, target["id"], None, f"{p}.dest_iscsi_target_id"),
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
            out.append(lun.insert(self.ctx, conn, target))
        return out


class UpdateLuns(Mutation):
    resource = LUN

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        validate.check_keys(body, "", ("where", "data"), ("where", "data"))
        data = validate.check_keys(body["data"], "data", LUN_UPDATE)
        self.name = validate.object_name(data, "name", "data") if data.get("name") is not None else None
        self.size = validate.lun_size(data, "data")
        allowed = validate.get_str(data, "allowed_initiators", "data", max_len=65536)
        if allowed is not None:
            allowed = validate.iqn_list(allowed, "data.allowed_initiators", allow_empty=True)
        self.allowed = allowed
        self.replica = validate.replica(data, "replica_num", "data")
        self.qos = validate.qos(data, "data")

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        rows = matching(conn, LUN, self.body)
        if self.name is not None and len(rows) > 1:
            raise bad("data.name", "cannot give one name to several LUNs")
        for row in rows:
            if row["entity_async_status"] == "DELETING":
                raise ApiError(400, f"LUN {row['name']} is being deleted", code=ErrorCode.RESOURCE_LOCKED)
            cols: dict[str, Any] = dict(self.qos)
            if self.name is not None and self.name != row["name"]:
                check_name_free(conn, row["target_id"], self.name, "data.name")
                cols["name"] = self.name
            if self.size is not None:
                if self.size < row["assigned_size"]:
                    raise bad("data.assigned_size", f"LUNs only grow ({self.size} < current {row['assigned_size']})")
                cols["assigned_size"] = self.size
            if self.replica is not None:
                if self.replica < row["replica_num"]:
                    raise bad("data.replica_num", f"may only grow (is {row['replica_num']})")
                cols["replica_num"] = self.replica
            if self.allowed is not None:
                cols["allowed_initiators"] = self.allowed
            cols["entity_async_status"] = "UPDATING"
            conn.execute(
                f"UPDATE luns SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",  # noqa: S608
                [*cols.values(), row["id"]],
            )
            payload = {"size": cols.get("assigned_size", row["assigned_size"])}
            desc = f"Update iSCSI LUN {row['name']}"
            tid = self.ctx.tasks.add(conn, TaskKind.LUN_UPDATE, desc, LUN, row["id"], "updateIscsiLun", payload)
            out.append((tid, row["id"]))
        return out


class DeleteLuns(DeleteWhere):
    resource = LUN

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        validate.check_keys(body, "", ("where", "data"), ("where",))
        self.remove_snapshots = False
        if body.get("data") is not None:
            validate.check_keys(body["data"], "data", ("remove_snapshot",))
            self.remove_snapshots = bool(validate.get_bool(body["data"], "remove_snapshot", "data"))

    def delete(self, conn: sqlite3.Connection, row: sqlite3.Row) -> str:
        snaps = conn.execute("SELECT id FROM snapshots WHERE lun_id = ?", (row["id"],)).fetchall()
        if snaps and not self.remove_snapshots:
            raise bad(
                "data.remove_snapshot",
                f"LUN {row['name']} has {len(snaps)} snapshot(s); set remove_snapshot to delete them too",
            )
        conn.execute("UPDATE luns SET entity_async_status = 'DELETING' WHERE id = ?", (row["id"],))
        conn.execute("UPDATE snapshots SET entity_async_status = 'DELETING' WHERE lun_id = ?", (row["id"],))
        desc = f"Delete iSCSI LUN {row['name']}"
        return self.ctx.tasks.add(conn, TaskKind.LUN_DELETE, desc, LUN, row["id"], "deleteIscsiLun")


class RollbackLuns(Mutation):
    resource = LUN

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        self.items = items(body, "rollback requests")

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        for i, item in enumerate(self.items):
            p = f"[{i}]"
            validate.check_keys(item, p, ("lun_id", "snapshot_id"), ("lun_id", "snapshot_id"))
            lun = one(conn, LUN, item["lun_id"], f"{p}.lun_id")
            snap = one(conn, SNAPSHOT, item["snapshot_id"], f"{p}.snapshot_id")
            conn.execute(
                "UPDATE luns SET assigned_size = ?, entity_async_status = 'UPDATING' WHERE id = ?",
                (snap["size"], lun["id"]),
            )
            payload = {"snapshot": snap["local_id"], "size": snap["size"]}
            desc = f"Roll back iSCSI LUN {lun['name']} to snapshot {snap['name']}"
            mutation = "rollbackIscsiLunFromSnapshot"
            tid = self.ctx.tasks.add(conn, TaskKind.LUN_ROLLBACK, desc, LUN, lun["id"], mutation, payload)
            out.append((tid, lun["id"]))
        return out
