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
from collections.abc import Callable

from rig import CHUNKS, Rig, chunk_failover, chunk_of, node_plugin, provision, retire, stats

CURRENT_PORTAL = "iscsiadm -m session -P1 | sed -n 's/.*Current Portal: \\([^,]*\\),.*/\\1/p'"


def test_single_path_survives_its_chunk_through_the_vip(
    rig: Rig, results: dict[str, float], undo: list[Callable[[], object]]
) -> None:
    vm = rig.vms[1]
    node = node_plugin(vm, multipath=False)
    s = provision(rig, vm, node, "seed-2-single", undo)
    portal = vm.sh(CURRENT_PORTAL).stdout.split()
    assert len(portal) == 1, portal
    chunk = chunk_of(portal[0])

    result = chunk_failover(rig, vm, s, chunk)
    assert result.verified == "ok", f"after {result.acks} acknowledged writes: {result.verified}"
    results["single path (VIP), its chunk stopped: longest write pause (s)"] = result.pause
    moved = vm.sh(CURRENT_PORTAL).stdout.split()
    assert moved and chunk_of(moved[0]) != chunk, "the session should now be on another chunk"
    assert not stats(node, s).volume_condition.abnormal
    assert retire(rig, vm, node, s) == []


def test_multipath_survives_path_loss_and_the_path_comes_back(
    rig: Rig, results: dict[str, float], undo: list[Callable[[], object]]
) -> None:
    vm = rig.vms[0]
    node = node_plugin(vm, multipath=True)
    s = provision(rig, vm, node, "seed-2-multi", undo)
    wwid = vm.sh(f"findmnt -no SOURCE {s.staging}").stdout.strip().rsplit("/", 1)[1]
    assert vm.active_paths(wwid) == CHUNKS

    def degraded() -> None:
        assert vm.active_paths(wwid) == CHUNKS - 1, vm.sh(f"multipath -ll {wwid}").stdout
        st = stats(node, s)
        assert not st.volume_condition.abnormal, "one path down of three is degraded, not abnormal"

    result = chunk_failover(rig, vm, s, 1, during=degraded)
    assert result.verified == "ok", f"after {result.acks} acknowledged writes: {result.verified}"
    results[f"multipath, 1 of {CHUNKS} paths lost: longest write pause (s)"] = result.pause

    deadline = time.monotonic() + 180
    while vm.active_paths(wwid) < CHUNKS:
        assert time.monotonic() < deadline, vm.sh(f"multipath -ll {wwid}").stdout
        time.sleep(2)
    assert retire(rig, vm, node, s) == []
