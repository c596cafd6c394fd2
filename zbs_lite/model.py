"""The resources zbs-lite serves, described once: columns, filterable fields and relations.

The same tables drive the SQLite schema, the ``where`` translator, ``orderBy`` and the
JSON rendering, so a field added here is stored, filterable, sortable and returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["str", "int", "bool", "float", "enum"]

_QOS_SUFFIXES = ("", "_rd", "_wr", "_max", "_rd_max", "_wr_max", "_max_length", "_rd_max_length", "_wr_max_length")
QOS_FIELDS: tuple[str, ...] = (*(f"{base}{suffix}" for base in ("iops", "bps") for suffix in _QOS_SUFFIXES), "io_size")
BPS_UNIT_FIELDS: tuple[str, ...] = (
    "bps_unit",
    "bps_rd_unit",
    "bps_wr_unit",
    "bps_max_unit",
    "bps_rd_max_unit",
    "bps_wr_max_unit",
    "bps_wr_max_size",
)


@dataclass(frozen=True)
class Field:
    kind: Kind
    column: str = ""
    nullable: bool = False
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Relation:
    """A nested filter: ``one`` compares a local column with the other table's id,
    ``many`` (``<name>_some/_none/_every``) looks for rows of the other table pointing back."""

    resource: str
    kind: Literal["one", "many"]
    local: str = ""
    remote: str = ""


@dataclass(frozen=True)
class Resource:
    name: str
    table: str
    fields: dict[str, Field]
    relations: dict[str, Relation] = field(default_factory=dict)

    def column(self, name: str) -> str:
        f = self.fields[name]
        return f"{self.table}.{f.column or name}"


def _qos(nullable: bool) -> dict[str, Field]:
    return {q: Field("int", nullable=nullable) for q in QOS_FIELDS}


ASYNC = Field("enum", column="entity_async_status", nullable=True, enum=("CREATING", "DELETING", "UPDATING"))

CLUSTER = Resource(
    "Cluster",
    "clusters",
    {
        "id": Field("str"),
        "local_id": Field("str", nullable=True),
        "name": Field("str"),
        "ip": Field("str"),
        "iscsi_vip": Field("str", nullable=True),
        "management_vip": Field("str", nullable=True),
        "version": Field("str"),
        "type": Field("enum", enum=("BLUESHARK", "SMTX_ELF", "SMTX_OS", "SMTX_ZBS")),
        "architecture": Field("enum", enum=("AARCH64", "X86_64")),
        "connect_state": Field("enum", enum=("CONNECTED", "DISCONNECTED", "INITIALIZING", "REMOVING")),
        "entityAsyncStatus": ASYNC,
    },
)

TARGET = Resource(
    "IscsiTarget",
    "targets",
    {
        "id": Field("str"),
        "local_id": Field("str"),
        "name": Field("str"),
        "iqn_name": Field("str"),
        "description": Field("str"),
        "replica_num": Field("int"),
        "thin_provision": Field("bool"),
        "stripe_num": Field("int"),
        "stripe_size": Field("int"),
        "ip_whitelist": Field("str"),
        "iqn_whitelist": Field("str"),
        "chap_enabled": Field("bool"),
        "chap_name": Field("str", nullable=True),
        "chap_secret": Field("str", nullable=True),
        "external_use": Field("bool"),
        "internal": Field("bool"),
        "entityAsyncStatus": ASYNC,
        **_qos(nullable=True),
    },
    {
        "cluster": Relation("Cluster", "one", local="cluster_id"),
        "luns": Relation("IscsiLun", "many", remote="target_id"),
    },
)

LUN = Resource(
    "IscsiLun",
    "luns",
    {
        "id": Field("str"),
        "local_id": Field("str"),
        "zbs_volume_id": Field("str", column="local_id"),
        "name": Field("str"),
        "lun_id": Field("int"),
        "assigned_size": Field("int"),
        "replica_num": Field("int"),
        "thin_provision": Field("bool"),
        "stripe_num": Field("int"),
        "stripe_size": Field("int"),
        "allowed_initiators": Field("str"),
        "shared_size": Field("int"),
        "unique_size": Field("int"),
        "unique_logical_size": Field("float", nullable=True),
        "snapshot_num": Field("int"),
        "local_created_at": Field("str"),
        "entityAsyncStatus": ASYNC,
        **_qos(nullable=False),
    },
    {"iscsi_target": Relation("IscsiTarget", "one", local="target_id")},
)

SNAPSHOT = Resource(
    "IscsiLunSnapshot",
    "snapshots",
    {
        "id": Field("str"),
        "local_id": Field("str"),
        "name": Field("str"),
        "unique_size": Field("int"),
        "local_created_at": Field("str"),
        "entityAsyncStatus": ASYNC,
    },
    {
        "iscsi_lun": Relation("IscsiLun", "one", local="lun_id"),
        "iscsi_target": Relation("IscsiTarget", "one", local="target_id"),
    },
)

TASK = Resource(
    "Task",
    "tasks",
    {
        "id": Field("str"),
        "description": Field("str"),
        "error_code": Field("str", nullable=True),
        "error_message": Field("str", nullable=True),
        "finished_at": Field("str", nullable=True),
        "started_at": Field("str", nullable=True),
        "local_created_at": Field("str"),
        "internal": Field("bool"),
        "key": Field("str", column="task_key", nullable=True),
        "progress": Field("float"),
        "resource_id": Field("str", nullable=True),
        "resource_mutation": Field("str", nullable=True),
        "resource_type": Field("str", nullable=True),
        "snapshot": Field("str"),
        "status": Field("enum", enum=("EXECUTING", "FAILED", "PAUSED", "PENDING", "SUCCESSED")),
    },
    {"cluster": Relation("Cluster", "one", local="cluster_id")},
)

CONNECTION = Resource(
    "IscsiConnection",
    "connections",
    {
        "id": Field("str"),
        "initiator_ip": Field("str"),
        "client_port": Field("int"),
        "initiator_iqn": Field("str"),
        "type": Field("enum", column="conn_type", enum=("ISCSI", "NVMe")),
        "tr_type": Field("enum", nullable=True, enum=("RDMA", "TCP")),
    },
    {
        "iscsi_target": Relation("IscsiTarget", "one", local="target_id"),
        "cluster": Relation("Cluster", "one", local="cluster_id"),
    },
)

RESOURCES: dict[str, Resource] = {r.name: r for r in (CLUSTER, TARGET, LUN, SNAPSHOT, TASK, CONNECTION)}


def _column_sql(name: str, f: Field) -> str:
    sqltype = {"str": "TEXT", "enum": "TEXT", "int": "INTEGER", "bool": "INTEGER", "float": "REAL"}[f.kind]
    null = "" if f.nullable else " NOT NULL"
    return f"{f.column or name} {sqltype}{null}"


def _columns(res: Resource, skip: tuple[str, ...] = ("id",)) -> str:
    seen: set[str] = set()
    cols = []
    for name, f in res.fields.items():
        col = f.column or name
        if name in skip or col in seen:
            continue
        seen.add(col)
        cols.append(_column_sql(name, f))
    return ",\n  ".join(cols)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clusters (
  id TEXT PRIMARY KEY,
  {_columns(CLUSTER)},
  enabled_iscsi INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS targets (
  id TEXT PRIMARY KEY,
  cluster_id TEXT NOT NULL REFERENCES clusters(id),
  {_columns(TARGET)},
  initiator_chaps TEXT NOT NULL DEFAULT '[]',
  local_created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS targets_name ON targets(cluster_id, name);
CREATE UNIQUE INDEX IF NOT EXISTS targets_iqn ON targets(iqn_name);
CREATE INDEX IF NOT EXISTS targets_name_only ON targets(name);
CREATE INDEX IF NOT EXISTS targets_local_id ON targets(local_id);
CREATE TABLE IF NOT EXISTS luns (
  id TEXT PRIMARY KEY,
  target_id TEXT NOT NULL REFERENCES targets(id),
  {_columns(LUN)},
  file_size INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS luns_name ON luns(target_id, name);
CREATE UNIQUE INDEX IF NOT EXISTS luns_lun_id ON luns(target_id, lun_id);
CREATE INDEX IF NOT EXISTS luns_local_id ON luns(local_id);
CREATE INDEX IF NOT EXISTS luns_name_only ON luns(name);
CREATE INDEX IF NOT EXISTS luns_target ON luns(target_id, id);
-- a _contains filter (the CSI driver counts a node's LUNs by IQN) scans this narrow index, not the rows
CREATE INDEX IF NOT EXISTS luns_allowed ON luns(allowed_initiators);
CREATE TABLE IF NOT EXISTS snapshots (
  id TEXT PRIMARY KEY,
  lun_id TEXT NOT NULL REFERENCES luns(id),
  target_id TEXT NOT NULL REFERENCES targets(id),
  {_columns(SNAPSHOT)},
  size INTEGER NOT NULL,
  replica_num INTEGER NOT NULL,
  thin_provision INTEGER NOT NULL,
  stripe_num INTEGER NOT NULL,
  stripe_size INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS snapshots_name ON snapshots(lun_id, name);
CREATE INDEX IF NOT EXISTS snapshots_local_id ON snapshots(local_id);
CREATE INDEX IF NOT EXISTS snapshots_name_only ON snapshots(name);
CREATE INDEX IF NOT EXISTS snapshots_target ON snapshots(target_id);
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  cluster_id TEXT NOT NULL,
  {_columns(TASK)},
  kind TEXT NOT NULL,
  payload TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status, seq);
CREATE INDEX IF NOT EXISTS tasks_resource ON tasks(resource_id);
CREATE TABLE IF NOT EXISTS connections (
  id TEXT PRIMARY KEY,
  cluster_id TEXT NOT NULL,
  target_id TEXT,
  {_columns(CONNECTION)},
  chunk INTEGER NOT NULL,
  host_ip TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS connections_target ON connections(target_id);
"""
