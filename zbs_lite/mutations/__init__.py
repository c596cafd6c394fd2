"""The API's mutations: each validates its body, writes its rows and tasks in one transaction, and answers.

One class per operation; :data:`MUTATIONS` maps the operation names to them.
"""

from __future__ import annotations

from zbs_lite.mutations.base import Mutation, MutationContext, run
from zbs_lite.mutations.cluster import UpdateClusterIscsi
from zbs_lite.mutations.luns import CloneLuns, CopyLuns, CreateLuns, DeleteLuns, RollbackLuns, UpdateLuns
from zbs_lite.mutations.snapshots import CreateSnapshots, DeleteSnapshots
from zbs_lite.mutations.targets import CreateTargets, DeleteTargets, UpdateTargets

MUTATIONS: dict[str, type[Mutation]] = {
    "create-iscsi-target": CreateTargets,
    "update-iscsi-target": UpdateTargets,
    "delete-iscsi-target": DeleteTargets,
    "create-iscsi-lun": CreateLuns,
    "update-iscsi-lun": UpdateLuns,
    "delete-iscsi-lun": DeleteLuns,
    "clone-iscsi-lun-from-snapshot": CloneLuns,
    "copy-iscsi-lun": CopyLuns,
    "rollback-iscsi-lun-from-snapshot": RollbackLuns,
    "create-iscsi-lun-snapshot": CreateSnapshots,
    "delete-iscsi-lun-snapshot": DeleteSnapshots,
    "update-cluster-enable-iscsi-setting": UpdateClusterIscsi,
}

__all__ = ["MUTATIONS", "Mutation", "MutationContext", "run"]
