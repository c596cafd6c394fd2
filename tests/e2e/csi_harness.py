"""Run zbs-csi processes from tests and talk to them over their real gRPC sockets.

The tests play the Kubernetes side (external-provisioner/attacher/resizer/snapshotter and
kubelet): no Kubernetes API server can run here, so that part is the only thing "mocked",
and it is simply these tests calling the CSI RPCs in the order Kubernetes would.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from zbs_csi.proto import csi_pb2 as csi
from zbs_csi.proto import csi_pb2_grpc as csi_grpc

from zbs_lite.testing import ZbsLiteProcess

Mode = csi.VolumeCapability.AccessMode
GiB = 1024**3
NODE_A = "iqn.2026-01.com.smartx.e2e:node-a"
NODE_B = "iqn.2026-01.com.smartx.e2e:node-b"


def mount_cap(fs: str = "xfs", mode: int = Mode.SINGLE_NODE_WRITER, flags: tuple[str, ...] = ()) -> Any:
    cap = csi.VolumeCapability(access_mode=csi.VolumeCapability.AccessMode(mode=mode))
    cap.mount.fs_type = fs
    cap.mount.mount_flags.extend(flags)
    return cap


def block_cap(mode: int = Mode.SINGLE_NODE_WRITER) -> Any:
    cap = csi.VolumeCapability(access_mode=csi.VolumeCapability.AccessMode(mode=mode))
    cap.block.SetInParent()
    return cap


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env.update(extra)
    return env


@dataclass
class DriverProcess:
    """One ``zbs-csi`` process (controller, node or all) on its own unix socket."""

    work: Path
    mode: str
    env: dict[str, str]
    node_id: str = ""
    name: str = "csi"
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def sock(self) -> Path:
        return self.work / f"{self.name}.sock"

    @property
    def state_dir(self) -> Path:
        return self.work / f"{self.name}-state"

    @property
    def log_path(self) -> Path:
        return self.work / f"{self.name}.log"

    def start(self) -> DriverProcess:
        argv = [sys.executable, "-m", "zbs_csi.main", "--mode", self.mode, "--endpoint", f"unix://{self.sock}"]
        argv += ["--state-dir", str(self.state_dir), *self.extra_args]
        if self.node_id:
            argv += ["--node-id", self.node_id]
        self.sock.unlink(missing_ok=True)
        # The driver defaults to the kernel connector; this machine's kernel has no iscsi_tcp.
        env = {"ZBS_CSI_CONNECTOR": "userspace", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        return self

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crashed plugin, nothing cleaned up."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None

    def log_tail(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    @property
    def identity(self) -> csi_grpc.IdentityStub:
        assert self.channel is not None
        return csi_grpc.IdentityStub(self.channel)

    @property
    def controller(self) -> csi_grpc.ControllerStub:
        assert self.channel is not None
        return csi_grpc.ControllerStub(self.channel)

    @property
    def node(self) -> csi_grpc.NodeStub:
        assert self.channel is not None
        return csi_grpc.NodeStub(self.channel)


def write_data(path: Path, size: int) -> str:
    data = os.urandom(size)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return hashlib.sha256(data).hexdigest()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Kubelet:
    """What kubelet + external-attacher do for one (volume, node)."""

    def __init__(self, c: Cluster, node: str, work: Path) -> None:
        self.c = c
        self.plugin = c.a if node == NODE_A else c.b
        self.node_id = node
        self.work = work
        self.attached: set[tuple[str, str]] = set()

    def attach(
        self, volume_id: str, cap: csi.VolumeCapability, pod: str, secrets: dict[str, str] | None = None
    ) -> Path:
        """ControllerPublish, NodeStage, NodePublish; ``secrets`` as the StorageClass's CHAP Secret."""
        pub = self.c.ctrl.controller.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(
                volume_id=volume_id, node_id=self.node_id, volume_capability=cap, secrets=secrets or {}
            ),
            timeout=120,
        )
        stage = self.work / f"stage-{volume_id}-{self.plugin.name}"
        self.attached.add((volume_id, pod))
        self.plugin.node.NodeStageVolume(
            csi.NodeStageVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(stage),
                publish_context=pub.publish_context,
                volume_capability=cap,
                secrets=secrets or {},
            ),
            timeout=300,
        )
        target = self.work / f"pod-{pod}" / "mount"
        self.plugin.node.NodePublishVolume(
            csi.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(stage),
                target_path=str(target),
                volume_capability=cap,
            ),
            timeout=120,
        )
        return target

    def detach(self, volume_id: str, pod: str, *, controller: bool = True) -> None:
        target = self.work / f"pod-{pod}" / "mount"
        stage = self.work / f"stage-{volume_id}-{self.plugin.name}"
        self.plugin.node.NodeUnpublishVolume(
            csi.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)), timeout=120
        )
        assert not target.exists(), "NodeUnpublish must remove what it created at target_path"
        self.plugin.node.NodeUnstageVolume(
            csi.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(stage)), timeout=300
        )
        self.attached.discard((volume_id, pod))
        if controller:
            self.c.ctrl.controller.ControllerUnpublishVolume(
                csi.ControllerUnpublishVolumeRequest(volume_id=volume_id, node_id=self.node_id), timeout=120
            )

    def release_all(self) -> None:
        """After a failed test: detach what is still attached, so no mount outlives zbs-lite.

        A mount whose iSCSI target is gone blocks whatever touches it (ext4's lazy-init thread,
        another test's temp-dir cleanup) uninterruptibly in the kernel.
        """
        for volume_id, pod in sorted(self.attached):
            try:
                self.detach(volume_id, pod)
            except (grpc.RpcError, AssertionError):
                continue


def sync_fs(path: Path) -> None:
    """Flush the file system holding ``path`` (syncfs). Not os.sync(): that waits on every file
    system of the machine, including another run's whose device has gone."""
    subprocess.run(["sync", "--file-system", str(path)], check=True, timeout=120)


def code_of(fn: Any, req: Any, timeout: float = 120) -> grpc.StatusCode:
    """The status code of one call (OK when it succeeds)."""
    try:
        fn(req, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def host_leftovers(state_dirs: list[Path], under: Path) -> list[str]:
    """What a node left on the host: stage records, attachments, mounts, loops, daemons."""
    found = []
    for sd in state_dirs:
        found += [f"stage record {p}" for p in (sd / "volumes").glob("*.json")]
        found += [f"attachment dir {p}" for p in (sd / "userspace").glob("*")]
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        mp = line.split()[4]
        if mp.startswith(str(under)):
            found.append(f"mount {mp}")
    loops = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    found += [f"loop {ln.strip()}" for ln in loops.splitlines() if str(under) in ln]
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "qemu-storage-daemon" in cmdline and str(under) in cmdline:
            found.append(f"process {pid_dir.name} {cmdline[:100]}")
    return found


def data_plane_present() -> bool:
    try:
        from zbs_lite import iscsi
    except ImportError:
        return False
    return hasattr(iscsi, "DataPlane")


class Cluster:
    """A controller and two nodes (A and B, each with its own initiator IQN) sharing one zbs-lite.

    ``prefix`` names the driver's targets (``<prefix>-<cluster id>.NNNN``); the Kubernetes
    cluster id defaults to ``k8s``, so clusters of one test differ by prefix or by id.
    """

    def __init__(self, work: Path, zl: ZbsLiteProcess, prefix: str, cluster_id: str = "k8s", **env: str) -> None:
        self.work = work
        self.zl = zl
        self.prefix = prefix
        self.cluster_id = cluster_id
        base = clean_env(zl.env)
        base.update(
            {
                "ZBS_CSI_TARGET_PREFIX": prefix,
                "ZBS_CSI_KUBERNETES_CLUSTER_ID": cluster_id,
                "ZBS_CSI_DEFAULT_REPLICA_NUM": "1",
                "ZBS_CSI_LOG_LEVEL": "debug",
            }
        )
        base.update(env)
        self.env = base
        self.ctrl = DriverProcess(work, "controller", base, name="ctrl")
        self.a = DriverProcess(work, "node", base, node_id=NODE_A, name="node-a")
        self.b = DriverProcess(work, "node", base, node_id=NODE_B, name="node-b")

    def start(self) -> Cluster:
        for p in (self.ctrl, self.a, self.b):
            p.start()
        return self

    def stop(self) -> None:
        for p in (self.ctrl, self.a, self.b):
            p.stop()

    def client(self):  # type: ignore[no-untyped-def]
        from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient

        return ZbsClient(
            self.zl.api_url, self.zl.username, self.zl.password, ca_path=self.zl.ca_path, poll_interval=0.1
        )

    def remove_targets(self) -> None:
        """Delete the (by now empty) targets the driver made, so the shared zbs-lite stays clean."""
        client = self.client()
        for t in client.targets.list({"name_starts_with": f"{self.prefix}-{self.cluster_id}."}):
            if not client.luns.list({"iscsi_target": {"id": t["id"]}}):
                client.targets.delete(t["id"])

    def our_luns(self) -> list[dict]:
        """The LUNs in this cluster's targets."""
        return self.client().luns.list({"iscsi_target": {"name_starts_with": f"{self.prefix}-{self.cluster_id}."}})

    def our_targets(self) -> list[dict]:
        """This cluster's driver targets."""
        return self.client().targets.list({"name_starts_with": f"{self.prefix}-{self.cluster_id}."})
