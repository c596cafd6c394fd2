"""Node behaviours beyond the happy path: raw block shared by two nodes, read-only publish,
a LUN id reused by another volume, an interrupted stage undone at start, Probe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import pytest
from csi_harness import (
    NODE_A,
    NODE_B,
    Cluster,
    DriverProcess,
    GiB,
    Mode,
    block_cap,
    clean_env,
    code_of,
    host_leftovers,
    mount_cap,
    sync_fs,
)
from zbs_csi.proto import csi_pb2 as csi


def _create(c: Cluster, name: str, cap: csi.VolumeCapability) -> str:
    return c.ctrl.controller.CreateVolume(
        csi.CreateVolumeRequest(
            name=name, capacity_range=csi.CapacityRange(required_bytes=GiB), volume_capabilities=[cap]
        ),
        timeout=300,
    ).volume.volume_id


def _publish(c: Cluster, vid: str, node: str, cap: csi.VolumeCapability, readonly: bool = False) -> dict[str, str]:
    return dict(
        c.ctrl.controller.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=node, volume_capability=cap, readonly=readonly),
            timeout=120,
        ).publish_context
    )


def _stage(plugin: DriverProcess, vid: str, stage: Path, ctx: dict[str, str], cap: csi.VolumeCapability) -> None:
    plugin.node.NodeStageVolume(
        csi.NodeStageVolumeRequest(
            volume_id=vid, staging_target_path=str(stage), publish_context=ctx, volume_capability=cap
        ),
        timeout=300,
    )


def _node_publish(
    plugin: DriverProcess, vid: str, stage: Path, target: Path, cap: csi.VolumeCapability, readonly: bool = False
) -> None:
    plugin.node.NodePublishVolume(
        csi.NodePublishVolumeRequest(
            volume_id=vid,
            staging_target_path=str(stage),
            target_path=str(target),
            volume_capability=cap,
            readonly=readonly,
        ),
        timeout=120,
    )


def _teardown(c: Cluster, plugin: DriverProcess, node: str, vid: str, stage: Path, target: Path | None) -> None:
    if target is not None:
        plugin.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(target)))
    plugin.node.NodeUnstageVolume(csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(stage)))
    c.ctrl.controller.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=node))


def test_raw_block_shared_by_two_nodes(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    cap = block_cap(Mode.MULTI_NODE_MULTI_WRITER)
    vid = _create(c, "pvc-shared-block", cap)
    paths = {}
    for plugin, node in ((c.a, NODE_A), (c.b, NODE_B)):
        ctx = _publish(c, vid, node, cap)
        stage, target = tmp_path / f"stage-{plugin.name}", tmp_path / f"pod-{plugin.name}" / "dev"
        _stage(plugin, vid, stage, ctx, cap)
        _node_publish(plugin, vid, stage, target, cap)
        paths[plugin.name] = (stage, target)
    block = os.urandom(4096)
    fd = os.open(paths["node-a"][1], os.O_WRONLY | os.O_DIRECT)
    try:
        import mmap

        buf = mmap.mmap(-1, 4096)
        buf.write(block)
        os.pwritev(fd, [buf], 8192)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(paths["node-b"][1], os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 4096)
        os.preadv(fd, [buf], 8192)
    finally:
        os.close(fd)
    assert bytes(buf) == block, "node B reads what node A wrote to the shared LUN"
    got = c.ctrl.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=vid))
    assert sorted(got.status.published_node_ids) == sorted([NODE_A, NODE_B])
    stats = c.a.node.NodeGetVolumeStats(
        csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(paths["node-a"][1]))
    )
    assert stats.usage[0].total == GiB
    for plugin, node in ((c.a, NODE_A), (c.b, NODE_B)):
        _teardown(c, plugin, node, vid, *paths[plugin.name])
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert host_leftovers([c.a.state_dir, c.b.state_dir], tmp_path) == []


def test_readonly_publish_and_single_node_conflicts(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    cap = mount_cap("ext4", Mode.SINGLE_NODE_MULTI_WRITER)  # ReadWriteOnce: two pods on one node
    vid = _create(c, "pvc-ro", cap)
    ctx = _publish(c, vid, NODE_A, cap)
    assert (
        code_of(
            c.ctrl.controller.ControllerPublishVolume,
            csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE_B, volume_capability=cap),
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    ), "a single-node volume published elsewhere"
    assert (
        code_of(
            c.ctrl.controller.ControllerPublishVolume,
            csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE_A, volume_capability=cap, readonly=True),
        )
        == grpc.StatusCode.ALREADY_EXISTS
    )
    stage = tmp_path / "stage"
    _stage(c.a, vid, stage, ctx, cap)
    rw, ro = tmp_path / "rw" / "m", tmp_path / "ro" / "m"
    _node_publish(c.a, vid, stage, rw, cap)
    _node_publish(c.a, vid, stage, ro, cap, readonly=True)
    (rw / "f").write_text("x")
    assert (ro / "f").read_text() == "x"
    try:
        (ro / "g").write_text("y")
        raise AssertionError("a read-only publish accepted a write")
    except OSError as exc:
        assert exc.errno == 30  # EROFS
    assert (
        code_of(
            c.a.node.NodePublishVolume,
            csi.NodePublishVolumeRequest(
                volume_id=vid,
                staging_target_path=str(stage),
                target_path=str(ro),
                volume_capability=cap,
                readonly=False,
            ),
        )
        == grpc.StatusCode.ALREADY_EXISTS
    )
    c.a.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(ro)))
    _teardown(c, c.a, NODE_A, vid, stage, rw)
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert host_leftovers([c.a.state_dir], tmp_path) == []


def test_a_lun_id_reused_by_another_volume_is_not_mounted(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    cap = mount_cap("ext4")
    old = _create(c, "pvc-old", cap)
    old_ctx = _publish(c, old, NODE_A, cap)
    c.ctrl.controller.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=old, node_id=NODE_A))
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=old))
    new = _create(c, "pvc-new", cap)
    new_ctx = _publish(c, new, NODE_A, cap)
    assert (new_ctx["targetIqn"], new_ctx["lun"]) == (old_ctx["targetIqn"], old_ctx["lun"]), "the LUN id was reused"
    # A stale stage for the deleted volume reaches the new volume's LUN: identity check refuses it.
    assert (
        code_of(
            c.a.node.NodeStageVolume,
            csi.NodeStageVolumeRequest(
                volume_id=old,
                staging_target_path=str(tmp_path / "stale"),
                publish_context=old_ctx,
                volume_capability=cap,
            ),
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert host_leftovers([c.a.state_dir], tmp_path) == []
    c.ctrl.controller.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=new, node_id=NODE_A))
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=new))


def test_an_interrupted_stage_is_undone_when_the_plugin_starts(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    cap = mount_cap("ext4")
    vid = _create(c, "pvc-interrupted", cap)
    ctx = _publish(c, vid, NODE_A, cap)
    stage = tmp_path / "stage"
    _stage(c.a, vid, stage, ctx, cap)
    c.a.kill()
    # Make it look like the plugin died in the middle of NodeStage (attached, not finished).
    record = c.a.state_dir / "volumes" / f"{vid}.json"
    doc = json.loads(record.read_text())
    doc["complete"] = False
    record.write_text(json.dumps(doc))
    c.a.start()
    assert host_leftovers([c.a.state_dir], tmp_path) == [], "the half-done stage was undone at start"
    _stage(c.a, vid, stage, ctx, cap)  # and the CO's retry stages it afresh
    _teardown(c, c.a, NODE_A, vid, stage, None)
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert host_leftovers([c.a.state_dir], tmp_path) == []


def test_probe_fails_when_the_zbs_api_is_unreachable(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.ctrl.identity.Probe(csi.ProbeRequest()).ready.value
    assert cluster.a.identity.Probe(csi.ProbeRequest()).ready.value
    env = clean_env(dict(cluster.env, ZBS_HOST="https://127.0.0.1:1"))
    broken = DriverProcess(tmp_path, "controller", env, name="broken").start()
    try:
        assert code_of(broken.identity.Probe, csi.ProbeRequest()) == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        broken.stop()
    refused = DriverProcess(
        tmp_path, "controller", clean_env(dict(cluster.env, ZBS_PASSWORD="not-the-password")), name="refused"
    ).start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            refused.identity.Probe(csi.ProbeRequest(), timeout=120)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "refused the driver's credentials" in err.value.details()
        assert "unreachable" not in err.value.details(), "a 401 is not a network problem"
    finally:
        refused.stop()
    bad = DriverProcess(tmp_path, "node", env, node_id="not an iqn", name="bad-iqn")
    try:
        bad.start()
        raise AssertionError("a node plugin started with a malformed IQN")
    except RuntimeError as exc:
        assert "not a valid initiator IQN" in str(exc)


def test_a_stage_whose_attachment_died_is_staged_again(cluster: Cluster, tmp_path: Path) -> None:
    """What a node reboot leaves: a stage record whose daemon, loop device and mounts are gone."""
    import signal
    import subprocess

    c = cluster
    cap = mount_cap("ext4")
    vid = _create(c, "pvc-reboot", cap)
    ctx = _publish(c, vid, NODE_A, cap)
    stage = tmp_path / "stage"
    _stage(c.a, vid, stage, ctx, cap)
    (stage / "kept").write_text("across the reboot")
    sync_fs(stage)
    c.a.kill()
    record = json.loads((c.a.state_dir / "volumes" / f"{vid}.json").read_text())
    os.kill(record["attach"]["pid"], signal.SIGKILL)
    subprocess.run(["umount", "--lazy", str(stage)], check=True, timeout=30)
    subprocess.run(["losetup", "--detach", record["attach"]["loop"]], check=False, timeout=30)
    c.a.start()
    _stage(c.a, vid, stage, ctx, cap)
    assert (stage / "kept").read_text() == "across the reboot"
    stats = c.a.node.NodeGetVolumeStats(csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(stage)))
    assert not stats.volume_condition.abnormal
    _teardown(c, c.a, NODE_A, vid, stage, None)
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert host_leftovers([c.a.state_dir], tmp_path) == []


def test_io_survives_the_loss_of_the_chunk_serving_the_session(cluster: Cluster, tmp_path: Path) -> None:
    """A chunk server dies: the session reconnects through the VIP to a live chunk, I/O resumes."""
    import hashlib

    c = cluster
    cap = mount_cap("xfs")
    vid = _create(c, "pvc-chunk-loss", cap)
    ctx = _publish(c, vid, NODE_A, cap)
    stage = tmp_path / "stage"
    _stage(c.a, vid, stage, ctx, cap)
    busy = [ch["n"] for ch in c.zl.status()["data_plane"]["chunks"] if ch["sessions"]]
    assert busy, "the staged volume has a session on some chunk"
    first = os.urandom(1 << 20)
    (stage / "before").write_bytes(first)
    sync_fs(stage)
    for n in busy:
        c.zl.chunk_stop(n)
    try:
        data = os.urandom(4 << 20)
        with open(stage / "after", "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # blocks until the initiator is back on a live chunk
    finally:
        for n in busy:
            c.zl.chunk_start(n)
    assert hashlib.sha256((stage / "after").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (stage / "before").read_bytes() == first
    _teardown(c, c.a, NODE_A, vid, stage, None)
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert host_leftovers([c.a.state_dir], tmp_path) == []


def test_max_volumes_per_node(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    small = DriverProcess(
        tmp_path, "node", dict(c.env, ZBS_CSI_MAX_VOLUMES_PER_NODE="1"), node_id=NODE_A, name="small"
    ).start()
    try:
        assert small.node.NodeGetInfo(csi.NodeGetInfoRequest()).max_volumes_per_node == 1
        cap = block_cap()
        vids = [_create(c, f"pvc-max-{i}", cap) for i in range(2)]
        ctxs = [_publish(c, v, NODE_A, cap) for v in vids]
        _stage(small, vids[0], tmp_path / "s0", ctxs[0], cap)
        assert (
            code_of(
                small.node.NodeStageVolume,
                csi.NodeStageVolumeRequest(
                    volume_id=vids[1],
                    staging_target_path=str(tmp_path / "s1"),
                    publish_context=ctxs[1],
                    volume_capability=cap,
                ),
            )
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        small.node.NodeUnstageVolume(
            csi.NodeUnstageVolumeRequest(volume_id=vids[0], staging_target_path=str(tmp_path / "s0"))
        )
        for v in vids:
            c.ctrl.controller.ControllerUnpublishVolume(
                csi.ControllerUnpublishVolumeRequest(volume_id=v, node_id=NODE_A)
            )
            c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=v))
    finally:
        small.stop()
    assert host_leftovers([small.state_dir], tmp_path) == []


def test_qos_from_the_storage_class_and_modify_volume(cluster: Cluster) -> None:
    c = cluster
    vid = c.ctrl.controller.CreateVolume(
        csi.CreateVolumeRequest(
            name="pvc-qos",
            volume_capabilities=[mount_cap()],
            parameters={"iops": "1000", "throughput": str(50 << 20)},
        )
    ).volume.volume_id
    lun = c.client().luns.get(local_id=vid)
    assert (lun["iops"], lun["bps"]) == (1000, 50 << 20)
    c.ctrl.controller.ControllerModifyVolume(
        # with the keys external-resizer --extra-modify-metadata adds
        csi.ControllerModifyVolumeRequest(
            volume_id=vid,
            mutable_parameters={
                "iops": "2500",
                "csi.storage.k8s.io/pvc/name": "db",
                "csi.storage.k8s.io/pvc/namespace": "apps",
                "csi.storage.k8s.io/pv/name": "pvc-1",
            },
        )
    )
    lun = c.client().luns.get(local_id=vid)
    assert (lun["iops"], lun["bps"]) == (2500, 50 << 20)
    assert (
        code_of(
            c.ctrl.controller.ControllerModifyVolume,
            csi.ControllerModifyVolumeRequest(volume_id=vid, mutable_parameters={"stripeNum": "2"}),
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))


def test_controller_refuses_publishing_beyond_the_attach_limit(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    ctrl = DriverProcess(tmp_path, "controller", dict(c.env, ZBS_CSI_MAX_VOLUMES_PER_NODE="2"), name="ctrl-max").start()
    try:
        cap = block_cap()
        vids = [_create(c, f"pvc-limit-{i}", cap) for i in range(3)]
        publish = [csi.ControllerPublishVolumeRequest(volume_id=v, node_id=NODE_A, volume_capability=cap) for v in vids]
        assert [code_of(ctrl.controller.ControllerPublishVolume, r) for r in publish] == [
            grpc.StatusCode.OK,
            grpc.StatusCode.OK,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ]
        assert code_of(ctrl.controller.ControllerPublishVolume, publish[0]) == grpc.StatusCode.OK  # idempotent
        assert (
            code_of(
                ctrl.controller.ControllerPublishVolume,
                csi.ControllerPublishVolumeRequest(volume_id=vids[2], node_id=NODE_B, volume_capability=cap),
            )
            == grpc.StatusCode.OK
        ), "the limit is per node"
        for v in vids:
            ctrl.controller.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=v))
            ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=v))
    finally:
        ctrl.stop()
    assert c.our_luns() == []


def test_fsck_preen_runs_only_when_the_storage_class_asks(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    cap = mount_cap("ext4")
    vols = {}
    for name, params in (("pvc-preen", {"fsck": "preen"}), ("pvc-nopreen", {})):
        vol = c.ctrl.controller.CreateVolume(
            csi.CreateVolumeRequest(name=name, volume_capabilities=[cap], parameters=params)
        ).volume
        vols[name] = vol
    assert vols["pvc-preen"].volume_context["fsck"] == "preen" and "fsck" not in vols["pvc-nopreen"].volume_context
    for name, vol in vols.items():
        ctx = _publish(c, vol.volume_id, NODE_A, cap)
        for _ in range(2):  # the first stage formats the blank device; the second finds ext4
            c.a.node.NodeStageVolume(
                csi.NodeStageVolumeRequest(
                    volume_id=vol.volume_id,
                    staging_target_path=str(tmp_path / name),
                    publish_context=ctx,
                    volume_capability=cap,
                    volume_context=vol.volume_context,
                ),
                timeout=300,
            )
            c.a.node.NodeUnstageVolume(
                csi.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=str(tmp_path / name))
            )
        c.ctrl.controller.ControllerUnpublishVolume(
            csi.ControllerUnpublishVolumeRequest(volume_id=vol.volume_id, node_id=NODE_A)
        )
        c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vol.volume_id))
    preened = [json.loads(line)["volume_id"] for line in c.a.log_tail(10**8).splitlines() if '"fsck preen"' in line]
    assert preened == [vols["pvc-preen"].volume_id]
