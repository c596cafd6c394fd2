"""Debian's stock multipath-tools configuration (``find_multipaths "strict"``) with multipath on.

Strict mode maps only WWIDs already in /etc/multipath/wwids, so a new volume never got a map
and every stage waited 30 s for one before falling back to a single path. The driver now
registers the WWID itself when multipathd does not know it, and on unstage removes only
what it added: a WWID an administrator registered stays.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from rig import CHUNKS, Rig, Vm, node_plugin, provision, retire, stage, unstage
from zbs_csi.proto import csi_pb2 as csi

ADMIN_WWID = "3600c0ff0000000000000000000abcdef"


def wwids(vm: Vm) -> list[str]:
    text = vm.sh("cat /etc/multipath/wwids 2>/dev/null", check=False).stdout
    return [w.strip("/") for w in text.split() if w.startswith("/")]


def test_stock_strict_config_gets_a_map_and_keeps_the_admins_wwids(rig: Rig, undo: list[Callable[[], object]]) -> None:
    vm = rig.vms[1]
    assert "strict" in vm.sh("multipath -t | grep -m1 find_multipaths").stdout, "node b must keep Debian's defaults"
    node = node_plugin(vm, multipath=True)
    undo.append(lambda: vm.sh("rm -f /etc/multipath/wwids"))
    vm.sh(f"mkdir -p /etc/multipath && echo '/{ADMIN_WWID}/' >> /etc/multipath/wwids")
    s = provision(rig, vm, node, "strict", undo, fs="ext4")
    dev = vm.sh(f"findmnt -no SOURCE {s.staging}").stdout.strip()
    assert dev.startswith("/dev/mapper/3"), f"staged on {dev}: strict mode built no map"
    wwid = dev.rsplit("/", 1)[1]
    assert vm.active_paths(wwid) == CHUNKS
    assert wwid in wwids(vm)
    unstage(node, s)
    assert ADMIN_WWID in wwids(vm), "unstage removed a WWID the administrator had registered"
    assert wwid not in wwids(vm), "the WWID the driver registered should be forgotten with the volume"

    # The administrator registered this volume's WWID: the driver must leave it registered.
    vm.sh(f"echo '/{wwid}/' >> /etc/multipath/wwids")
    s = stage(node, s.volume_id, s.context, fs="ext4", pod="strict")
    assert retire(rig, vm, node, s) == []
    assert wwid in wwids(vm) and ADMIN_WWID in wwids(vm)


def test_probe_reports_a_stopped_multipathd(rig: Rig, undo: list[Callable[[], object]]) -> None:
    vm = rig.vms[1]
    node = node_plugin(vm, multipath=True)
    node.identity.Probe(csi.ProbeRequest(), timeout=60)
    undo.append(lambda: vm.sh("systemctl start multipathd"))
    vm.sh("systemctl stop multipathd.socket multipathd.service")
    with pytest.raises(grpc.RpcError) as exc:
        node.identity.Probe(csi.ProbeRequest(), timeout=60)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "running multipathd" in (exc.value.details() or "")
    vm.sh("systemctl start multipathd")
    node.identity.Probe(csi.ProbeRequest(), timeout=60)
