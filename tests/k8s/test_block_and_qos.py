"""Raw block volumes and QoS through a VolumeAttributesClass, checked in Kubernetes and in the
bytes and settings zbs-lite holds."""

from __future__ import annotations

import hashlib
from typing import Any

from kube import Lab, pod, pvc, wait_for
from test_volumes import bound_pv, masked_to, node_iqn, volume_handle


def test_raw_block_volume_is_read_and_written_by_a_pod(lab: Lab, ns: str) -> None:
    lab.apply(pvc("raw", ns, block=True), pod("raw", ns, lab.workload_image, "raw", block=True))
    lab.wait_running("raw", ns)
    pv = lab.get("pv", bound_pv(lab, "raw", ns))
    assert pv["spec"]["volumeMode"] == "Block"
    volume_id = volume_handle(lab, pv["metadata"]["name"])
    assert masked_to(lab, volume_id) == [node_iqn(lab)]

    assert int(lab.exec("raw", ns, "blockdev --getsize64 /dev/xvda")) == 1024**3
    out = lab.exec(
        "raw",
        ns,
        "dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null"
        " && dd if=/tmp/pattern of=/dev/xvda bs=1M conv=fsync 2>/dev/null"
        " && md5sum /tmp/pattern && dd if=/dev/xvda bs=1M count=4 2>/dev/null | md5sum",
    ).split()
    written, read_back = out[0], out[2]
    assert written == read_back
    # the bytes are in ZBS: the LUN's file in zbs-lite's pool holds them at offset 0
    lun_file = lab.dir / "zbs-lite/pool/luns" / volume_id
    with lun_file.open("rb") as fh:
        assert hashlib.md5(fh.read(4 * 1024**2)).hexdigest() == written

    lab.delete("pod", "raw", ns)
    wait_for("ZBS to unmask the LUN", lambda: masked_to(lab, volume_id) == [], 180)


def vac(name: str, iops: int, bps: int) -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "VolumeAttributesClass",
        "metadata": {"name": name},
        "driverName": "zbs.csi.smartx.com",
        "parameters": {"iops": str(iops), "throughput": str(bps)},
    }


def test_qos_follows_the_volume_attributes_class(lab: Lab, ns: str) -> None:
    gold, silver = f"{ns}-gold", f"{ns}-silver"
    lab.apply(vac(gold, 2000, 100 << 20), vac(silver, 500, 20 << 20))
    try:
        lab.apply(pvc("db", ns, vac=silver), pod("db", ns, lab.workload_image, "db"))
        lab.wait_running("db", ns)
        volume_id = volume_handle(lab, bound_pv(lab, "db", ns))

        def qos() -> tuple[int, int]:
            lun = lab.lun(volume_id)
            assert lun is not None
            return int(lun.get("iops") or 0), int(lun.get("bps") or 0)

        assert qos() == (500, 20 << 20)  # CreateVolume's mutable parameters
        lab.kubectl(
            "patch", "pvc", "db", "-n", ns, "--type=merge", "-p", f'{{"spec":{{"volumeAttributesClassName":"{gold}"}}}}'
        )

        def modified() -> bool:
            status = lab.get("pvc", "db", ns)["status"]
            return status.get("currentVolumeAttributesClassName") == gold and "modifyVolumeStatus" not in status

        try:
            wait_for("the PVC to report the new VolumeAttributesClass", modified, 180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{lab.events(ns)}") from exc
        assert qos() == (2000, 100 << 20)  # ControllerModifyVolume on the live volume
        assert lab.get("pod", "db", ns)["status"]["containerStatuses"][0]["restartCount"] == 0
    finally:
        lab.delete("namespace", ns)
        for name in (gold, silver):
            lab.delete("volumeattributesclass", name)
