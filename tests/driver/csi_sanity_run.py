"""Run csi-sanity (kubernetes-csi/csi-test v5.6.0) against the real driver on a real zbs-lite.

Used by the ``csi_sanity`` stage (scripts/stages.d/csi.sh). The driver runs in ``all`` mode
with the userspace connector, so every NodeStage is a real iSCSI login (qemu-storage-daemon
through zbs-lite's redirector), a real loop device, a real mkfs and mount. CHAP is on: the
secrets file gives csi-sanity the node's CHAP credentials for ControllerPublish (which
registers them on the target) and NodeStage (which logs in with them). Both access types
run: mount (xfs) and block, with every capability the driver has (GET_SNAPSHOT included)
and the attach-limit spec on (``--csi.testnodevolumeattachlimit``, against a limit of 4).
Afterwards nothing may be left: no driver LUN, no qemu-storage-daemon, no loop device, no
mount, no state file.

Every spec csi-sanity does not run must be in SKIPS or PENDING below, with its reason;
any other skip fails the run (read from csi-sanity's JSON report).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zbs_lite.testing import ZbsLiteProcess

ROOT = Path(__file__).resolve().parents[2]

# csi-sanity's skip message -> why that spec does not apply to zbs-csi.
CSI_1_13 = (
    "an RPC of CSI v1.13 (csi-sanity v5.6.0 is built on it); zbs-csi implements CSI v1.12 and "
    "reports volume health as VOLUME_CONDITION, which csi-sanity still accepts"
)
SKIPS = {
    "GroupControllerService not supported": (
        "no GroupController service: volume group snapshots are not in ZBS's iSCSI API subset"
    ),
    "ControllerGetVolumeHealth not supported": CSI_1_13,
    "ControllerListVolumeHealth not supported": CSI_1_13,
    "NodeGetVolumeHealth not supported": CSI_1_13,
    "NodeGetStorageHealth not supported": CSI_1_13,
    "SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported": (
        "a CSI v1.13 plugin capability; ZBS snapshots have no topology (any node can use them)"
    ),
}
# Specs csi-sanity itself marks pending (not run for any driver).
PENDING = {
    "ListVolumes pagination should detect volumes added between pages and accept tokens when the "
    "last volume from a page is deleted": "marked pending in csi-sanity",
}


def unexplained(report: Path, focused: bool = False) -> tuple[list[str], int]:
    """Specs of a csi-sanity JSON report that were skipped or pending without a reason above.

    With ``--focus`` the specs left out by it are skipped too (without a message).
    """
    found, explained = [], 0
    for suite in json.loads(report.read_text(encoding="utf-8")):
        for spec in suite.get("SpecReports") or []:
            if spec.get("LeafNodeType") != "It" or spec.get("State") not in ("skipped", "pending"):
                continue
            name = " ".join([*(spec.get("ContainerHierarchyTexts") or []), spec.get("LeafNodeText", "")])
            message = (spec.get("Failure") or {}).get("Message", "")
            if message in SKIPS or any(name.endswith(p) for p in PENDING) or (focused and not message):
                explained += 1
                continue
            found.append(f"{name}: {message}")
    return found, explained


NODE_IQN = "iqn.2026-01.com.smartx.test:sanity-node"
CHAP = {"node.session.auth.username": "sanity-node", "node.session.auth.password": "SanityChap0123456789"}


def _yaml_map(d: dict[str, dict[str, str] | str]) -> str:
    """A tiny YAML writer for the flat maps csi-sanity reads (values quoted)."""
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"{k}:")
            lines += [f"  {json.dumps(kk)}: {json.dumps(vv)}" for kk, vv in v.items()]
        else:
            lines.append(f"{json.dumps(k)}: {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def leftovers(state_dir: Path, work: Path) -> list[str]:
    found = []
    if any((state_dir / "volumes").glob("*.json")):
        found.append(f"stage records in {state_dir / 'volumes'}")
    if any((state_dir / "userspace").glob("*")):
        found.append(f"userspace attachments in {state_dir / 'userspace'}")
    mounts = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if str(work) in line.split()[4]]
    loops = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    found += [f"loop {line}" for line in loops.splitlines() if str(state_dir) in line]
    procs = subprocess.run(
        ["pgrep", "-af", "qemu-storage-daemon"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    found += [f"process {line[:120]}" for line in procs.splitlines() if str(state_dir) in line]
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csi-sanity", default=str(ROOT / ".cache/bin/csi-sanity"))
    ap.add_argument("--access-types", default="mount,block")
    ap.add_argument("--focus", default="")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zbs-csi-sanity."))
    state_dir = work / "state"
    sock = work / "csi.sock"
    rc = 1
    with ZbsLiteProcess(work / "zbs-lite") as zl:
        env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
        env.update(zl.env)
        env.update(
            ZBS_CSI_DEFAULT_FSTYPE="xfs",  # ext4 online grow needs CAP_SYS_RESOURCE, absent on these VMs
            ZBS_CSI_DEFAULT_REPLICA_NUM="1",
            ZBS_CSI_KUBERNETES_CLUSTER_ID="sanity",
            ZBS_CSI_CHAP="true",
            ZBS_CSI_LUNS_PER_TARGET="4",  # several targets get made and filled during the run
            ZBS_CSI_MAX_VOLUMES_PER_NODE="4",  # small, so the attach-limit spec stays quick
        )
        log = open(work / "driver.log", "w", encoding="utf-8")  # noqa: SIM115
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zbs_csi.main",
                "--mode",
                "all",
                "--endpoint",
                f"unix://{sock}",
                "--node-id",
                NODE_IQN,
                "--state-dir",
                str(state_dir),
                "--connector",
                "userspace",
            ],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                if sock.exists() or driver.poll() is not None:
                    break
                time.sleep(0.05)
            if not sock.exists():
                print((work / "driver.log").read_text(encoding="utf-8")[-4000:])
                return 1
            (work / "secrets.yaml").write_text(
                _yaml_map({"ControllerPublishVolumeSecret": CHAP, "NodeStageVolumeSecret": CHAP}), encoding="utf-8"
            )
            (work / "params.yaml").write_text(
                _yaml_map({"replication.n": "1", "thinProvisioning": "true", "stripeNum": "4", "stripeSize": "256Ki"}),
                encoding="utf-8",
            )
            rc = 0
            for access in args.access_types.split(","):
                cmd = [
                    args.csi_sanity,
                    f"--csi.endpoint=unix://{sock}",
                    f"--csi.mountdir={work / access / 'mnt'}",
                    f"--csi.stagingdir={work / access / 'stage'}",
                    "--csi.testvolumesize=1073741824",
                    "--csi.testvolumeexpandsize=2147483648",
                    f"--csi.testvolumeaccesstype={access}",
                    f"--csi.secrets={work / 'secrets.yaml'}",
                    f"--csi.testvolumeparameters={work / 'params.yaml'}",
                    "--csi.testnodevolumeattachlimit",
                    "--ginkgo.timeout=15m",
                    "--ginkgo.no-color",
                    f"--ginkgo.json-report={work / access / 'report.json'}",
                ]
                if args.focus:
                    cmd.append(f"--ginkgo.focus={args.focus}")
                (work / access).mkdir()
                print(f"== csi-sanity, access type {access}", flush=True)
                res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1200, check=False)
                out = res.stdout + res.stderr
                summary = [ln for ln in out.splitlines() if "Passed" in ln or ln.startswith("Ran ")]
                print("\n".join(summary))
                if res.returncode != 0:
                    print(out[-20000:])
                    rc = 1
                report = work / access / "report.json"
                odd, explained = unexplained(report, bool(args.focus)) if report.exists() else (["no JSON report"], 0)
                print(f"{explained} skipped or pending specs, each with a reason in {Path(__file__).name}")
                if odd:
                    print("skipped without a reason:\n  " + "\n  ".join(odd))
                    rc = 1
            left = leftovers(state_dir, work)
            if left:
                print("left behind after csi-sanity:\n  " + "\n  ".join(left))
                rc = 1
            volumes = subprocess.run(
                [sys.executable, "-m", "zbs_csi.tools.csc", "--endpoint", f"unix://{sock}", "list-volumes"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=env,
            ).stdout
            if json.loads(volumes or "{}").get("entries"):
                print(f"volumes left behind after csi-sanity: {volumes}")
                rc = 1
        finally:
            driver.terminate()
            try:
                driver.wait(timeout=30)
            except subprocess.TimeoutExpired:
                driver.kill()
            log.close()
            if rc:
                print("---- driver log (tail) ----")
                print((work / "driver.log").read_text(encoding="utf-8")[-6000:])
    if rc == 0:
        subprocess.run(["rm", "-rf", str(work)], check=False, timeout=120)
    else:
        print(f"kept {work} for inspection")
    return rc


if __name__ == "__main__":
    sys.exit(main())
