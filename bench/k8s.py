"""The Kubernetes overhead, measured side by side on one k8s lab (scripts/k8s-lab.sh up).

1. Through Kubernetes, as a user feels it: N PVCs (the role's default StorageClass,
   WaitForFirstConsumer) and N pods using them, created at once; for each, the time from its
   PVC's creation to its pod running (a watch on the pods, client-side clock). Kube API
   requests per volume: apiserver_request_total over the run, minus the bench's own requests
   and the idle background rate measured just before.
2. The same lifecycle straight over a CSI socket, at the same moment's load: an in-process
   zbs-csi (controller + node, userspace connector) on the lab's zbs-lite makes N volumes at
   once, each CreateVolume -> ControllerPublish -> NodeStage -> NodePublish.

It prints p50/p99 of both and their ratio (the part Kubernetes adds: scheduling, the
sidecars' watches and retries, kubelet's volume manager, the container start).

    K8S_LAB_DIR=.cache/k8s/lab .venv/bin/python bench/k8s.py [--volumes 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from kubernetes import client, config, watch
from zbs_csi.config import load_config
from zbs_csi.controller import ControllerService
from zbs_csi.node.connectors import make_connector
from zbs_csi.node.runner import HostRunner
from zbs_csi.node.service import NodeService
from zbs_csi.proto import csi_pb2 as csi
from zbs_csi.proto import csi_pb2_grpc as csi_grpc
from zbs_csi.server import Driver
from zbs_csi.zbs import make_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "k8s"))

from kube import Lab

ROOT = Path(__file__).resolve().parents[1]
NS = "bench-k8s"
NODE = "iqn.2026-01.com.smartx.bench:k8s-direct"
GiB = 1024**3


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def api_requests(env: dict[str, str]) -> float:
    """The API server's count of requests served so far (apiserver_request_total)."""
    body = subprocess.run(
        [f"{env['K8S_LAB_BIN']}/kubectl", f"--kubeconfig={env['KUBECONFIG']}", "get", "--raw", "/metrics"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith("apiserver_request_total{")
    )


def gone(core: client.CoreV1Api) -> None:
    """Delete the bench namespace and wait until its pods, PVCs and PVs (so LUNs) are gone."""
    try:
        core.delete_namespace(NS)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            core.read_namespace(NS)
        except client.ApiException as exc:
            pvs = [
                pv
                for pv in core.list_persistent_volume().items
                if pv.spec.claim_ref and pv.spec.claim_ref.namespace == NS
            ]
            if exc.status == 404 and not pvs:
                return
        time.sleep(2)
    raise SystemExit(f"namespace {NS} still there after 600 s")


def through_kubernetes(env: dict[str, str], n: int) -> tuple[list[float], float]:
    config.load_kube_config(env["KUBECONFIG"])
    api = client.ApiClient()
    core = client.CoreV1Api(api)
    gone(core)  # a leftover of an interrupted run
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    idle_t0, idle_n0 = time.monotonic(), api_requests(env)
    time.sleep(20)
    background = (api_requests(env) - idle_n0 - 1) / (time.monotonic() - idle_t0)

    created: dict[str, float] = {}
    running: dict[str, float] = {}
    done = threading.Event()

    def watcher() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_pod, NS, timeout_seconds=900):
            pod = ev["object"]
            statuses = pod.status.container_statuses or []
            if pod.status.phase == "Running" and statuses and all(s.ready for s in statuses):
                running.setdefault(pod.metadata.name, time.monotonic())
            if len(running) == n:
                w.stop()
        done.set()

    threading.Thread(target=watcher, daemon=True).start()
    time.sleep(1)
    t0, n0 = time.monotonic(), api_requests(env)
    for i in range(n):
        name = f"b{i}"
        created[name] = time.monotonic()
        core.create_namespaced_persistent_volume_claim(
            NS,
            {
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "zbs",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        core.create_namespaced_pod(
            NS,
            {
                "metadata": {"name": name},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "app",
                            "image": env["K8S_LAB_WORKLOAD_IMAGE"],
                            "imagePullPolicy": "Never",
                            "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                            "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": name}}],
                },
            },
        )
    if not done.wait(900):
        raise SystemExit(f"only {len(running)} of {n} pods ran within 900 s")
    window = time.monotonic() - t0
    own = 2 * n + 2  # the creates above and the two /metrics reads
    per_volume = (api_requests(env) - n0 - own - background * window) / n
    gone(core)
    return [running[k] - created[k] for k in created], per_volume


def over_the_socket(env: dict[str, str], n: int) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix="zbs-k8s-bench."))
    zenv = {k: v for k, v in env.items() if k.startswith("ZBS_")}
    zenv.update(
        ZBS_CSI_DEFAULT_REPLICA_NUM="1",
        ZBS_CSI_TARGET_PREFIX="bench-direct",
        ZBS_CSI_KUBERNETES_CLUSTER_ID="bench-direct",  # required since clusters share a ZBS
        ZBS_CSI_CONNECTOR="userspace",  # the lab's connector; the driver's default is kernel
    )
    cfg = load_config(
        None,
        env=zenv,
        overrides={"endpoint": f"unix://{work}/csi.sock", "node_id": NODE, "state_dir": str(work / "state")},
    )
    runner = HostRunner(default_timeout=cfg.command_timeout)
    driver = Driver(
        cfg,
        controller=ControllerService(cfg, make_client(cfg)),
        node=NodeService(cfg, runner, make_connector(cfg, runner)),
    )
    driver.start()
    channel = grpc.insecure_channel(cfg.endpoint)
    ctl, nd = csi_grpc.ControllerStub(channel), csi_grpc.NodeStub(channel)
    cap = csi.VolumeCapability(access_mode=csi.VolumeCapability.AccessMode(mode=1))
    cap.mount.fs_type = "ext4"
    made: list[tuple[str, Path, Path]] = []
    lock = threading.Lock()

    def one(i: int) -> float:
        t0 = time.monotonic()
        vid = ctl.CreateVolume(
            csi.CreateVolumeRequest(
                name=f"direct-{i}", capacity_range=csi.CapacityRange(required_bytes=GiB), volume_capabilities=[cap]
            ),
            timeout=600,
        ).volume.volume_id
        ctx = ctl.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE, volume_capability=cap), timeout=600
        ).publish_context
        stage, target = work / "stage" / vid, work / "pods" / vid / "mount"
        nd.NodeStageVolume(
            csi.NodeStageVolumeRequest(
                volume_id=vid, staging_target_path=str(stage), publish_context=ctx, volume_capability=cap
            ),
            timeout=600,
        )
        nd.NodePublishVolume(
            csi.NodePublishVolumeRequest(
                volume_id=vid,
                staging_target_path=str(stage),
                target_path=str(target),
                publish_context=ctx,
                volume_capability=cap,
            ),
            timeout=600,
        )
        with lock:
            made.append((vid, stage, target))
        return time.monotonic() - t0

    try:
        with ThreadPoolExecutor(n) as pool:
            times = list(pool.map(one, range(n)))
    finally:
        for vid, stage, target in made:
            nd.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(target)), timeout=600)
            nd.NodeUnstageVolume(
                csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(stage)), timeout=600
            )
            ctl.ControllerUnpublishVolume(
                csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE), timeout=600
            )
            ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=600)
        driver.stop()
        shutil.rmtree(work, ignore_errors=True)
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=10)
    args = ap.parse_args()
    lab_dir = os.environ.get("K8S_LAB_DIR", "")
    if os.geteuid() != 0 or not lab_dir:
        print("bench/k8s.py needs root and K8S_LAB_DIR (a lab from scripts/k8s-lab.sh up)")
        return 2
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(var, None)
    env = Lab.from_dir(lab_dir).env
    kube, per_volume = through_kubernetes(env, args.volumes)
    direct = over_the_socket(env, args.volumes)
    print(f"{args.volumes} volumes at once on the k8s lab (Kubernetes v1.34, one node, userspace connector)")
    print(f"{'path':<46}{'p50 s':>8}{'p99 s':>8}")
    print(f"{'PVC created -> pod running (Kubernetes)':<46}{pct(kube, 50):>8.1f}{pct(kube, 99):>8.1f}")
    print(f"{'Create+Publish+Stage+Publish (CSI socket)':<46}{pct(direct, 50):>8.1f}{pct(direct, 99):>8.1f}")
    ratio50, ratio99 = pct(kube, 50) / pct(direct, 50), pct(kube, 99) / pct(direct, 99)
    print(f"ratio Kubernetes / CSI socket: p50 {ratio50:.2f}, p99 {ratio99:.2f}")
    print(f"Kubernetes API requests per volume (background-subtracted): {per_volume:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
