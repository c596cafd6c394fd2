"""create- and delete-iscsi-lun-snapshot."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from zbs_lite import validate
from zbs_lite.db import new_id, now_iso
from zbs_lite.effects import TaskKind
from zbs_lite.errors import ErrorCode, bad
from zbs_lite.model import LUN, SNAPSHOT
from zbs_lite.mutations.base import DeleteWhere, Items, Mutation, MutationContext, items
from zbs_lite.queries import one


class CreateSnapshots(Mutation):
    resource = SNAPSHOT

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        self.items = items(body, "snapshots")

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        for i, item in enumerate(self.items):
            p = f"[{i}]"
            validate.check_keys(
                item,
                p,
                ("iscsi_lun_id", "iscsi_target_id", "name", "effect"),
                ("iscsi_lun_id", "iscsi_target_id", "name"),
            )
            name = validate.object_name(item, "name", p)
            if item.get("effect") is not None:
                validate.check_keys(item["effect"], f"{p}.effect", ("sync",))
                validate.get_bool(item["effect"], "sync", f"{p}.effect")
            lun = one(conn, LUN, item["iscsi_lun_id"], f"{p}.iscsi_lun_id")
            if item["iscsi_target_id"] != lun["target_id"]:
                raise bad(f"{p}.iscsi_target_id", "is not the target of the LUN")
            if conn.execute("SELECT 1 FROM snapshots WHERE lun_id = ? AND name = ?", (lun["id"], name)).fetchone():
                raise bad(
                    f"{p}.name", f"LUN {lun['name']} already has a snapshot named {name!r}", ErrorCode.ALREADY_EXISTS
                )
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
            mutation = "createIscsiLunSnapshot"
            out.append(
                (self.ctx.tasks.add(conn, TaskKind.SNAPSHOT_CREATE, desc, SNAPSHOT, sid, mutation, payload), sid)
            )
        return out


class DeleteSnapshots(DeleteWhere):
    resource = SNAPSHOT

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        validate.check_keys(body, "", ("where",), ("where",))

    def delete(self, conn: sqlite3.Connection, row: sqlite3.Row) -> str:
        conn.execute("UPDATE snapshots SET entity_async_status = 'DELETING' WHERE id = ?", (row["id"],))
        desc = f"Delete snapshot {row['name']}"
        return self.ctx.tasks.add(conn, TaskKind.SNAPSHOT_DELETE, desc, SNAPSHOT, row["id"], "deleteIscsiLunSnapshot")
