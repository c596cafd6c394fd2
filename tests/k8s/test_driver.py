"""The driver as the smartx.zbs.zbs_csi role installs it: real pods with the role's RBAC and
ServiceAccounts, a second run of the role that changes nothing, and both topologies."""

from __future__ import annotations

import calendar
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import CSI_NAMESPACE, DRIVER, Lab, pod, pvc, wait_for
from test_volumes import attachment, bound_pv, masked_to, node_iqn, volume_handle

SIDECARS = ("csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter")


def role_defaults(lab: Lab) -> dict[str, Any]:
    return yaml.safe_load((lab.root / "roles/zbs_csi/defaults/main.yml").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def driver_pods(lab: Lab) -> list[dict[str, Any]]:
    return lab.items("pod", CSI_NAMESPACE)


def run_role(lab: Lab, *extra: str) -> str:
    """``scripts/k8s-lab.sh install``: ansible-playbook smartx.zbs.install_csi with the lab's vars."""
    res = subprocess.run(
        [str(lab.root / "scripts/k8s-lab.sh"), "install", *extra],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "K8S_LAB_DIR": str(lab.dir), "ANSIBLE_FORCE_COLOR": "0"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert res.returncode == 0, f"the role failed:\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def recap(out: str) -> dict[str, int]:
    line = next(ln for ln in out.splitlines() if ln.startswith("localhost"))
    return {k: int(v) for k, v in (part.split("=") for part in line.split(":", 1)[1].split())}


def previous_log(lab: Lab, pod: str, container: str) -> str:
    return lab.kubectl("logs", "--previous", "-n", CSI_NAMESPACE, pod, "-c", container, check=False)


def test_the_role_runs_the_driver_as_pods_with_its_own_rbac(lab: Lab) -> None:
    defaults = role_defaults(lab)
    pods = driver_pods(lab)
    names = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
    assert {"zbs-csi-controller", "zbs-csi-node", "zbs-snapshot-controller"} <= names
    # the liveness probes of every container (the registrar's after 30 s) must have had their
    # say: run the checks on pods at least 90 s old
    newest_start = max(calendar.timegm(time.strptime(p["status"]["startTime"], "%Y-%m-%dT%H:%M:%SZ")) for p in pods)
    time.sleep(max(0.0, 90 - (time.time() - newest_start)))
    images = {*defaults["zbs_csi_sidecar_images"].values(), defaults["zbs_csi_image"]}
    for p in driver_pods(lab):
        statuses = p["status"].get("containerStatuses") or []
        restarted = [s["name"] for s in statuses if s["restartCount"]]
        why = "".join(  # what a restarted container said before it exited: the next reader's first question
            "\n--- previous log of " + c + "\n" + previous_log(lab, p["metadata"]["name"], c)[-3000:] for c in restarted
        )
        assert statuses and all(s["ready"] and s["restartCount"] == 0 for s in statuses), (
            f"{p['metadata']['name']}: {json.dumps(statuses)[:3000]}{why}"
        )
        for c in p["spec"]["containers"]:
            assert c["image"] in images, c["image"]
    controller = next(
        p for p in driver_pods(lab) if p["metadata"]["labels"]["app.kubernetes.io/name"] == "zbs-csi-controller"
    )
    assert controller["spec"]["serviceAccountName"] == "zbs-csi-controller"
    for sidecar in SIDECARS:
        logs = lab.kubectl("logs", "-n", CSI_NAMESPACE, controller["metadata"]["name"], "-c", sidecar)
        assert "forbidden" not in logs.lower(), f"{sidecar} lacks RBAC:\n" + "\n".join(
            ln for ln in logs.splitlines() if "forbidden" in ln.lower()
        )
    # kubelet registered the node plugin: the node id is the host's initiator name
    iqn = Path("/etc/iscsi/initiatorname.iscsi").read_text(encoding="utf-8").split("=", 1)[1].strip()
    assert node_iqn(lab) == iqn
    node = lab.get("node", lab.node)
    assert json.loads(node["metadata"]["annotations"]["csi.volume.kubernetes.io/nodeid"]) == {DRIVER: iqn}
    # server-side apply by the role's field manager
    deployment = json.loads(
        lab.kubectl(
            "get", "deployment", "zbs-csi-controller", "-n", CSI_NAMESPACE, "--show-managed-fields", "-o", "json"
        )
    )
    managers = {m["manager"] for m in deployment["metadata"]["managedFields"]}
    assert "smartx-zbs" in managers


def test_a_second_run_of_the_role_changes_nothing(lab: Lab) -> None:
    counts = recap(run_role(lab))
    assert counts["changed"] == 0 and counts["failed"] == 0, counts


@pytest.fixture
def separated(lab: Lab) -> Iterator[str]:
    """The role re-run for the separated topology (an explicit access portal); converged again after."""
    vip = str(lab.zbs().clusters.list()[0]["iscsi_vip"])
    portal = "localhost:" + vip.rpartition(":")[2]  # the same VIP, named as an access network address
    out = run_role(lab, "-e", "zbs_csi_topology=separated", "-e", f"zbs_csi_iscsi_portal={portal}")
    try:
        assert recap(out)["changed"] > 0
        yield portal
    finally:
        run_role(lab)
        wait_for("the controller to run with the converged settings again", lambda: controller_portal(lab) == "", 180)


def controller_portal(lab: Lab) -> str | None:
    """The ZBS_ISCSI_PORTAL the running controller container started with, once it is ready."""
    for p in lab.items("pod", CSI_NAMESPACE, "app.kubernetes.io/name=zbs-csi-controller"):
        if p["metadata"].get("deletionTimestamp") or not all(
            s["ready"] for s in p["status"].get("containerStatuses") or [{"ready": False}]
        ):
            continue
        env = lab.exec(p["metadata"]["name"], CSI_NAMESPACE, "cat /proc/1/environ", container="zbs-csi")
        for item in env.split("\0"):
            if item.startswith("ZBS_ISCSI_PORTAL="):
                return item.partition("=")[2]
    return None


def use_a_volume(lab: Lab, ns: str, name: str) -> dict[str, Any]:
    lab.apply(pvc(name, ns), pod(name, ns, lab.workload_image, name))
    lab.wait_running(name, ns)
    pv = bound_pv(lab, name, ns)
    assert masked_to(lab, volume_handle(lab, pv)) == [node_iqn(lab)]
    lab.exec(name, ns, "echo ok > /data/f && sync -f /data && cat /data/f")
    va = attachment(lab, pv)
    assert va is not None
    lab.delete("pod", name, ns)
    return va


def test_each_topology_attaches_through_its_portal(lab: Lab, ns: str, request: pytest.FixtureRequest) -> None:
    # converged: no portal configured, the driver asks ZBS for the cluster's iSCSI VIP
    vip = str(lab.zbs().clusters.list()[0]["iscsi_vip"])
    assert controller_portal(lab) == ""
    assert use_a_volume(lab, ns, "converged")["status"]["attachmentMetadata"]["portal"] == vip
    # separated: the role's portal reaches the running controller, which hands it to the nodes
    portal = request.getfixturevalue("separated")
    wait_for("the controller to run with the separated settings", lambda: controller_portal(lab) == portal, 240)
    assert use_a_volume(lab, ns, "separated")["status"]["attachmentMetadata"]["portal"] == portal
