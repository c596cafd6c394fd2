"""Seed scenario 2: the storage node serving a session dies during fsync'd writes.

Single path (node ``b``, multipath off): the session's chunk server stops; open-iscsi
reconnects through the VIP (its persistent portal), the redirector sends it to a live chunk,
and the writes resume. Several paths (node ``a``, multipath on, one session per chunk): one
chunk stops, its path fails, dm-multipath carries on over the others, and the path comes
back when the chunk does. Either way every acknowledged write is intact; the longest pause
between two acknowledged writes is recorded (bench/vm.py reports it; tests never assert time).
"""

from __future__ import annotations

import time

from rig import CHUNKS, GiB, Rig, chunk_failover, chunk_of, node_plugin, stage, stats, unstage


def test_single_path_survives_its_chunk_through_the_vip(rig: Rig, results: dict[str, float]) -> None:
    vm = rig.vms[1]
    node = node_plugin(vm, multipath=False)
    ctl = rig.controller
    vid = ctl.create("seed-2-single", GiB, fs="xfs")
    ctx = ctl.publish(vid, vm.iqn)
    s = stage(node, vid, ctx, fs="xfs", pod="seed-2-single")
    portal = vm.sh("iscsiadm -m session -P1 | sed -n 's/.*Current Portal: \\([^,]*\\),.*/\\1/p'").stdout.split()
    assert len(portal) == 1, portal
    chunk = chunk_of(portal[0])

    result = chunk_failover(rig, vm, s, chunk)
    assert result.verified == "ok", f"after {result.acks} acknowledged writes: {result.verified}"
    results["single path, chunk stop: longest pause (s)"] = result.pause
    moved = vm.sh("iscsiadm -m session -P1 | sed -n 's/.*Current Portal: \\([^,]*\\),.*/\\1/p'").stdout.split()
    assert moved and chunk_of(moved[0]) != chunk, "the session should now be on another chunk"
    assert not stats(node, s).volume_condition.abnormal

    unstage(node, s)
    ctl.unpublish(vid, vm.iqn)
    assert vm.leftovers(ctx["targetIqn"], vid) == []
    ctl.delete(vid)


def test_multipath_survives_path_loss_and_the_path_comes_back(rig: Rig, results: dict[str, float]) -> None:
    vm = rig.vms[0]
    node = node_plugin(vm, multipath=True)
    ctl = rig.controller
    vid = ctl.create("seed-2-multi", GiB, fs="xfs")
    ctx = ctl.publish(vid, vm.iqn)
    s = stage(node, vid, ctx, fs="xfs", pod="seed-2-multi")
    wwid = vm.sh(f"findmnt -no SOURCE {s.staging}").stdout.strip().rsplit("/", 1)[1]
    assert vm.sh(f"multipath -ll {wwid}").stdout.count("active ready running") == CHUNKS

    def degraded() -> None:
        paths = vm.sh(f"multipath -ll {wwid}").stdout
        assert paths.count("active ready running") == CHUNKS - 1, paths
        st = stats(node, s)
        assert not st.volume_condition.abnormal, "one path down of three is degraded, not abnormal"

    result = chunk_failover(rig, vm, s, 1, during=degraded)
    assert result.verified == "ok", f"after {result.acks} acknowledged writes: {result.verified}"
    results["multipath, one of 3 paths lost: longest pause (s)"] = result.pause

    deadline = time.monotonic() + 180
    while vm.sh(f"multipath -ll {wwid}").stdout.count("active ready running") < CHUNKS:
        assert time.monotonic() < deadline, vm.sh(f"multipath -ll {wwid}").stdout
        time.sleep(2)

    unstage(node, s)
    ctl.unpublish(vid, vm.iqn)
    assert vm.leftovers(ctx["targetIqn"], vid) == []
    ctl.delete(vid)
