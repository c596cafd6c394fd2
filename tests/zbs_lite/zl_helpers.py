"""Shared helpers for the zbs-lite server tests (a thin raw-API wrapper with the usual asserts)."""

from __future__ import annotations

import uuid
from typing import Any

from zbs_lite.testing import ZbsLiteProcess


class Api:
    """Raw calls with the assertions every test repeats (status codes, task waits)."""

    def __init__(self, zl: ZbsLiteProcess) -> None:
        self.zl = zl

    def call(self, op: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.zl.call(op, body, **kw)

    def ok(self, op: str, body: Any = None) -> Any:
        status, data = self.zl.call(op, body)
        assert status == 200, f"{op}: {status} {data}"
        return data

    def err(self, op: str, body: Any, status: int = 400) -> str:
        got, data = self.zl.call(op, body)
        assert got == status, f"{op}: expected {status}, got {got} {data}"
        assert set(data) >= {"message", "status", "path"} and data["status"] == status
        return str(data["message"])

    def mutate(self, op: str, body: Any) -> list[dict[str, Any]]:
        """Run a mutation and wait for its tasks; every task must succeed."""
        out = self.ok(op, body)
        tasks = self.zl.wait_tasks([o["task_id"] for o in out])
        assert all(t["status"] == "SUCCESSED" for t in tasks), tasks
        return list(out)

    def cluster_id(self) -> str:
        return str(self.ok("get-clusters", {})[0]["id"])

    def target(self, name: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {
            "name": name or f"t-{uuid.uuid4().hex[:10]}",
            "cluster_id": self.cluster_id(),
            "replica_num": 2,
            "thin_provision": True,
            "stripe_num": 4,
            "stripe_size": 262144,
            **fields,
        }
        return dict(self.mutate("create-iscsi-target", [body])[0]["data"])

    def lun(self, target_id: str, name: str | None = None, size: int = 1 << 20, **fields: Any) -> dict[str, Any]:
        body = {
            "name": name or f"lun-{uuid.uuid4().hex[:10]}",
            "iscsi_target_id": target_id,
            "assigned_size": size,
            "replica_num": 2,
            **fields,
        }
        rid = self.mutate("create-iscsi-lun", [body])[0]["data"]["id"]
        return self.get_lun(rid)

    def get_lun(self, rid: str) -> dict[str, Any]:
        rows = self.ok("get-iscsi-luns", {"where": {"id": rid}})
        assert len(rows) == 1
        return dict(rows[0])

    def snapshot(self, lun: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        body = {
            "iscsi_lun_id": lun["id"],
            "iscsi_target_id": lun["iscsi_target"]["id"],
            "name": name or f"s-{uuid.uuid4().hex[:8]}",
        }
        sid = self.mutate("create-iscsi-lun-snapshot", [body])[0]["data"]["id"]
        return dict(self.ok("get-iscsi-lun-snapshots", {"where": {"id": sid}})[0])


def uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
