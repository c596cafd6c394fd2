"""StorageClass and mutable parameters: parsed and validated before anything reaches ZBS.

The ZBS rules themselves (replica counts, stripe counts and sizes, size and boolean syntax)
are the shared client's (plugins/module_utils): a StorageClass accepts exactly what the
modules accept, in the same words. SmartX's own ZBS CSI driver spells two of them differently
(``replicaFactor``, ``thinProvision``): those names are accepted as aliases, so its
StorageClasses work unchanged, and a StorageClass that sets both spellings to different
values is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .caps import FS_TYPES
from .errors import invalid
from .zbs import parse_bool, validate_replica_num, validate_stripe_num, validate_stripe_size, zerr

FSTYPE_KEY = "csi.storage.k8s.io/fstype"
# Keys the sidecars add to requests when started with --extra-create-metadata (external-provisioner:
# CreateVolume parameters; csi-snapshotter: CreateSnapshot parameters) or --extra-modify-metadata
# (external-resizer: ControllerModifyVolume mutable parameters). They name the Kubernetes objects a
# request is for: accepted wherever they may appear, used only to say so in the logs (ZBS has no
# field for them), never an error.
PVC_NAME_KEY = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE_KEY = "csi.storage.k8s.io/pvc/namespace"
PV_NAME_KEY = "csi.storage.k8s.io/pv/name"
PROVISIONER_METADATA = (PVC_NAME_KEY, PVC_NAMESPACE_KEY, PV_NAME_KEY)
SNAPSHOT_NAME_KEY = "csi.storage.k8s.io/volumesnapshot/name"
SNAPSHOT_NAMESPACE_KEY = "csi.storage.k8s.io/volumesnapshot/namespace"
SNAPSHOT_CONTENT_KEY = "csi.storage.k8s.io/volumesnapshotcontent/name"
SNAPSHOTTER_METADATA = (SNAPSHOT_NAME_KEY, SNAPSHOT_NAMESPACE_KEY, SNAPSHOT_CONTENT_KEY)
MAX_IOPS = 1_000_000
MAX_BPS = 1 << 40


@dataclass(frozen=True)
class VolumeParams:
    fs_type: str = ""
    replica_num: int | None = None
    thin_provision: bool | None = None
    iops: int | None = None
    bps: int | None = None
    stripe_num: int | None = None
    stripe_size: int | None = None
    fsck: str = ""

    def lun_fields(self) -> dict[str, Any]:
        """The create-iscsi-lun fields these parameters set (striping is the target's, see TargetPool)."""
        out: dict[str, Any] = {}
        if self.thin_provision is not None:
            out["thin_provision"] = self.thin_provision
        if self.iops is not None:
            out["iops"] = self.iops
        if self.bps is not None:
            out["bps"] = self.bps
        return out


def _whole(key: str, value: str) -> int:
    text = value.strip()
    if not text.isdigit():
        raise invalid(f"parameter {key!r} must be a whole number, got {value[:40]!r}")
    return int(text)


def _int(key: str, value: str, lo: int, hi: int) -> int:
    n = _whole(key, value)
    if not lo <= n <= hi:
        raise invalid(f"parameter {key!r} must be within {lo}..{hi}, got {n}")
    return n


def _qos(out: dict[str, Any], key: str, value: str) -> None:
    if key == "iops":
        out["iops"] = _int(key, value, 0, MAX_IOPS)
    else:
        out["bps"] = _int(key, value, 0, MAX_BPS)


def _replicas(key: str, value: str) -> int:
    return validate_replica_num(_whole(key, value), key)


def _thin(key: str, value: str) -> bool:
    return parse_bool(value, key)


# StorageClass key -> (VolumeParams field, the shared client's rule for its value).
_ZBS_RULES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "replication.n": ("replica_num", _replicas),
    "thinProvisioning": ("thin_provision", _thin),
    "stripeNum": ("stripe_num", lambda key, value: validate_stripe_num(_whole(key, value), key)),
    "stripeSize": ("stripe_size", lambda key, value: validate_stripe_size(value.strip(), key)),
    # SmartX's ZBS CSI driver's names (its docs: "1"/"2"/"3", default "2"; "true"/"false", default "true").
    "replicaFactor": ("replica_num", _replicas),
    "thinProvision": ("thin_provision", _thin),
}


def parse_volume_params(params: dict[str, str]) -> VolumeParams:
    out: dict[str, Any] = {}
    set_by: dict[str, str] = {}
    for key, value in sorted(params.items()):
        if key in PROVISIONER_METADATA:
            continue
        if key == FSTYPE_KEY:
            if value and value not in FS_TYPES:
                raise invalid(f"parameter {key!r} must be one of {', '.join(FS_TYPES)}, got {value[:40]!r}")
            out["fs_type"] = value
        elif key == "fsck":
            if value not in ("", "off", "preen"):
                raise invalid(f"parameter {key!r} must be off or preen, got {value[:40]!r}")
            out["fsck"] = "" if value == "off" else value
        elif key in ("iops", "throughput"):
            _qos(out, key, value)
        elif key in _ZBS_RULES:
            field, rule = _ZBS_RULES[key]
            try:
                parsed = rule(key, value)
            except zerr.ZbsValidationError as exc:
                raise invalid(f"parameter {key!r}: {exc.rule}") from None
            if field in set_by and out[field] != parsed:
                raise invalid(
                    f"parameters {set_by[field]!r} and {key!r} are two spellings of one setting "
                    f"and disagree ({out[field]} vs {parsed}): keep one"
                )
            out[field], set_by[field] = parsed, key
        else:
            raise invalid(f"unknown parameter {key[:80]!r}")
    return VolumeParams(**out)


def k8s_objects(params: dict[str, str]) -> dict[str, str]:
    """The Kubernetes objects a request is for, from the sidecars' metadata keys, as log fields."""
    out = {}
    if params.get(PVC_NAME_KEY):
        out["pvc"] = f"{params.get(PVC_NAMESPACE_KEY, '')}/{params[PVC_NAME_KEY]}"
    if params.get(PV_NAME_KEY):
        out["pv"] = params[PV_NAME_KEY]
    if params.get(SNAPSHOT_NAME_KEY):
        out["volumesnapshot"] = f"{params.get(SNAPSHOT_NAMESPACE_KEY, '')}/{params[SNAPSHOT_NAME_KEY]}"
    if params.get(SNAPSHOT_CONTENT_KEY):
        out["volumesnapshotcontent"] = params[SNAPSHOT_CONTENT_KEY]
    return out


def parse_snapshot_params(params: dict[str, str]) -> None:
    """CreateSnapshot's parameters (VolumeSnapshotClass ``parameters``): none of ours exist yet,
    so anything but the snapshotter's metadata is refused, naming the key."""
    for key in sorted(params):
        if key not in SNAPSHOTTER_METADATA:
            raise invalid(f"unknown snapshot parameter {key[:80]!r}")


def parse_mutable_params(params: dict[str, str]) -> dict[str, int]:
    """ControllerModifyVolume's parameters: only QoS may change on a live volume."""
    out: dict[str, Any] = {}
    for key, value in sorted(params.items()):
        if key in PROVISIONER_METADATA:
            continue
        if key not in ("iops", "throughput"):
            raise invalid(f"unknown or immutable parameter {key[:80]!r} (mutable: iops, throughput)")
        _qos(out, key, value)
    return out
