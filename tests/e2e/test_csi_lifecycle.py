"""The full volume lifecycle through the real gRPC sockets, playing the sidecars and kubelet.

create -> publish -> stage -> publish -> write checksummed data -> snapshot -> restore to a
new volume -> clone -> expand online -> fail over to node B (unpublishing node A fences it:
A's live session can no longer read the LUN) -> checksums verified on B -> unwind, deleting
the volume before its snapshot -> nothing left: no LUN, no iSCSI session, loop device,
qemu-storage-daemon, mount or state file.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from csi_harness import NODE_A, NODE_B, Cluster, GiB, Kubelet, digest, host_leftovers, mount_cap, sync_fs, write_data
from zbs_csi.proto import csi_pb2 as csi


def create(c: Cluster, name: str, size: int, source: csi.VolumeContentSource | None = None) -> csi.Volume:
    req = csi.CreateVolumeRequest(
        name=name,
        capacity_range=csi.CapacityRange(required_bytes=size),
        volume_capabilities=[mount_cap()],
        parameters={"csi.storage.k8s.io/pvc/name": name, "thinProvisioning": "true"},
    )
    if source is not None:
        req.volume_content_source.CopyFrom(source)
    return c.ctrl.controller.CreateVolume(req, timeout=300).volume


def read_direct(device: str, offset: int) -> bytes:
    """One 4 KiB read that bypasses the page cache, so it really goes to the LUN."""
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    try:
        import mmap

        buf = mmap.mmap(-1, 4096)
        os.preadv(fd, [buf], offset)
        return bytes(buf)
    finally:
        os.close(fd)


def stage_record(plugin_state: Path, volume_id: str) -> dict:
    import json

    return json.loads((plugin_state / "volumes" / f"{volume_id}.json").read_text())


def test_full_lifecycle_with_failover(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    a = Kubelet(c, NODE_A, tmp_path)
    b = Kubelet(c, NODE_B, tmp_path)
    cap = mount_cap("xfs")  # ext4 online growth needs CAP_SYS_RESOURCE, which these VMs withhold

    # create -> publish -> stage -> publish -> write checksummed data
    vol = create(c, "pvc-e2e-data", GiB)
    assert vol.capacity_bytes == GiB
    vid = vol.volume_id
    mnt = a.attach(vid, cap, "p1")
    sums = {f"f{i}": write_data(mnt / f"f{i}", (i + 1) * 4 * 1024 * 1024) for i in range(3)}

    got = c.ctrl.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=vid), timeout=60)
    assert list(got.status.published_node_ids) == [NODE_A]
    assert not got.status.volume_condition.abnormal

    stats = c.a.node.NodeGetVolumeStats(csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(mnt)), timeout=60)
    units = {u.unit: u for u in stats.usage}
    assert units[csi.VolumeUsage.BYTES].used >= 24 * 1024 * 1024
    assert units[csi.VolumeUsage.INODES].used > 0
    assert not stats.volume_condition.abnormal

    # snapshot -> restore to a new volume, and clone the live volume
    sync_fs(mnt)
    snap = c.ctrl.controller.CreateSnapshot(
        # the keys csi-snapshotter --extra-create-metadata adds, as the zbs_csi role runs it
        csi.CreateSnapshotRequest(
            name="snap-e2e",
            source_volume_id=vid,
            parameters={
                "csi.storage.k8s.io/volumesnapshot/name": "snap",
                "csi.storage.k8s.io/volumesnapshot/namespace": "apps",
                "csi.storage.k8s.io/volumesnapshotcontent/name": "snapcontent-1",
            },
        ),
        timeout=120,
    ).snapshot
    assert snap.source_volume_id == vid and snap.ready_to_use and snap.size_bytes == GiB
    got_snap = c.ctrl.controller.GetSnapshot(csi.GetSnapshotRequest(snapshot_id=snap.snapshot_id), timeout=60)
    assert got_snap.snapshot.snapshot_id == snap.snapshot_id
    write_data(mnt / "after-snapshot", 1024 * 1024)

    src = csi.VolumeContentSource()
    src.snapshot.snapshot_id = snap.snapshot_id
    restored = create(c, "pvc-e2e-restored", GiB, src)
    rmnt = a.attach(restored.volume_id, cap, "p2")
    assert {n: digest(rmnt / n) for n in sums} == sums
    assert not (rmnt / "after-snapshot").exists(), "the restore must hold the snapshot's content, not today's"
    a.detach(restored.volume_id, "p2")

    src = csi.VolumeContentSource()
    src.volume.volume_id = vid
    clone = create(c, "pvc-e2e-clone", GiB, src)
    cmnt = a.attach(clone.volume_id, cap, "p3")
    assert {n: digest(cmnt / n) for n in sums} == sums
    a.detach(clone.volume_id, "p3")

    # expand online: the filesystem grows while mounted and the data stays
    exp = c.ctrl.controller.ControllerExpandVolume(
        csi.ControllerExpandVolumeRequest(volume_id=vid, capacity_range=csi.CapacityRange(required_bytes=2 * GiB)),
        timeout=120,
    )
    assert exp.capacity_bytes == 2 * GiB and exp.node_expansion_required
    before = os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize
    nexp = c.a.node.NodeExpandVolume(
        csi.NodeExpandVolumeRequest(
            volume_id=vid, volume_path=str(mnt), capacity_range=csi.CapacityRange(required_bytes=2 * GiB)
        ),
        timeout=300,
    )
    assert nexp.capacity_bytes == 2 * GiB
    after = os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize
    assert after > before + GiB // 2
    assert {n: digest(mnt / n) for n in sums} == sums

    # fail over to node B: node A "dies" with its session still logged in; unpublishing A
    # fences it - the LUN masking makes A's own session fail to read.
    device = stage_record(c.a.state_dir, vid)["device"]
    assert len(read_direct(device, 0)) == 4096
    c.ctrl.controller.ControllerUnpublishVolume(
        csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE_A), timeout=120
    )
    with pytest.raises(OSError):
        read_direct(device, 1024 * 1024)
    bmnt = b.attach(vid, cap, "p4")
    assert {n: digest(bmnt / n) for n in sums} == sums
    got = c.ctrl.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=vid), timeout=60)
    assert list(got.status.published_node_ids) == [NODE_B]

    # unwind everything: A's leftovers are cleaned by its node plugin (the CO retries unstage)
    a.detach(vid, "p1", controller=False)
    b.detach(vid, "p4")
    # Kubernetes may delete a PVC while its VolumeSnapshots live on: the volume goes away for
    # CSI at once, its LUN stays (fenced, hidden) until the last snapshot is deleted.
    for v in (vid, restored.volume_id, clone.volume_id):
        c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=v), timeout=120)
    listed = c.ctrl.controller.ListVolumes(csi.ListVolumesRequest(), timeout=60)
    assert [e.volume.volume_id for e in listed.entries] == []
    assert _code(c.ctrl.controller.ControllerGetVolume, csi.ControllerGetVolumeRequest(volume_id=vid)) == (
        grpc.StatusCode.NOT_FOUND
    )
    retired = c.our_luns()
    assert [(lun["local_id"], lun["allowed_initiators"]) for lun in retired] == [(vid, "")]
    snaps = c.ctrl.controller.ListSnapshots(csi.ListSnapshotsRequest(), timeout=60).entries
    assert [(e.snapshot.snapshot_id, e.snapshot.source_volume_id) for e in snaps] == [(snap.snapshot_id, vid)]
    src = csi.VolumeContentSource()
    src.snapshot.snapshot_id = snap.snapshot_id
    late = create(c, "pvc-e2e-late-restore", GiB, src)  # restoring still works from a retired volume
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=late.volume_id), timeout=120)
    c.ctrl.controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id), timeout=120)
    assert c.our_luns() == []
    assert c.client().snapshots.list({"iscsi_target": {"name_starts_with": f"{c.prefix}-"}}) == []
    sessions = [x for x in c.client().connections.list() if x.get("initiator_iqn") in (NODE_A, NODE_B)]
    assert sessions == []
    assert host_leftovers([c.a.state_dir, c.b.state_dir], tmp_path) == []


def _code(fn, req) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        fn(req, timeout=120)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
