"""The kernel connector on a stock kernel: NodeStage next to the userspace connector, and failover pauses.

Two node VMs (Debian bookworm, stock kernel; ``a`` with the zbs_node role applied, ``b`` with
Debian's stock multipath configuration) against zbs-lite in a network namespace, through the
rig of tests/vm. Measured side by side in one run:

- NodeStage (blank volume: attach, identity check, mkfs.xfs, mount) and NodeUnstage, p50 over
  N volumes, with the kernel connector (multipath on, one path per chunk server) and with the
  userspace connector (qemu-storage-daemon + FUSE + loop) on the same VM ``a``; the ratio
  kernel / userspace;
- the longest pause between two fsync'd 4 KiB writes while the chunk server under them stops:
  one session through the VIP on ``b`` (it reconnects through the redirector to a live
  chunk), and multipath with one of three paths lost on ``a``.

The accelerator is printed first: under TCG (software emulation, what this machine offers)
the timings are not production timings; read the ratios.

    .venv/bin/python bench/vm.py [--volumes 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vm"))

from rig import GiB, Rig, Staged, chunk_failover, chunk_of, node_plugin, stage, unstage


def stage_times(rig: Rig, connector: str, volumes: int) -> tuple[list[float], list[float]]:
    vm = rig.vms[0]
    node = node_plugin(vm, multipath=True, connector=connector)
    ctl = rig.controller
    st, ut = [], []
    for i in range(volumes):
        vid = ctl.create(f"bench-{connector}-{i}", GiB, fs="xfs")
        ctx = ctl.publish(vid, vm.iqn)
        t0 = time.monotonic()
        s = stage(node, vid, ctx, fs="xfs", pod=f"bench-{i}")
        st.append(time.monotonic() - t0)
        t0 = time.monotonic()
        unstage(node, s)
        ut.append(time.monotonic() - t0)
        ctl.unpublish(vid, vm.iqn)
        ctl.delete(vid)
    return st, ut


def failover(rig: Rig, multipath: bool) -> float:
    vm = rig.vms[0] if multipath else rig.vms[1]
    node = node_plugin(vm, multipath=multipath)
    ctl = rig.controller
    vid = ctl.create(f"bench-failover-{multipath}", GiB, fs="xfs")
    ctx = ctl.publish(vid, vm.iqn)
    s: Staged = stage(node, vid, ctx, fs="xfs", pod="bench-failover")
    if multipath:
        chunk = 1
    else:
        current = vm.sh("iscsiadm -m session -P1 | sed -n 's/.*Current Portal: \\([^,]*\\),.*/\\1/p'").stdout.split()
        chunk = chunk_of(current[0])
    result = chunk_failover(rig, vm, s, chunk)
    unstage(node, s)
    ctl.unpublish(vid, vm.iqn)
    ctl.delete(vid)
    if result.verified != "ok":
        raise SystemExit(f"data check failed after the failover: {result.verified}")
    return result.pause


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--volumes", type=int, default=5)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zbs-vm-bench-", dir="/tmp"))
    rig = Rig(work, vms=2)
    try:
        rig.start()
        vm = rig.vms[0]
        print(f"accelerator: {rig.accel.note}")
        print(f"boot to ssh (two VMs in parallel): {', '.join(f'{v.boot_seconds:.1f} s' for v in rig.vms)}")
        rig.apply_node_role(vm)
        kst, kut = stage_times(rig, "kernel", args.volumes)
        ust, uut = stage_times(rig, "userspace", args.volumes)
        single = failover(rig, multipath=False)
        multi = failover(rig, multipath=True)
    finally:
        rig.close()
        shutil.rmtree(work, ignore_errors=True)
    p50 = statistics.median
    print(f"\nNodeStage p50 over {args.volumes} volumes (blank xfs: attach, identity, mkfs, mount)")
    print(f"  kernel (multipath, 3 paths)      {p50(kst) * 1000:8.0f} ms")
    print(f"  userspace (qsd + FUSE + loop)    {p50(ust) * 1000:8.0f} ms")
    print(f"  ratio kernel / userspace         {p50(kst) / p50(ust):8.2f}")
    print("NodeUnstage p50")
    print(f"  kernel                           {p50(kut) * 1000:8.0f} ms")
    print(f"  userspace                        {p50(uut) * 1000:8.0f} ms")
    print(f"  ratio kernel / userspace         {p50(kut) / p50(uut):8.2f}")
    print("longest pause between fsync'd writes while a chunk server stops")
    print(f"  one session through the VIP      {single:8.2f} s")
    print(f"  multipath, 1 of 3 paths lost     {multi:8.2f} s")
    print(f"({rig.accel.note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
