"""The whole node lifecycle with the kernel connector, on a stock kernel.

Node ``a``: the zbs_node role's configuration, multipath on, one path per chunk server
(the controller hands out the data portals). Node ``b``: multipath off, one session through
the VIP. On each: an ext4, an xfs and a raw block volume staged side by side (they share the
driver's target, so its sessions are shared), data written, stats and condition, online
expansion, and unstage leaving no session, node record, SCSI device, map or stage record.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

import pytest
from rig import CHUNKS, GiB, Rig, Staged, node_plugin, provision, retire, stats
from zbs_csi.proto import csi_pb2 as csi


def device_of(rig: Rig, vm_name: str, s: Staged) -> str:
    """The device a volume is staged on: what is mounted, or for raw block what the driver recorded."""
    vm = next(v for v in rig.vms if v.name == vm_name)
    if s.block:
        record = f"/var/lib/zbs-csi/volumes/{s.volume_id}.json"
        return vm.sh(
            f"python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"device\"])' {record}"
        ).stdout.strip()
    return vm.sh(f"findmnt -no SOURCE {s.staging}").stdout.strip()


@pytest.mark.parametrize(("vm_name", "multipath"), [("a", True), ("b", False)], ids=["multipath", "single-path"])
def test_node_lifecycle(rig: Rig, vm_name: str, multipath: bool, undo: list[Callable[[], object]]) -> None:
    vm = next(v for v in rig.vms if v.name == vm_name)
    node = node_plugin(vm, multipath=multipath)
    ctl = rig.controller
    staged = [
        provision(rig, vm, node, f"life-{vm_name}-ext4", undo, fs="ext4"),
        provision(rig, vm, node, f"life-{vm_name}-xfs", undo, fs="xfs"),
        provision(rig, vm, node, f"life-{vm_name}-raw", undo, block=True),
    ]
    for s in staged:
        assert len(s.context.get("portals", "").split(",")) == CHUNKS, "the controller hands out every chunk's portal"

    for s in staged:
        dev = device_of(rig, vm_name, s)
        if multipath:
            assert dev.startswith("/dev/mapper/3"), f"{s.volume_id} is staged on {dev}, not on its multipath map"
            assert vm.active_paths(dev.rsplit("/", 1)[1]) == CHUNKS
        else:
            assert dev.startswith("/dev/sd"), dev
            assert not vm.sh(f"ls /sys/block/{dev[5:]}/holders").stdout.strip(), "no map over a single path"
        where = s.target if s.block else f"{s.target}/data"
        vm.sh(
            f"dd if=/dev/urandom of=/root/{s.volume_id}.src bs=1M count=16 status=none && "
            f"dd if=/root/{s.volume_id}.src of={where} bs=1M conv=fsync{',notrunc' if s.block else ''} status=none && "
            f"sha256sum < /root/{s.volume_id}.src > /root/{s.volume_id}.sha"
        )
        st = stats(node, s)
        assert not st.volume_condition.abnormal, st.volume_condition.message
        total = st.usage[0].total
        assert (total == GiB) if s.block else (0.8 * GiB < total <= GiB), total

    for s in staged:
        ctl.expand(s.volume_id, 2 * GiB)
        resp = node.node.NodeExpandVolume(
            csi.NodeExpandVolumeRequest(
                volume_id=s.volume_id,
                volume_path=s.target,
                staging_target_path=s.staging,
                capacity_range=csi.CapacityRange(required_bytes=2 * GiB),
                volume_capability=s.cap,
            ),
            timeout=300,
        )
        assert resp.capacity_bytes == 2 * GiB
        dev = device_of(rig, vm_name, s)
        assert vm.sh(f"blockdev --getsize64 {dev}").stdout.strip() == str(2 * GiB)
        if not s.block:
            assert int(vm.sh(f"df -B1 --output=size {s.target} | tail -1").stdout) > 1.8 * GiB
        where = s.target if s.block else f"{s.target}/data"
        got = vm.sh(f"head -c {16 * 1024 * 1024} {where} | sha256sum").stdout
        assert got == vm.sh(f"cat /root/{s.volume_id}.sha").stdout, f"{s.volume_id}: data changed by the expansion"

    iqn = staged[0].target_iqn
    assert all(s.target_iqn == iqn for s in staged), "the driver packs volumes into one target"
    for i, s in enumerate(staged):
        left = retire(rig, vm, node, s)
        if i < len(staged) - 1:
            assert [x for x in left if not x.startswith(("session", "node record"))] == [], left
            assert any(x.startswith("session") for x in left), "other staged volumes still use the sessions"
        else:
            assert left == [], f"unstage left {left}"
    vm.sh(f"rm -f /root/*.src /root/*.sha; ! findmnt -rn | grep -q {shlex.quote('/var/lib/kubelet')}")
