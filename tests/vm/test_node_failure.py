"""Seed scenario 1: a node dies under a writing workload; the volume moves; the dead node is fenced.

Node ``a`` has the volume staged and writes fsync'd records; its VM is killed hard (qemu
SIGKILL: no logout, no flush). The controller unpublishes ``a`` (its IQN leaves the LUN's
allowed initiators: the fence) and publishes to ``b``, which stages the volume and finds
every write ``a`` acknowledged. Then ``a`` boots again with its stale node records and stage
state: logging in through them and scanning the LUN gives it no device, so it can neither
read nor write; its plugin's unstage (kubelet cleaning up the old pod) leaves nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from rig import Rig, Staged, Writer, node_plugin, provision, retire, stage, unstage
from zbs_csi.proto import csi_pb2 as csi


def test_node_failure_moves_the_volume_with_every_acknowledged_write_and_fences_the_dead_node(
    rig: Rig, undo: list[Callable[[], object]]
) -> None:
    a, b = rig.vms
    ctl = rig.controller
    node_a = node_plugin(a, multipath=True)
    node_b = node_plugin(b, multipath=False)
    on_a = provision(rig, a, node_a, "seed-1", undo)
    vid, ctx_a, lun = on_a.volume_id, on_a.context, on_a.context["lun"]

    writer = Writer(a, f"{on_a.target}/records")
    writer.wait_acks(60)
    a.kill()
    writer.join(60)
    acked = writer.last
    assert acked >= 59

    ctl.unpublish(vid, a.iqn)  # the fence: a's IQN is no longer allowed on the LUN
    ctx_b = ctl.publish(vid, b.iqn)
    undo.append(lambda: ctl.unpublish(vid, b.iqn))
    on_b = stage(node_b, vid, ctx_b, fs="xfs", pod="seed-1-b")
    undo.append(lambda: unstage(node_b, on_b))
    assert writer.verify(b, f"{on_b.target}/records") == "ok", f"b lost some of the {acked + 1} acknowledged writes"

    a.boot()
    a.wait_ssh()
    undo.append(lambda: unstage(node_plugin(a, multipath=True), on_a))
    iqn = ctx_a["targetIqn"]
    assert a.sh(f"iscsiadm -m node | grep -cF {iqn}").stdout.strip() != "0", "a kept its node records"
    # The stale records still log in (the target admits a) but the LUN is masked: no device.
    a.sh(f"iscsiadm -m node -T {iqn} --login", check=False)
    a.sh(
        f"for s in /sys/class/iscsi_session/session*; do h=$(basename $(dirname $(readlink -f $s/device))); "
        f"echo '0 0 {lun}' > /sys/class/scsi_host/$h/scan 2>/dev/null; done; sleep 2; udevadm settle",
        check=False,
    )
    assert [x for x in a.leftovers(iqn, vid) if x.startswith("SCSI device")] == [], "fenced a still sees the LUN"

    node_a = node_plugin(a, multipath=True)
    unstage(node_a, Staged(vid, ctx_a, on_a.staging, on_a.target, on_a.cap, False))
    assert a.leftovers(iqn, vid) == [], "unstage on the recovered node must clean its stale state"
    with pytest.raises(grpc.RpcError) as exc:  # a kubelet retrying with the old publish context
        node_a.node.NodeStageVolume(
            csi.NodeStageVolumeRequest(
                volume_id=vid, publish_context=ctx_a, staging_target_path=on_a.staging, volume_capability=on_a.cap
            ),
            timeout=600,
        )
    assert exc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)
    assert a.leftovers(iqn, vid) == [], "a refused stage leaves nothing behind"

    assert writer.verify(b, f"{on_b.target}/records") == "ok", "b's data changed while a came back"
    assert retire(rig, b, node_b, on_b) == []
