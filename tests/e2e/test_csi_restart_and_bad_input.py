"""A node plugin killed between stage and publish, and hostile or absurd input."""

from __future__ import annotations

import secrets
from pathlib import Path

import grpc
from csi_harness import NODE_A, Cluster, DriverProcess, GiB, block_cap, code_of, host_leftovers, mount_cap
from zbs_csi.proto import csi_pb2 as csi

OK = grpc.StatusCode.OK


def _volume(c: DriverProcess, name: str, **params: str) -> str:
    return c.controller.CreateVolume(
        csi.CreateVolumeRequest(
            name=name,
            capacity_range=csi.CapacityRange(required_bytes=GiB),
            volume_capabilities=[mount_cap()],
            parameters=params,
        ),
        timeout=300,
    ).volume.volume_id


def test_node_plugin_killed_between_stage_and_publish(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    vid = _volume(c.ctrl, "pvc-restart")
    cap = mount_cap("ext4")
    ctx = c.ctrl.controller.ControllerPublishVolume(
        csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE_A, volume_capability=cap), timeout=120
    ).publish_context
    stage, target = tmp_path / "stage", tmp_path / "pod" / "mount"
    c.a.node.NodeStageVolume(
        csi.NodeStageVolumeRequest(
            volume_id=vid, staging_target_path=str(stage), publish_context=ctx, volume_capability=cap
        ),
        timeout=300,
    )
    c.a.kill()  # SIGKILL: no cleanup; the attachment (qemu-storage-daemon, loop, mount) lives on
    c.a.start()

    publish = csi.NodePublishVolumeRequest(
        volume_id=vid, staging_target_path=str(stage), target_path=str(target), volume_capability=cap
    )
    c.a.node.NodePublishVolume(publish, timeout=120)
    (target / "hello").write_text("still here")
    assert (stage / "hello").read_text() == "still here"
    stats = c.a.node.NodeGetVolumeStats(csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(target)))
    assert not stats.volume_condition.abnormal
    c.a.kill()
    c.a.start()
    c.a.node.NodePublishVolume(publish, timeout=120)  # idempotent after a restart too
    c.a.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(target)))
    c.a.node.NodeUnstageVolume(csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(stage)))
    c.ctrl.controller.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE_A))
    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert host_leftovers([c.a.state_dir], tmp_path) == []
    assert c.our_luns() == []


def test_hostile_names_ids_and_paths(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    canary = tmp_path / "pwned"
    name = f"$(touch {canary}); `touch {canary}`; rm -rf / ; ../../etc/passwd \"'\n"
    vid = _volume(c.ctrl, name)
    assert vid == _volume(c.ctrl, name), "the same hostile name is still idempotent"
    long_name = "n" * 128
    assert _volume(c.ctrl, long_name) != vid
    assert not canary.exists()

    ctl, node = c.ctrl.controller, c.a.node
    cap = mount_cap()
    assert code_of(ctl.DeleteVolume, csi.DeleteVolumeRequest(volume_id="")) == grpc.StatusCode.INVALID_ARGUMENT
    for bad in ("../../etc", "/etc/passwd", "a/../../b", "x" * 4096):
        assert code_of(ctl.DeleteVolume, csi.DeleteVolumeRequest(volume_id=bad)) == OK  # unknown id: nothing to do
        assert (
            code_of(
                ctl.ControllerPublishVolume,
                csi.ControllerPublishVolumeRequest(volume_id=bad, node_id=NODE_A, volume_capability=cap),
            )
            == grpc.StatusCode.NOT_FOUND
        )
        assert (
            code_of(
                node.NodeStageVolume,
                csi.NodeStageVolumeRequest(
                    volume_id=bad,
                    staging_target_path=str(tmp_path / "s"),
                    publish_context={
                        "portal": "127.0.0.1:1",
                        "targetIqn": "iqn.2016-02.com.smartx:system:x",
                        "lun": "1",
                    },
                    volume_capability=cap,
                ),
            )
            == grpc.StatusCode.NOT_FOUND
        )
    for node_id in ("not-an-iqn", "iqn.2026-01.com.x:a;rm -rf /", "../../x"):
        assert (
            code_of(
                ctl.ControllerPublishVolume,
                csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=node_id, volume_capability=cap),
            )
            == grpc.StatusCode.NOT_FOUND
        )
    ctx = ctl.ControllerPublishVolume(
        csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE_A, volume_capability=cap)
    ).publish_context
    for staging in ("relative/stage", f"{tmp_path}/../../etc", ""):
        assert (
            code_of(
                node.NodeStageVolume,
                csi.NodeStageVolumeRequest(
                    volume_id=vid, staging_target_path=staging, publish_context=ctx, volume_capability=cap
                ),
            )
            == grpc.StatusCode.INVALID_ARGUMENT
        )
    for bad_ctx in (
        {**ctx, "portal": "127.0.0.1:1/../x"},
        {**ctx, "lun": "1;reboot"},
        {**ctx, "targetIqn": "--help"},
        {},
    ):
        assert (
            code_of(
                node.NodeStageVolume,
                csi.NodeStageVolumeRequest(
                    volume_id=vid,
                    staging_target_path=str(tmp_path / "s"),
                    publish_context=bad_ctx,
                    volume_capability=cap,
                ),
            )
            == grpc.StatusCode.INVALID_ARGUMENT
        )
    ctl.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE_A))
    for v in {vid, _volume(c.ctrl, long_name)}:
        ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=v))
    assert c.our_luns() == []
    assert host_leftovers([c.a.state_dir], tmp_path) == []
    assert not canary.exists()


def test_absurd_sizes_and_unknown_parameters(cluster: Cluster) -> None:
    ctl = cluster.ctrl.controller

    def create(required: int, limit: int = 0, **params: str) -> tuple[grpc.StatusCode, str]:
        try:
            ctl.CreateVolume(
                csi.CreateVolumeRequest(
                    name=f"pvc-bad-{secrets.token_hex(4)}",
                    capacity_range=csi.CapacityRange(required_bytes=required, limit_bytes=limit),
                    volume_capabilities=[mount_cap()],
                    parameters=params,
                ),
                timeout=120,
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return OK, ""

    assert create(2**50)[0] == grpc.StatusCode.OUT_OF_RANGE  # 1 PiB, above the 64 TiB LUN maximum
    assert create(2 * GiB, GiB)[0] == grpc.StatusCode.INVALID_ARGUMENT  # required above limit
    assert create(1000, 1)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert create(-1)[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, msg = create(GiB, 0, bogusKey="1")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "bogusKey" in msg
    code, msg = create(GiB, 0, iops="-5")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "iops" in msg
    code, msg = create(GiB, 0, stripeNum="3")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "stripeNum" in msg
    assert create(GiB, 0, **{"csi.storage.k8s.io/fstype": "ntfs"})[0] == grpc.StatusCode.INVALID_ARGUMENT
    block_multi = csi.CreateVolumeRequest(name="pvc-bad-mnmw", volume_capabilities=[block_cap(5)])
    mount_multi = csi.CreateVolumeRequest(name="pvc-bad-mnmw2", volume_capabilities=[mount_cap(mode=5)])
    assert code_of(ctl.CreateVolume, mount_multi) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(ctl.CreateVolume, block_multi) == OK  # raw block may be shared by many nodes
    vid = ctl.CreateVolume(block_multi).volume.volume_id
    ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert cluster.our_luns() == []


def test_wrong_chap_secret_leaves_nothing(cluster: Cluster, tmp_path: Path) -> None:
    env = dict(cluster.env, ZBS_CSI_CHAP="true", ZBS_CSI_TARGET_PREFIX=f"{cluster.prefix}c")
    ctrl = DriverProcess(tmp_path, "controller", env, name="ctrl-chap").start()
    try:
        vid = _volume(ctrl, "pvc-chap")
        cap = mount_cap()
        user = {"node.session.auth.username": "node-a"}
        good = {**user, "node.session.auth.password": "GoodSecret12345"}
        assert (
            code_of(
                ctrl.controller.ControllerPublishVolume,
                csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE_A, volume_capability=cap),
            )
            == grpc.StatusCode.INVALID_ARGUMENT
        ), "with CHAP on, a publish without the node's secret is refused"
        ctx = ctrl.controller.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE_A, volume_capability=cap, secrets=good)
        ).publish_context
        stage = tmp_path / "stage"

        def node_stage(secret: dict[str, str]) -> grpc.StatusCode:
            return code_of(
                cluster.a.node.NodeStageVolume,
                csi.NodeStageVolumeRequest(
                    volume_id=vid,
                    staging_target_path=str(stage),
                    publish_context=ctx,
                    volume_capability=cap,
                    secrets=secret,
                ),
            )

        assert node_stage({**user, "node.session.auth.password": "WrongSecret1234"}) == grpc.StatusCode.UNAVAILABLE
        assert host_leftovers([cluster.a.state_dir], tmp_path) == []
        assert node_stage({**user, "node.session.auth.password": "short"}) == grpc.StatusCode.INVALID_ARGUMENT
        assert node_stage({}) == grpc.StatusCode.UNAVAILABLE  # no CHAP at all: the target refuses the login
        assert host_leftovers([cluster.a.state_dir], tmp_path) == []
        assert node_stage(good) == OK
        cluster.a.node.NodeUnstageVolume(csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(stage)))
        ctrl.controller.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE_A))
        ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
        assert host_leftovers([cluster.a.state_dir], tmp_path) == []
    finally:
        ctrl.stop()
    for proc in (ctrl, cluster.a, cluster.ctrl):
        text = proc.log_tail(10**8)
        assert "GoodSecret12345" not in text and "WrongSecret1234" not in text, f"a secret reached {proc.name}'s log"
