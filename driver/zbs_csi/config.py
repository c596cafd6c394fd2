"""Driver configuration: defaults < config file < environment < command-line flags.

The ZBS connection uses the same variables as the Ansible modules (``ZBS_HOST``,
``ZBS_USERNAME``, ``ZBS_PASSWORD``, ``ZBS_CA_PATH``, ``ZBS_VALIDATE_CERTS``, ``ZBS_CLUSTER``,
``ZBS_ISCSI_PORTAL``), so ``eval "$(zbs-lite env --data-dir D)"`` is all a developer needs.
Everything else reads ``ZBS_CSI_<FIELD>``. The password may come from a file (a mounted
Kubernetes Secret) and is never part of ``repr``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .caps import FS_TYPES
from .ownership import check_cluster_id

GiB = 1024**3

DEFAULT_DRIVER_NAME = "zbs.csi.smartx.com"


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    endpoint: str = "unix:///csi/csi.sock"
    mode: str = "all"
    driver_name: str = DEFAULT_DRIVER_NAME
    log_level: str = "info"
    # ZBS management API
    zbs_host: str = ""
    zbs_username: str = ""
    zbs_password: str = field(default="", repr=False)
    zbs_password_file: str = ""
    zbs_ca_path: str = ""
    zbs_validate_certs: bool = True
    zbs_timeout: float = 30.0
    zbs_wait_timeout: float = 300.0
    cluster: str = ""
    portal: str = ""
    # The storage nodes' own iSCSI portals (host:3261, comma-separated): with multipath on,
    # nodes make one session (one path) to each instead of one through the VIP.
    data_portals: str = ""
    # controller
    # The Kubernetes cluster's id (SmartX's driver: clusterID), in every target and LUN name:
    # required by the controller, never changed once volumes exist (see ownership.py).
    kubernetes_cluster_id: str = ""
    # Adopt, on first touch, LUNs made by drivers without a cluster id (targets <prefix>-NNNN).
    adopt_legacy: bool = False
    target_prefix: str = "zbs-csi"
    luns_per_target: int = 255
    size_granularity: int = GiB
    default_replica_num: int = 2
    default_thin_provision: bool = True
    # GET_SNAPSHOT is alpha in CSI 1.12; tools built on older specs (csi-sanity before v5.6.0) reject it.
    advertise_get_snapshot: bool = True
    # Targets made with CHAP on: every publish then needs the node's CHAP secret.
    chap: bool = False
    # node
    node_id: str = ""
    initiator_name_file: str = "/etc/iscsi/initiatorname.iscsi"
    # kernel (open-iscsi + dm-multipath on the host) is what Kubernetes nodes run; userspace
    # (qemu-storage-daemon + FUSE + loop) serves nodes without iscsi_tcp and must be asked for.
    connector: str = "kernel"
    host_exec: str = "none"
    host_root: str = "/host"
    multipath: bool = True
    state_dir: str = "/var/lib/zbs-csi"
    default_fstype: str = "ext4"
    max_volumes_per_node: int = 256
    command_timeout: float = 120.0
    # iSCSI sessions (docs/csi-driver.md, "iSCSI session tuning", says how the defaults were
    # chosen). The kernel connector writes them into every node record it makes; the userspace
    # connector applies replacement_timeout itself (libiscsi has no such bound).
    iscsi_queue_depth: int = 128
    iscsi_cmds_max: int = 1024
    iscsi_replacement_timeout: int = 120

    def password(self) -> str:
        if self.zbs_password:
            return self.zbs_password
        if self.zbs_password_file:
            return Path(self.zbs_password_file).read_text(encoding="utf-8").strip()
        return ""

    def validate(self) -> None:
        if self.mode not in ("controller", "node", "all"):
            raise ConfigError(f"mode must be controller, node or all, not {self.mode!r}")
        if not self.endpoint.startswith("unix://"):
            raise ConfigError("endpoint must be unix:///path/to.sock")
        if self.connector not in ("userspace", "kernel"):
            raise ConfigError(f"connector must be userspace or kernel, not {self.connector!r}")
        if self.host_exec not in ("none", "chroot", "nsenter"):
            raise ConfigError(f"host_exec must be none, chroot or nsenter, not {self.host_exec!r}")
        if self.default_fstype not in FS_TYPES:
            raise ConfigError(f"default_fstype must be one of {', '.join(FS_TYPES)}, not {self.default_fstype!r}")
        if self.mode in ("controller", "all"):
            if not self.kubernetes_cluster_id:
                raise ConfigError(
                    "kubernetes_cluster_id is required (ZBS_CSI_KUBERNETES_CLUSTER_ID): a unique, "
                    "never-changing id of this Kubernetes cluster, so clusters sharing a ZBS never see "
                    "or touch each other's volumes"
                )
            try:
                check_cluster_id(self.kubernetes_cluster_id)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not 1 <= self.iscsi_queue_depth <= 1024:
            raise ConfigError("iscsi_queue_depth must be within 1..1024")
        if not 2 <= self.iscsi_cmds_max <= 2048 or self.iscsi_cmds_max & (self.iscsi_cmds_max - 1):
            raise ConfigError("iscsi_cmds_max must be a power of two within 2..2048 (open-iscsi's rule)")
        if not 1 <= self.iscsi_replacement_timeout <= 3600:
            raise ConfigError("iscsi_replacement_timeout must be within 1..3600 seconds")
        if not 1 <= self.luns_per_target <= 255:
            raise ConfigError("luns_per_target must be within 1..255")
        if self.size_granularity < 512 or self.size_granularity % 512:
            raise ConfigError("size_granularity must be a positive multiple of 512 bytes")
        if self.max_volumes_per_node < 1:
            raise ConfigError("max_volumes_per_node must be at least 1")
        for portal in self.data_portal_list:
            host, _, port = portal.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in "/?#@% "):
                raise ConfigError(f"data_portals: {portal!r} is not host:port")

    @property
    def data_portal_list(self) -> list[str]:
        return [p.strip() for p in self.data_portals.split(",") if p.strip()]

    @property
    def socket_path(self) -> str:
        return self.endpoint[len("unix://") :]


_ENV_ALIASES = {
    "zbs_host": "ZBS_HOST",
    "zbs_username": "ZBS_USERNAME",
    "zbs_password": "ZBS_PASSWORD",
    "zbs_ca_path": "ZBS_CA_PATH",
    "zbs_validate_certs": "ZBS_VALIDATE_CERTS",
    "zbs_timeout": "ZBS_TIMEOUT",
    "cluster": "ZBS_CLUSTER",
    "portal": "ZBS_ISCSI_PORTAL",
    "data_portals": "ZBS_ISCSI_DATA_PORTALS",
}


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: not a boolean: {value!r}")
    try:
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: not a number: {value!r}") from exc
    return str(value)


def load_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping")
    return data


def load_config(
    file: str | None = None, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    env = dict(os.environ) if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    layers: list[dict[str, Any]] = []
    if file:
        layers.append(load_file(file))
    from_env: dict[str, Any] = {}
    for name in fields:
        key = _ENV_ALIASES.get(name)
        if key and key in env:
            from_env[name] = env[key]
        if f"ZBS_CSI_{name.upper()}" in env:
            from_env[name] = env[f"ZBS_CSI_{name.upper()}"]
    layers.append(from_env)
    layers.append({k: v for k, v in (overrides or {}).items() if v is not None})
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"unknown configuration key {key!r}")
            values[name] = _coerce(name, fields[name].type, value)
    cfg = Config(**values)
    cfg.validate()
    return cfg
