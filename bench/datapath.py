"""zbs-lite's iSCSI data path against Debian's tgt and the raw file, side by side in one run.

    sudo .venv/bin/python bench/datapath.py [--size-mib 1024] [--runtime 8] [--json OUT]

Each target serves the same kind of backing file (a preallocated file on one XFS loop mount,
the file system of zbs-lite's pool; `--fs host` uses /var/tmp as it is) and
is attached the way the CSI driver's `userspace` connector does it: qemu-storage-daemon
(libiscsi) -> FUSE file -> loop device (direct I/O); fio then runs on the loop device with
O_DIRECT. The raw file is fio on the backing file itself. Printed: MiB/s or IOPS per target
and the ratios zbs-lite/tgt and zbs-lite/raw. Needs root, /dev/fuse, loop devices, fio,
tgtd/tgtadm and qemu-storage-daemon. Only 127.0.0.0/8 is used, on random ports.

The loop devices use direct I/O so reads reach the target instead of the FUSE file's page
cache. That is a throughput measurement only: with qemu 7.2's FUSE export, O_DIRECT I/O at
high queue depth lands misplaced whatever serves the blocks (fio verify fails against tgt
and against a plain-file backend too), so data correctness is tested elsewhere, on the
buffered loop device the `userspace` connector uses (tests/zbs_lite/iscsi/test_attach.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zbs_csi.node.connectors import qsd  # noqa: E402
from zbs_csi.node.runner import Runner  # noqa: E402

from zbs_lite.catalog import LunView, MemoryCatalog, TargetView  # noqa: E402
from zbs_lite.iscsi import DataPlane  # noqa: E402

log = logging.getLogger("bench.datapath")

INITIATOR = "iqn.2020-01.io.zbs-bench:node"
JOBS = [
    # name, fio rw, block size, iodepth, unit
    ("seq-read-1M", "read", "1M", 8, "MiB/s"),
    ("seq-write-1M", "write", "1M", 8, "MiB/s"),
    ("rand-read-4K-qd32", "randread", "4k", 32, "IOPS"),
    ("rand-write-4K-qd32", "randwrite", "4k", 32, "IOPS"),
]


def sh(argv: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr.strip()[:500]}")
    return r


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def backing_file(path: Path, size: int) -> Path:
    """A fully allocated file (so neither target reads holes)."""
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
        chunk = os.urandom(1 << 20)
        for _ in range(0, size, len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return path


@contextlib.contextmanager
def zbs_lite_target(path: Path, size: int, net: str) -> Iterator[tuple[str, str]]:
    catalog = MemoryCatalog()
    catalog.put_target(TargetView(id="t", name="bench", iqn="iqn.2016-02.com.smartx:system:bench"))
    catalog.put_lun(LunView("l", str(uuid.uuid4()), "bench", 1, "t", size, str(path)))
    plane = DataPlane(catalog, (f"{net}.100", 0), [(f"{net}.1", 0)])
    plane.start()
    try:
        yield plane.status()["chunks"][0]["portal"], "iqn.2016-02.com.smartx:system:bench"
    finally:
        plane.stop()


@contextlib.contextmanager
def tgt_target(path: Path, net: str) -> Iterator[tuple[str, str]]:
    host = f"{net}.50"
    port = free_port(host)
    ctl = str(random.randint(100, 9999))  # tgtadm rejects bigger control ports
    iqn = "iqn.2001-04.org.debian:bench"
    proc = subprocess.Popen(
        ["tgtd", "-f", "-C", ctl, "--iscsi", f"portal={host}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        adm = ["tgtadm", "-C", ctl, "--lld", "iscsi"]
        for _ in range(100):
            if sh([*adm, "--op", "show", "--mode", "sys"], check=False).returncode == 0:
                break
            time.sleep(0.05)
        sh([*adm, "--op", "new", "--mode", "target", "--tid", "1", "-T", iqn])
        sh([*adm, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", str(path)])
        sh([*adm, "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"])
        yield f"{host}:{port}", iqn
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def userspace_attach(portal: str, iqn: str, size: int, workdir: Path) -> Iterator[str]:
    """The userspace connector's qemu-storage-daemon -> FUSE -> loop device; yields the loop device."""
    name = uuid.uuid4().hex[:6]
    export = qsd.QsdExport(
        portal=portal,
        target_iqn=iqn,
        lun=1,
        initiator=INITIATOR,
        disk=workdir / f"export-{name}",
        qmp=workdir / f"qmp-{name}.sock",
        pidfile=workdir / f"qsd-{name}.pid",
    )
    export.disk.touch()
    pid = qsd.start(Runner(), export, timeout=60)
    dev = ""
    try:
        if os.stat(export.disk).st_size != size:
            raise RuntimeError(f"the FUSE export shows {os.stat(export.disk).st_size} bytes, not {size}")
        r = sh(["losetup", "-f", "--show", "--direct-io=on", str(export.disk)], check=False)
        if r.returncode != 0:
            r = sh(["losetup", "-f", "--show", str(export.disk)])
        dev = r.stdout.strip()
        yield dev
    finally:
        if dev:
            sh(["losetup", "-d", dev], check=False)
        qsd.stop(pid, str(export.pidfile), grace=20)
        sh(["fusermount3", "-u", str(export.disk)], check=False)


@contextlib.contextmanager
def backing_dir(tmp: Path, fs: str, size: int) -> Iterator[Path]:
    """The directory for the backing files: an XFS loop mount (zbs-lite's pool format) or tmp."""
    if fs == "host":
        yield tmp
        return
    img, mnt = tmp / "pool.img", tmp / "pool"
    with open(img, "wb") as f:
        f.truncate(size)
    sh(["mkfs.xfs", "-q", str(img)])
    mnt.mkdir()
    sh(["mount", "-o", "loop", str(img), str(mnt)])
    try:
        yield mnt
    finally:
        sh(["umount", str(mnt)], check=False)


def fio(target: str, rw: str, bs: str, depth: int, runtime: int, size: int) -> dict[str, float]:
    r = sh(
        [
            "fio",
            "--name=bench",
            f"--filename={target}",
            f"--rw={rw}",
            f"--bs={bs}",
            f"--iodepth={depth}",
            "--ioengine=libaio",
            "--direct=1",
            f"--size={size}",
            f"--runtime={runtime}",
            "--time_based",
            "--ramp_time=1",
            "--randrepeat=0",
            "--output-format=json",
        ],
        timeout=runtime + 120,
    )
    job = json.loads(r.stdout)["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return {"MiB/s": side["bw_bytes"] / (1 << 20), "IOPS": side["iops"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runtime", type=int, default=8, help="seconds per fio job")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--jobs", nargs="*", default=[j[0] for j in JOBS], help="subset of the fio jobs")
    ap.add_argument(
        "--fs",
        choices=["xfs", "host"],
        default="xfs",
        help="where the backing files live: an XFS loop mount like zbs-lite's pool (default), or /var/tmp as is",
    )
    ap.add_argument("--targets", nargs="*", default=["zbs-lite", "tgt", "raw"], help="subset of the targets")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if os.geteuid() != 0:
        print("needs root (FUSE, loop devices, tgtd)", file=sys.stderr)
        return 2
    size = args.size_mib << 20
    net = f"127.{random.randint(2, 250)}.{random.randint(2, 250)}"
    results: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="zbs-bench-", dir="/var/tmp") as tmp,
        backing_dir(Path(tmp), args.fs, 3 * size + (256 << 20)) as work,
    ):
        jobs = [j for j in JOBS if j[0] in args.jobs]

        def run_jobs(target: str) -> dict[str, float]:
            return {name: fio(target, rw, bs, qd, args.runtime, size)[u] for name, rw, bs, qd, u in jobs}

        if "zbs-lite" in args.targets:
            zfile = backing_file(work / "zbs.img", size)
            with zbs_lite_target(zfile, size, net) as (portal, iqn), userspace_attach(portal, iqn, size, work) as dev:
                results["zbs-lite"] = run_jobs(dev)
        if "tgt" in args.targets:
            tfile = backing_file(work / "tgt.img", size)
            with tgt_target(tfile, net) as (portal, iqn), userspace_attach(portal, iqn, size, work) as dev:
                results["tgt"] = run_jobs(dev)
        if "raw" in args.targets:
            results["raw"] = run_jobs(str(backing_file(work / "raw.img", size)))

    def cell(target: str, job: str) -> str:
        v = results.get(target, {}).get(job)
        return f"{v:10.0f}" if v is not None else f"{'-':>10}"

    def ratio(a: str, b: str, job: str) -> str:
        x, y = results.get(a, {}).get(job), results.get(b, {}).get(job)
        return f"{x / y:8.2f}" if x is not None and y else f"{'-':>8}"

    print(f"{'job':22} {'unit':6} {'zbs-lite':>10} {'tgt':>10} {'raw file':>10} {'zbs/tgt':>8} {'zbs/raw':>8}")
    for name, _, _, _, unit in jobs:
        print(
            f"{name:22} {unit:6} {cell('zbs-lite', name)} {cell('tgt', name)} {cell('raw', name)}"
            f" {ratio('zbs-lite', 'tgt', name)} {ratio('zbs-lite', 'raw', name)}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
