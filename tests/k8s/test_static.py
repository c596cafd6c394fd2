"""A static volume in a real cluster: a LUN made outside the driver (as smartx.zbs.zbs_lun or
SmartX's own driver would make it) becomes a PersistentVolume by its local_id; a pod writes to
it; deleting the PVC and PV (Retain) leaves the LUN and its data in ZBS; a new PV imports it
again and the next pod reads what the first wrote (docs/csi-driver.md, "Static volumes")."""

from __future__ import annotations

import secrets
from typing import Any

from kube import DRIVER, GiB, Lab, pod, wait_for
from test_volumes import attachment, masked_to, md5, node_iqn


def static_pv(name: str, volume_id: str, ns: str, claim: str) -> dict[str, Any]:
    """The docs' recipe, pre-bound to ``claim`` so no other PVC can take it."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": ns, "name": claim},
            "csi": {"driver": DRIVER, "volumeHandle": volume_id, "fsType": "xfs"},
        },
    }


def static_pvc(name: str, ns: str, pv: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def test_a_lun_made_outside_the_driver_is_used_kept_and_imported_again(lab: Lab, ns: str) -> None:
    zbs = lab.zbs()
    target = zbs.targets.create(f"static-{secrets.token_hex(3)}", iqn_whitelist="*/*")
    lun = zbs.luns.create("db", target["id"], GiB)
    volume_id = lun["local_id"]
    pv_names = (f"{ns}-first", f"{ns}-again")
    try:
        lab.apply(static_pv(pv_names[0], volume_id, ns, "db"), static_pvc("db", ns, pv_names[0]))
        lab.apply(pod("writer", ns, lab.workload_image, "db"))
        lab.wait_running("writer", ns)
        assert masked_to(lab, volume_id) == [node_iqn(lab)], "publish masks the LUN to the node"
        lab.exec("writer", ns, "dd if=/dev/urandom of=/data/blob bs=1M count=4 2>/dev/null && sync -f /data")
        digest = md5(lab, "writer", ns, "/data/blob")

        # The PVC and the Retain PV go: Kubernetes forgets the volume, ZBS keeps the LUN.
        lab.delete("pod", "writer", ns)
        wait_for("the VolumeAttachment to be removed", lambda: attachment(lab, pv_names[0]) is None, 180)
        lab.delete("pvc", "db", ns)
        lab.delete("pv", pv_names[0])
        kept = zbs.luns.get(local_id=volume_id)
        assert kept is not None and kept["name"] == "db" and kept["iscsi_target"]["id"] == target["id"]
        assert masked_to(lab, volume_id) == [], "unpublish took the node off the LUN"

        # Imported again under a new PV: the next pod reads the first pod's data.
        lab.apply(static_pv(pv_names[1], volume_id, ns, "db"), static_pvc("db", ns, pv_names[1]))
        lab.apply(pod("reader", ns, lab.workload_image, "db"))
        lab.wait_running("reader", ns)
        assert md5(lab, "reader", ns, "/data/blob") == digest
        lab.delete("pod", "reader", ns)
        wait_for("the VolumeAttachment to be removed", lambda: attachment(lab, pv_names[1]) is None, 180)
    finally:
        lab.kubectl("delete", "namespace", ns, "--ignore-not-found", "--timeout=300s", timeout=330)
        for name in pv_names:
            lab.delete("pv", name)
        zbs.luns.delete(lun["id"])
        zbs.targets.delete(target["id"])
    wait_for("the host to hold no mount, loop device or qemu process", lambda: not lab.host_leftovers(), 60)
