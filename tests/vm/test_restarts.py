"""Restarts under the driver: iscsid and multipathd under a staged volume; the plugin mid-stage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
from rig import GiB, Rig, Writer, node_plugin, provision, retire, stage, stats, unstage


def test_iscsid_and_multipathd_restart_under_a_staged_volume(rig: Rig, undo: list[Callable[[], object]]) -> None:
    vm = rig.vms[0]
    node = node_plugin(vm, multipath=True)
    s = provision(rig, vm, node, "restart-daemons", undo, fs="ext4")
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
    assert retire(rig, vm, node, s) == []


def test_node_plugin_killed_mid_stage_is_undone_then_stages_again(rig: Rig, undo: list[Callable[[], object]]) -> None:
    vm = rig.vms[0]
    node = node_plugin(vm, multipath=True)
    ctl = rig.controller
    vid = ctl.create("restart-plugin", GiB, fs="xfs")
    undo.append(lambda: ctl.delete(vid))
    ctx = ctl.publish(vid, vm.iqn)
    undo.append(lambda: ctl.unpublish(vid, vm.iqn))
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
    # Kill once the LUN was scanned on every path (udev settles next): sessions, node records
    # and SCSI devices exist, the filesystem does not yet.
    while '"settle"' not in vm.log_since(offset):
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
    undo.append(lambda: unstage(node, s))
    vm.sh(f"echo hello > {s.target}/f && sync")
    assert retire(rig, vm, node, s) == []
