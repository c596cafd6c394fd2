"""Restarts under the driver: iscsid and multipathd under a staged volume; the plugin mid-stage."""

from __future__ import annotations

import threading
import time

import grpc
from rig import GiB, Rig, Writer, node_plugin, stage, stats, unstage


def test_iscsid_and_multipathd_restart_under_a_staged_volume(rig: Rig) -> None:
    vm = rig.vms[0]
    node = node_plugin(vm, multipath=True)
    ctl = rig.controller
    vid = ctl.create("restart-daemons", GiB, fs="ext4")
    ctx = ctl.publish(vid, vm.iqn)
    s = stage(node, vid, ctx, fs="ext4", pod="restart-daemons")
    writer = Writer(vm, f"{s.target}/records")
    try:
        writer.wait_acks(20)
        for service in ("iscsid", "multipathd"):
            vm.sh(f"systemctl restart {service}")
            writer.wait_acks(len(writer.acks) + 20, timeout=300)
            st = stats(node, s)
            assert not st.volume_condition.abnormal, f"after restarting {service}: {st.volume_condition.message}"
    finally:
        writer.stop()
    assert writer.verify() == "ok"
    unstage(node, s)
    ctl.unpublish(vid, vm.iqn)
    assert vm.leftovers(ctx["targetIqn"], vid) == []
    ctl.delete(vid)


def test_node_plugin_killed_mid_stage_is_undone_then_stages_again(rig: Rig) -> None:
    vm = rig.vms[0]
    node = node_plugin(vm, multipath=True)
    ctl = rig.controller
    vid = ctl.create("restart-plugin", GiB, fs="xfs")
    ctx = ctl.publish(vid, vm.iqn)
    offset = vm.log_size()
    outcome: list[BaseException | None] = []

    def first_stage() -> None:
        try:
            stage(node, vid, ctx, fs="xfs", pod="restart-plugin")
            outcome.append(None)
        except grpc.RpcError as exc:
            outcome.append(exc)

    t = threading.Thread(target=first_stage)
    t.start()
    deadline = time.monotonic() + 300
    while '"--login"' not in vm.log_since(offset):  # the login happened: the stage is under way
        assert time.monotonic() < deadline and t.is_alive(), vm.log_since(offset)[-3000:]
        time.sleep(0.1)
    vm.kill_plugin()
    t.join(120)
    assert outcome and outcome[0] is not None, "the plugin was killed too late: the stage had finished"

    offset = vm.log_size()
    node = node_plugin(vm, multipath=True)
    assert "undoing an interrupted stage" in vm.log_since(offset)
    assert vm.leftovers(ctx["targetIqn"], vid) == [], "the interrupted stage was not undone"

    s = stage(node, vid, ctx, fs="xfs", pod="restart-plugin")
    vm.sh(f"echo hello > {s.target}/f && sync")
    unstage(node, s)
    ctl.unpublish(vid, vm.iqn)
    assert vm.leftovers(ctx["targetIqn"], vid) == []
    ctl.delete(vid)
