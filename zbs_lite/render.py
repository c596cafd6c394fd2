"""Rows as CloudTower returns them: field names, nesting and the constant parts of each object."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from zbs_lite.model import QOS_FIELDS, TARGET, Resource
from zbs_lite.settings import Settings
from zbs_lite.storage import Pool, allocated

Row = Mapping[str, Any]


class Renderer:
    def __init__(self, settings: Settings, cluster_id: str, pool: Pool) -> None:
        self.settings = settings
        self.cluster_id = cluster_id
        self.pool = pool

    def rows(self, conn: sqlite3.Connection, res: Resource, raw: list[sqlite3.Row]) -> list[dict[str, Any]]:
        rows = [dict(r) for r in raw]  # sqlite3.Row looks names up column by column; dicts are ~10x faster
        if res is TARGET:
            luns = _luns_of(conn, [r["id"] for r in rows])
            return [self.target(r, luns.get(r["id"], [])) for r in rows]
        render = {
            "Cluster": self.cluster,
            "IscsiLun": self.lun,
            "IscsiLunSnapshot": self.snapshot,
            "Task": self.task,
            "IscsiConnection": self.connection,
        }[res.name]
        return [render(r) for r in rows]

    def cluster_ref(self) -> dict[str, str]:
        return {"id": self.cluster_id, "name": self.settings.cluster_name}

    def cluster(self, r: Row) -> dict[str, Any]:
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
            "host_num": len(self.settings.chunk_ips) or 1,
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

    def target(self, r: Row, luns: list[dict[str, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": r["id"],
            "local_id": r["local_id"],
            "name": r["name"],
            "iqn_name": r["iqn_name"],
            "description": r["description"],
            "cluster": self.cluster_ref(),
            "replica_num": r["replica_num"],
            "thin_provision": bool(r["thin_provision"]),
            "stripe_num": r["stripe_num"],
            "stripe_size": r["stripe_size"],
            "ip_whitelist": r["ip_whitelist"],
            "iqn_whitelist": r["iqn_whitelist"],
            "chap_enabled": bool(r["chap_enabled"]),
            "chap_name": r["chap_name"],
            "chap_secret": r["chap_secret"],
            "initiator_chaps": json.loads(r["initiator_chaps"]),
            "external_use": bool(r["external_use"]),
            "internal": bool(r["internal"]),
            "luns": luns,
            "labels": [],
            "entityAsyncStatus": r["entity_async_status"],
        }
        for q in QOS_FIELDS:
            out[q] = r[q]
        return out

    def lun(self, r: Row) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": r["id"],
            "local_id": r["local_id"],
            "zbs_volume_id": r["local_id"],
            "name": r["name"],
            "lun_id": r["lun_id"],
            "iscsi_target": {"id": r["target_id"], "name": r["target_name"]},
            "assigned_size": r["assigned_size"],
            "replica_num": r["replica_num"],
            "thin_provision": bool(r["thin_provision"]),
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

    def snapshot(self, r: Row) -> dict[str, Any]:
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

    def task(self, r: Row) -> dict[str, Any]:
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
            "internal": bool(r["internal"]),
            "key": r["task_key"],
            "args": {},
            "steps": [],
            "type": None,
            "cluster": self.cluster_ref(),
            "user": {"id": "zbs-lite-" + self.settings.username, "name": self.settings.username},
        }

    def connection(self, r: Row) -> dict[str, Any]:
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


def _luns_of(conn: sqlite3.Connection, target_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """Each target's ``luns`` references, in LUN id order (IN lists of 500: SQLite's variable limit)."""
    luns: dict[str, list[dict[str, str]]] = {}
    for i in range(0, len(target_ids), 500):
        chunk = target_ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for lr in conn.execute(
            f"SELECT id, name, target_id FROM luns WHERE target_id IN ({marks}) ORDER BY lun_id",  # noqa: S608
            chunk,
        ):
            luns.setdefault(lr["target_id"], []).append({"id": lr["id"], "name": lr["name"]})
    return luns
