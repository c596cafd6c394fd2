"""Run a subset of libiscsi's `iscsi-test-cu` conformance suite against a chunk server.

    python tests/zbs_lite/iscsi/conformance.py [--list]

Each suite runs in its own iscsi-test-cu invocation (a fresh session), against one thin
64 MiB LUN on a data plane started here on random loopback addresses. Exits non-zero when
any selected test fails.

Selected: the suites for every command zbs-lite implements (SUITES). Excluded, and why:
- CompareAndWrite, OrWrite, WriteAtomic16, ExtendedCopy, ReceiveCopyResults, Sanitize,
  ReadDefectData10/12, Reserve6, Prin*/Prout* (persistent reservations),
  ReportSupportedOpcodes, ModeSelect, Prefetch10/16, NoMedia (removable media): commands
  zbs-lite does not implement (it answers INVALID COMMAND OPERATION CODE; libiscsi skips
  or fails those suites).
- MultipathIO.CompareAndWrite*: COMPARE AND WRITE is not implemented. MultipathIO.Simple
  and .Reset run with the LUN's second path on another chunk.
- GetLBAStatus: UnmapSingle asks for the status at LBA i+1 and expects the first
  descriptor to start at LBA i+8 (one physical block on); SBC-3 says the first descriptor
  starts at the LBA asked for, which is what zbs-lite returns. Its Simple and BeyondEol
  tests run.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from zbs_lite.catalog import LunView, MemoryCatalog, TargetView  # noqa: E402
from zbs_lite.iscsi import DataPlane  # noqa: E402

SUITES = [
    "SCSI.TestUnitReady",
    "SCSI.Inquiry",
    "SCSI.ReadCapacity10",
    "SCSI.ReadCapacity16",
    "SCSI.Read6",
    "SCSI.Read10",
    "SCSI.Read12",
    "SCSI.Read16",
    "SCSI.Write10",
    "SCSI.Write12",
    "SCSI.Write16",
    "SCSI.WriteSame10",
    "SCSI.WriteSame16",
    "SCSI.Unmap",
    "SCSI.GetLBAStatus.Simple",
    "SCSI.GetLBAStatus.BeyondEol",
    "SCSI.ModeSense6",
    "SCSI.StartStopUnit",
    "SCSI.PreventAllow",
    "SCSI.Verify12",
    "SCSI.WriteVerify12",
    "SCSI.Verify10",
    "SCSI.Verify16",
    "SCSI.WriteVerify10",
    "SCSI.WriteVerify16",
    "SCSI.MultipathIO.Simple",
    "SCSI.MultipathIO.Reset",
    "iSCSI.iSCSIcmdsn",
    "iSCSI.iSCSIdatasn",
    "iSCSI.iSCSIResiduals",
    "iSCSI.iSCSITMF",
]
INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
INITIATOR_2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print the selected suites and exit")
    ap.add_argument("suites", nargs="*", help="suites to run (default: all selected)")
    args = ap.parse_args()
    suites = args.suites or SUITES
    if args.list:
        print("\n".join(suites))
        return 0
    if shutil.which("iscsi-test-cu") is None:
        print("iscsi-test-cu not installed (Debian libiscsi-bin)", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    net = f"127.{random.randint(2, 250)}.{random.randint(2, 250)}"
    with tempfile.TemporaryDirectory(prefix="zbs-iscsi-cu-") as tmp:
        path = Path(tmp) / "lun.img"
        with open(path, "wb") as f:
            f.truncate(64 << 20)
        catalog = MemoryCatalog()
        target = TargetView(id="t", name="cu", iqn="iqn.2016-02.com.smartx:system:cu")
        catalog.put_target(target)
        catalog.put_lun(LunView("l", str(uuid.uuid4()), "cu", 1, "t", 64 << 20, str(path)))
        plane = DataPlane(catalog, (f"{net}.100", 0), [(f"{net}.1", 0), (f"{net}.2", 0)])
        plane.start()
        failed: list[str] = []
        totals = [0, 0]
        try:
            chunks = plane.status()["chunks"]
            url = f"iscsi://{chunks[0]['portal']}/{target.iqn}/1"
            second_path = f"iscsi://{chunks[1]['portal']}/{target.iqn}/1"  # for the MultipathIO suite
            print(f"{'suite':28} {'tests':>5} {'passed':>6} {'failed':>6} {'asserts':>8} {'secs':>6}")
            for suite in suites:
                t0 = time.monotonic()
                r = subprocess.run(
                    [
                        "iscsi-test-cu",
                        "--dataloss",
                        "-s",
                        "-t",
                        suite,
                        "-i",
                        INITIATOR,
                        "-I",
                        INITIATOR_2,
                        url,
                        *([second_path] if "Multipath" in suite else []),
                    ],
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=300,
                    check=False,
                )
                secs = time.monotonic() - t0
                tests = re.search(r"tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout)
                asserts = re.search(r"asserts\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout)
                if tests is None or r.returncode != 0 or int(tests.group(4)):
                    failed.append(suite)
                    print(r.stdout[-3000:], r.stderr[-2000:], sep="\n")
                n_tests = int(tests.group(2)) if tests else 0
                n_passed = int(tests.group(3)) if tests else 0
                totals[0] += n_tests
                totals[1] += n_passed
                print(
                    f"{suite:28} {n_tests:5} {n_passed:6} {n_tests - n_passed:6} "
                    f"{asserts.group(3) if asserts else '-':>8} {secs:6.1f}",
                    flush=True,
                )
        finally:
            plane.stop()
    print(f"{len(suites)} suites, {totals[0]} tests, {totals[1]} passed; failed suites: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
