"""Concurrency through the real socket: racing creates of one name, and many volumes at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from csi_harness import NODE_A, Cluster, DriverProcess, GiB, host_leftovers, mount_cap
from zbs_csi.proto import csi_pb2 as csi


def _create(c: DriverProcess, name: str) -> tuple[grpc.StatusCode, str]:
    req = csi.CreateVolumeRequest(
        name=name, capacity_range=csi.CapacityRange(required_bytes=GiB), volume_capabilities=[mount_cap()]
    )
    try:
        return grpc.StatusCode.OK, c.controller.CreateVolume(req, timeout=300).volume.volume_id
    except grpc.RpcError as exc:
        return exc.code(), ""


def test_twenty_creates_of_one_name_make_one_lun(cluster: Cluster, tmp_path: Path) -> None:
    # A second controller replica on the same ZBS races the first one (leader election lost).
    second = DriverProcess(tmp_path, "controller", cluster.env, name="ctrl2").start()
    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda i: _create(cluster.ctrl if i % 2 else second, "pvc-same-name"), range(20)))
        ok_ids = {vid for code, vid in results if code == grpc.StatusCode.OK}
        assert {code for code, _ in results} <= {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}
        assert len(ok_ids) == 1, results
        luns = cluster.our_luns()
        assert [lun["local_id"] for lun in luns] == list(ok_ids)
        # and a retry after the storm is answered from the existing LUN
        code, vid = _create(cluster.ctrl, "pvc-same-name")
        assert (code, vid) == (grpc.StatusCode.OK, ok_ids.pop())
        cluster.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=120)
    finally:
        second.stop()
    assert cluster.our_luns() == []


@pytest.mark.parametrize("luns_per_target", [16])
def test_fifty_volumes_at_once(cluster: Cluster, tmp_path: Path, luns_per_target: int) -> None:
    # A controller that packs at most 16 LUNs per target, so the storm also creates targets.
    env = dict(cluster.env, ZBS_CSI_LUNS_PER_TARGET=str(luns_per_target))
    ctrl = DriverProcess(tmp_path, "controller", env, name="ctrl16").start()
    try:
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda i: _create(ctrl, f"pvc-storm-{i:02d}"), range(50)))
        assert [code for code, _ in results] == [grpc.StatusCode.OK] * 50
        ids = [vid for _, vid in results]
        assert len(set(ids)) == 50
        luns = cluster.our_luns()
        assert sorted(lun["local_id"] for lun in luns) == sorted(ids)
        placement = [(lun["iscsi_target"]["id"], lun["lun_id"]) for lun in luns]
        assert len(set(placement)) == 50, "two volumes share a (target, LUN id)"
        per_target: dict[str, int] = {}
        for target_id, _ in placement:
            per_target[target_id] = per_target.get(target_id, 0) + 1
        assert max(per_target.values()) <= luns_per_target
        assert len(per_target) == 50 // luns_per_target + 1

        listed, token = [], ""
        while True:
            page = ctrl.controller.ListVolumes(csi.ListVolumesRequest(max_entries=7, starting_token=token), timeout=60)
            listed += [e.volume.volume_id for e in page.entries]
            token = page.next_token
            if not token:
                break
        assert sorted(listed) == sorted(ids)

        with ThreadPoolExecutor(50) as pool:
            list(
                pool.map(lambda v: ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=v), timeout=300), ids)
            )
        assert cluster.our_luns() == []
        assert cluster.our_targets() == [], "deleting the last volume of a driver target deletes the target"
    finally:
        ctrl.stop()


def test_one_node_stages_and_unstages_many_volumes_at_once(cluster: Cluster, tmp_path: Path) -> None:
    ctl, node = cluster.ctrl.controller, cluster.a.node
    cap = mount_cap("ext4")
    ids = [_create(cluster.ctrl, f"pvc-node-{i}")[1] for i in range(8)]
    ctxs = {
        v: ctl.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(volume_id=v, node_id=NODE_A, volume_capability=cap), timeout=120
        ).publish_context
        for v in ids
    }

    def stage(v: str) -> None:
        node.NodeStageVolume(
            csi.NodeStageVolumeRequest(
                volume_id=v, staging_target_path=str(tmp_path / v), publish_context=ctxs[v], volume_capability=cap
            ),
            timeout=300,
        )
        (tmp_path / v / "id").write_text(v)

    def unstage(v: str) -> None:
        node.NodeUnstageVolume(csi.NodeUnstageVolumeRequest(volume_id=v, staging_target_path=str(tmp_path / v)))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(stage, ids))
    assert all((tmp_path / v / "id").read_text() == v for v in ids), "each staging path holds its own volume"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(unstage, ids))
    for v in ids:
        ctl.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=v, node_id=NODE_A))
        ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=v))
    assert host_leftovers([cluster.a.state_dir], tmp_path) == []
    assert cluster.our_luns() == []
