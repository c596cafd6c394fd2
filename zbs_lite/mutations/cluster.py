"""update-cluster-enable-iscsi-setting: the one cluster setting zbs-lite stores."""

from __future__ import annotations

import sqlite3
from typing import Any

from zbs_lite import validate
from zbs_lite.effects import TaskKind
from zbs_lite.model import CLUSTER
from zbs_lite.mutations.base import Items, Mutation, MutationContext
from zbs_lite.queries import matching


class UpdateClusterIscsi(Mutation):
    resource = CLUSTER

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        super().__init__(ctx, body)
        validate.check_keys(body, "", ("where", "enable_iscsi"), ("where", "enable_iscsi"))
        self.enable = bool(validate.get_bool(body, "enable_iscsi", ""))

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        for row in matching(conn, CLUSTER, self.body):
            conn.execute("UPDATE clusters SET enabled_iscsi = ? WHERE id = ?", (int(self.enable), row["id"]))
            desc = "Update iSCSI setting"
            out.append(
                (
                    self.ctx.tasks.add(
                        conn, TaskKind.CLUSTER_UPDATE, desc, CLUSTER, row["id"], "updateClusterSettings"
                    ),
                    row["id"],
                )
            )
        return out

    def reply(self, items: Items) -> list[dict[str, Any]]:
        """CloudTower answers with the cluster's settings object, not the cluster."""
        ref = self.ctx.renderer.cluster_ref()
        return [
            {"task_id": tid, "data": {"id": f"{rid}-settings", "cluster": ref, "enabled_iscsi": self.enable}}
            for tid, rid in items
        ]
