"""Helpers for the Kubernetes scenarios: the lab's kubectl, objects, waits, and what ZBS and the
host hold. Everything goes through the real API server (kubectl) and the real zbs-lite API."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DRIVER = "zbs.csi.smartx.com"
CSI_NAMESPACE = "smartx-zbs-csi"
GiB = 1024**3


class KubectlError(RuntimeError):
    pass


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 180, interval: float = 1.0) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except KubectlError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {str(last)[:2000]})")
        time.sleep(interval)


@dataclass
class Lab:
    """The running lab, as ``scripts/k8s-lab.sh env`` describes it."""

    env: dict[str, str]
    root: Path = field(default_factory=lambda: Path(__file__).resolve().parents[2])
    _zbs: Any = field(default=None, repr=False)

    @classmethod
    def from_dir(cls, lab_dir: str) -> Lab:
        out = subprocess.run(
            [str(Path(__file__).resolve().parents[2] / "scripts/k8s-lab.sh"), "env"],
            env={**os.environ, "K8S_LAB_DIR": lab_dir},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        env: dict[str, str] = {}
        for line in out.splitlines():
            if line.startswith("export "):
                for part in shlex.split(line[len("export ") :]):
                    key, _, value = part.partition("=")
                    env[key] = value
        return cls(env)

    @property
    def dir(self) -> Path:
        return Path(self.env["K8S_LAB_DIR"])

    @property
    def node(self) -> str:
        return self.env["K8S_LAB_NODE"]

    @property
    def node_pid(self) -> int:
        """A process in the node's mount namespace (where kubelet and the pods' mounts live)."""
        return int(Path(self.env["K8S_LAB_NODE_PIDFILE"]).read_text(encoding="utf-8"))

    def node_mounts(self) -> list[list[str]]:
        """The node's mount table (/proc/PID/mountinfo lines, split)."""
        text = Path(f"/proc/{self.node_pid}/mountinfo").read_text(encoding="utf-8")
        return [line.split() for line in text.splitlines()]

    def node_path(self, path: str) -> Path:
        """``path`` as the node sees it, mounts included."""
        return Path(f"/proc/{self.node_pid}/root{path}")

    @property
    def workload_image(self) -> str:
        return self.env["K8S_LAB_WORKLOAD_IMAGE"]

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120, check: bool = True) -> str:
        argv = [
            f"{self.env['K8S_LAB_BIN']}/kubectl",
            f"--kubeconfig={self.env['KUBECONFIG']}",
            f"--cache-dir={self.dir / 'kube-cache'}",
            *args,
        ]
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)}: {res.stderr.strip() or res.stdout.strip()}")
        return res.stdout

    def get(self, kind: str, name: str = "", namespace: str = "") -> dict[str, Any]:
        args = ["get", kind] + ([name] if name else []) + (["-n", namespace] if namespace else []) + ["-o", "json"]
        return json.loads(self.kubectl(*args))

    def items(self, kind: str, namespace: str = "", selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-n", namespace] if namespace else ["-A"])
        if selector:
            args += ["-l", selector]
        return list(json.loads(self.kubectl(*args))["items"])

    def exists(self, kind: str, name: str, namespace: str = "") -> bool:
        args = ["get", kind, name, "--ignore-not-found", "-o", "name"] + (["-n", namespace] if namespace else [])
        return bool(self.kubectl(*args).strip())

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))

    def delete(self, kind: str, name: str, namespace: str = "", timeout: float = 180) -> None:
        args = ["delete", kind, name, "--ignore-not-found", f"--timeout={int(timeout)}s"]
        self.kubectl(*args + (["-n", namespace] if namespace else []), timeout=timeout + 30)

    def exec(self, pod: str, namespace: str, script: str, timeout: float = 120, container: str = "") -> str:
        where = ["-c", container] if container else []
        return self.kubectl("exec", "-n", namespace, pod, *where, "--", "/bin/sh", "-c", script, timeout=timeout)

    def pod_phase(self, name: str, namespace: str) -> str:
        return str(self.get("pod", name, namespace).get("status", {}).get("phase", ""))

    def wait_running(self, name: str, namespace: str, timeout: float = 240) -> dict[str, Any]:
        def running() -> dict[str, Any] | None:
            pod = self.get("pod", name, namespace)
            statuses = pod.get("status", {}).get("containerStatuses") or []
            if pod["status"].get("phase") == "Running" and statuses and all(s.get("ready") for s in statuses):
                return pod
            return None

        try:
            return wait_for(f"pod {namespace}/{name} to run", running, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nevents:\n{self.events(namespace)}") from exc

    def events(self, namespace: str) -> str:
        return self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)[-4000:]

    # ------------------------------------------------------------- zbs-lite
    def zbs(self) -> Any:
        """A client of the lab's zbs-lite (the shared API client the driver itself uses)."""
        from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient

        if self._zbs is None:
            self._zbs = ZbsClient.from_env(
                host=self.env["ZBS_HOST"],
                username=self.env["ZBS_USERNAME"],
                password=self.env["ZBS_PASSWORD"],
                ca_path=self.env["ZBS_CA_PATH"],
            )
        return self._zbs

    def lun(self, volume_id: str) -> dict[str, Any] | None:
        return self.zbs().luns.get(local_id=volume_id)  # type: ignore[no-any-return]

    def driver_luns(self) -> list[dict[str, Any]]:
        return [
            lun
            for lun in self.zbs().luns.list()
            if (lun.get("iscsi_target") or {}).get("name", "").startswith("zbs-csi")
        ]

    # ------------------------------------------------------------- the host
    def host_leftovers(self) -> list[str]:
        """Mounts under the kubelet and driver state directories, loop devices backed by the
        driver's files, qemu-storage-daemon processes of this lab."""
        kubelet, state = self.env["K8S_LAB_KUBELET_DIR"], self.env["K8S_LAB_CSI_STATE_DIR"]
        found = []
        for fields in self.node_mounts():
            mp = fields[4]
            # CSI staging (plugins/kubernetes.io/csi/...) and publish (pods/*/volume*/kubernetes.io~csi/...)
            if mp.startswith(state) or (
                mp.startswith(kubelet) and ("kubernetes.io~csi" in mp or "/kubernetes.io/csi/" in mp)
            ):
                found.append(f"mount {mp}")
        loops = subprocess.run(
            ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        found += [f"loop {ln.strip()}" for ln in loops.splitlines() if state in ln]
        for pid_dir in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("qemu-storage-daemon") and state in cmdline:
                found.append(f"process {pid_dir.name} {cmdline[:120]}")
            elif not cmdline and self._zombie_in_node_plugin(pid_dir):
                found.append(f"zombie {pid_dir.name} in the node plugin's container")
        return found

    @staticmethod
    def _zombie_in_node_plugin(pid_dir: Path) -> bool:
        """An unreaped process of the node plugin's container (whose PID 1 must reap orphans)."""
        try:
            stat = (pid_dir / "stat").read_text(encoding="utf-8")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            return False
        return stat.rsplit(")", 1)[1].split()[0] == "Z" and "--mode=node" in parent.replace("\0", " ")


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pvc(
    name: str,
    ns: str,
    size: str = "1Gi",
    storage_class: str = "zbs",
    block: bool = False,
    source: dict[str, str] | None = None,
    vac: str = "",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": storage_class,
        "resources": {"requests": {"storage": size}},
        "volumeMode": "Block" if block else "Filesystem",
    }
    if source:
        spec["dataSource"] = source
    if vac:
        spec["volumeAttributesClassName"] = vac
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def pod(name: str, ns: str, image: str, claim: str, block: bool = False) -> dict[str, Any]:
    """A busybox pod holding ``claim`` at /data (or the raw device at /dev/xvda) until deleted."""
    container: dict[str, Any] = {
        "name": "app",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
    }
    if block:
        container["volumeDevices"] = [{"name": "data", "devicePath": "/dev/xvda"}]
    else:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "containers": [container],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": False,
        },
    }
