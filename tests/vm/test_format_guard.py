"""A volume holding data is never formatted, however late udev makes its device node.

The probe that found this: with multipath on, the map's ``/dev/mapper`` link appeared ~1 s
after the map's dm holder under TCG; the connector handed out the link path at once, ``blkid
-p`` on the missing path exited 2 (as for "no signature"), and the service decided to
``mkfs.xfs -f`` a volume holding an XFS filesystem with data. Here udev is made slower still
(a rule that sleeps on every dm device event) and a volume with data is staged again. On the
connector before the fix this test failed: "formatting blank device", then mkfs.xfs.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from rig import Rig, node_plugin, provision, retire, stage, unstage

SLOW_RULE = "/etc/udev/rules.d/99-zbs-test-slow-dm.rules"
MARK = "/run/zbs-test-slow-dm"


def test_a_volume_with_data_is_never_formatted_when_udev_is_slow(rig: Rig, undo: list[Callable[[], object]]) -> None:
    vm = rig.vms[0]
    node = node_plugin(vm, multipath=True)
    s = provision(rig, vm, node, "guard", undo)
    vm.sh(f"dd if=/dev/urandom of={s.target}/data bs=1M count=8 conv=fsync status=none && "
          f"sha256sum {s.target}/data | cut -d' ' -f1 > /root/guard.sha")  # fmt: skip
    unstage(node, s)

    program = f"/bin/sh -c 'sleep 4; echo x >> {MARK}'"
    rule = f'ACTION=="add|change", SUBSYSTEM=="block", KERNEL=="dm-*", PROGRAM="{program}"'
    undo.append(lambda: vm.sh(f"rm -f {SLOW_RULE} {MARK} /root/guard.sha; udevadm control --reload"))
    vm.sh(f"rm -f {MARK}; echo {shlex.quote(rule)} > {SLOW_RULE} && udevadm control --reload")
    offset = vm.log_size()
    s = stage(node, s.volume_id, s.context, fs="xfs", pod="guard")
    log = vm.log_since(offset)
    assert vm.sh(f"cat {MARK} 2>/dev/null | wc -l").stdout.strip() != "0", "the slow udev rule never ran"
    assert "formatting blank device" not in log, "the driver decided to format a volume holding data"
    assert vm.sh(f"findmnt -no SOURCE {s.staging}").stdout.strip().startswith("/dev/mapper/")
    got = vm.sh(f"sha256sum {s.target}/data | cut -d' ' -f1").stdout
    assert got == vm.sh("cat /root/guard.sha").stdout, "the data is gone"
    assert retire(rig, vm, node, s) == []
