"""Who owns a LUN, a snapshot or a target: the one place that reads and writes the driver's names.

Several Kubernetes clusters may share one ZBS (SmartX's driver requires a unique ``clusterID``
per cluster for that reason). Everything this driver creates carries its Kubernetes cluster
id ``C`` in its name, in a form no other cluster's driver and no ``lun_name_for`` output can
take:

- targets: ``<prefix>-<C>.<NNNN>`` (CHAP classes: ``<prefix>-<C>.<class>.<NNNN>``, see
  :func:`chap_class`), described as ``zbs-csi: volumes of Kubernetes cluster <C>``;
- LUNs and snapshots: ``<C>.<lun_name_for(csi name)>``; a retired LUN (deleted while it still
  has snapshots): ``<C>.trash.<volume id>``.

Cluster ids hold no ``.``, so the first ``.`` ends the id in every name. Targets named
``<prefix>-<NNNN>`` were made by drivers before cluster ids ("legacy"); their LUNs are adopted
one by one, on first touch, when the driver runs with ``adopt_legacy`` (the LUN is renamed
``<C>.<old name>``). A LUN that is in no target of ours and carries no id is *foreign*: a
static volume (made with ``smartx.zbs.zbs_lun`` or by SmartX's driver) that the driver may
publish, stage and expand but never deletes.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .ids import lun_name_for

CLUSTER_ID_MAX = 32
_CLUSTER_ID = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_LEGACY_TRASH = re.compile(r"^trash-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
_DESCRIPTION = re.compile(r"zbs-csi: volumes of Kubernetes cluster ([a-z0-9-]+)")
TRASH = "trash"


def check_cluster_id(value: str) -> str:
    """A Kubernetes cluster id: 1-32 lower-case letters, digits and inner ``-`` (it names targets)."""
    if not value or len(value) > CLUSTER_ID_MAX or not _CLUSTER_ID.match(value):
        raise ValueError(
            f"kubernetes_cluster_id must be 1-{CLUSTER_ID_MAX} lower-case letters, digits and '-' "
            f"(not first or last), got {value[:80]!r}"
        )
    return value


def chap_class(username: str, username_in: str = "") -> str:
    """The target class of volumes whose StorageClass logs in with these CHAP user names.

    Volumes of one class share targets; other classes never do, so two StorageClasses with
    different CHAP credentials never meet on one target (ZBS keeps one CHAP entry per
    initiator and target, and one set of target credentials for mutual CHAP). Only the user
    names go in (they travel in clear text in every login anyway), never a secret.
    """
    return "c" + hashlib.sha256(f"{username}\0{username_in}".encode()).hexdigest()[:8]


class Owner(enum.Enum):
    MINE = "mine"  # made (or adopted) by this cluster's driver
    LEGACY = "legacy"  # made by a driver without cluster ids, not adopted yet
    OTHER = "other"  # another Kubernetes cluster's
    FOREIGN = "foreign"  # not made by any zbs-csi: a static volume


@dataclass(frozen=True)
class TargetName:
    counter: int
    chap_class: str = ""


@dataclass(frozen=True)
class Ownership:
    owner: Owner
    cluster_id: str = ""  # the other cluster, for OTHER
    retired: bool = False


class Naming:
    """Names of the targets, LUNs and snapshots of one Kubernetes cluster's driver."""

    def __init__(self, prefix: str, cluster_id: str) -> None:
        self.prefix = prefix.lower()
        self.cluster_id = check_cluster_id(cluster_id)
        p = re.escape(self.prefix)
        self._mine_target = re.compile(rf"^{p}-{re.escape(self.cluster_id)}\.(?:(c[0-9a-f]{{8}})\.)?(\d{{4,}})$")
        self._any_cluster = re.compile(rf"^{p}-([a-z0-9-]+)\.(?:c[0-9a-f]{{8}}\.)?\d{{4,}}$")
        self._legacy = re.compile(rf"^{p}-(\d+)$")
        self.target_prefix = f"{self.prefix}-{self.cluster_id}."
        self.name_prefix = f"{self.cluster_id}."

    # ------------------------------------------------------------------ targets
    def target_name(self, counter: int, chap_class: str = "") -> str:
        middle = f"{chap_class}." if chap_class else ""
        return f"{self.target_prefix}{middle}{counter:04d}"

    @property
    def target_description(self) -> str:
        return f"zbs-csi: volumes of Kubernetes cluster {self.cluster_id}; LUNs are Kubernetes volumes"

    def parse_target(self, name: str) -> TargetName | None:
        """Counter and CHAP class of one of our targets; None for any other target."""
        m = self._mine_target.match(name or "")
        return TargetName(int(m[2]), m[1] or "") if m else None

    def is_legacy_target(self, name: str) -> bool:
        return bool(self._legacy.match(name or ""))

    def target_owner(self, target: dict[str, Any]) -> Ownership:
        name = str(target.get("name") or "")
        if self.parse_target(name) is not None:
            return Ownership(Owner.MINE)
        if self.is_legacy_target(name):
            return Ownership(Owner.LEGACY)
        m = self._any_cluster.match(name) or _DESCRIPTION.search(str(target.get("description") or ""))
        if m and m[1] != self.cluster_id:
            return Ownership(Owner.OTHER, m[1])
        return Ownership(Owner.FOREIGN)

    # ------------------------------------------------------------------ LUNs and snapshots
    def lun_name(self, csi_name: str) -> str:
        return self.name_prefix + lun_name_for(csi_name)

    def trash_name(self, volume_id: str) -> str:
        return f"{self.name_prefix}{TRASH}.{volume_id}"

    def adopted_name(self, legacy_name: str) -> str:
        """The name a legacy LUN takes when this cluster adopts it."""
        m = _LEGACY_TRASH.match(legacy_name)
        return self.trash_name(m[1]) if m else self.name_prefix + legacy_name

    @staticmethod
    def _name_cluster(name: str) -> str:
        head, dot, _ = name.partition(".")
        return head if dot and _CLUSTER_ID.match(head) and len(head) <= CLUSTER_ID_MAX else ""

    def classify_lun(self, lun: dict[str, Any]) -> Ownership:
        """Who owns a LUN. The driver never creates LUNs in other targets, so a LUN there is foreign."""
        return self._classify(lun, snapshot=False)

    def classify_snapshot(self, snap: dict[str, Any]) -> Ownership:
        """Who owns a snapshot: ours also in an admin's target when we took it of a static volume."""
        return self._classify(snap, snapshot=True)

    def _classify(self, obj: dict[str, Any], *, snapshot: bool) -> Ownership:
        name = str(obj.get("name") or "")
        t = self.target_owner(obj.get("iscsi_target") or {})
        if t.owner is Owner.OTHER:
            return t
        if t.owner is Owner.FOREIGN:
            # An admin's names are not parsed for cluster ids.
            return self._owned(name) if snapshot and name.startswith(self.name_prefix) else Ownership(Owner.FOREIGN)
        owner = self._name_cluster(name)
        if owner == self.cluster_id:
            return self._owned(name)
        if owner:
            return Ownership(Owner.OTHER, owner)
        # No id in the name: in one of our targets it was put there by hand (not ours to
        # delete); in a legacy target it waits for adoption.
        if t.owner is Owner.MINE:
            return Ownership(Owner.FOREIGN)
        return Ownership(Owner.LEGACY, retired=bool(_LEGACY_TRASH.match(name)))

    def _owned(self, name: str) -> Ownership:
        return Ownership(Owner.MINE, retired=name.startswith(f"{self.name_prefix}{TRASH}."))
