"""Kubernetes nodes as qemu VMs with a stock Debian kernel, zbs-lite and the controller on the host.

Everything runs inside one network namespace this rig creates (a bridge, one tap per VM, no
uplink, no default route): zbs-lite serves its API and VIP on 10.77.0.1 and one chunk server
per address 10.77.0.11..13; the VMs are 10.77.0.21 and up. The only way in is from this host,
through ``ip netns exec``. The node plugin runs inside each VM with ``--connector kernel``
from the project checkout (shared read-only over 9p at the same path, with the project venv's
site-packages on Debian's python3.11); its CSI socket is forwarded to a unix socket here over
ssh, and the tests play kubelet and the sidecars over it.

Shared by tests/vm (the ``vm`` stage) and bench/vm.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from zbs_csi.proto import csi_pb2 as csi
from zbs_csi.proto import csi_pb2_grpc as csi_grpc

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.77.0"
API_IP = f"{SUBNET}.1"
VIP = f"{API_IP}:3260"
CHUNKS = 3
CHUNK_BASE = 11
CHUNK_PORT = 3261
VM_BASE = 21
Mode = csi.VolumeCapability.AccessMode
GiB = 1024**3


SSH_OPTS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"


class RigError(RuntimeError):
    pass


def run(argv: list[str], *, timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and res.returncode != 0:
        raise RigError(f"{' '.join(argv[:6])} exited {res.returncode}: {(res.stderr or res.stdout)[-2000:]}")
    return res


# ---------------------------------------------------------------------------------- accelerator
@dataclass(frozen=True)
class Accel:
    name: str
    args: tuple[str, ...]

    @property
    def note(self) -> str:
        if self.name == "tcg":
            return "TCG (software emulation; timings are not production timings)"
        return "KVM"


def accelerator() -> Accel:
    """Real KVM when /dev/kvm is real; TCG when it is absent or PVM (a stock kernel hangs under PVM)."""
    want = os.environ.get("ZBS_VM_ACCEL", "")
    pvm = Path("/sys/module/kvm_pvm").exists()
    kvm_ok = Path("/dev/kvm").exists() and os.access("/dev/kvm", os.R_OK | os.W_OK) and not pvm
    if want == "kvm" or (not want and kvm_ok):
        return Accel("kvm", ("-accel", "kvm", "-cpu", "host"))
    return Accel("tcg", ("-accel", "tcg,thread=multi", "-cpu", "max"))


def vm_image() -> Path:
    """The node image (scripts/build-vm-image.sh; the stage passes it in ZBS_VM_IMAGE)."""
    given = os.environ.get("ZBS_VM_IMAGE")
    if given:
        return Path(given)
    out = run([str(ROOT / "scripts" / "build-vm-image.sh")], timeout=1800).stdout.strip().splitlines()
    return Path(out[-1])


# ---------------------------------------------------------------------------------- network namespace
class Netns:
    """A namespace of our own: bridge ``br0`` with the storage addresses, one tap per VM."""

    def __init__(self) -> None:
        self.name = f"zbsvm-{secrets.token_hex(3)}"

    def up(self) -> Netns:
        run(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        self.ip("link", "add", "br0", "type", "bridge")
        for host in [1, *range(CHUNK_BASE, CHUNK_BASE + CHUNKS)]:
            self.ip("addr", "add", f"{SUBNET}.{host}/24", "dev", "br0")
        self.ip("link", "set", "br0", "up")
        return self

    def ip(self, *args: str) -> None:
        run(["ip", "-n", self.name, *args])

    def tap(self, name: str) -> str:
        self.ip("tuntap", "add", "dev", name, "mode", "tap")
        self.ip("link", "set", name, "master", "br0")
        self.ip("link", "set", name, "up")
        return name

    def exec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def down(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)


# ---------------------------------------------------------------------------------- zbs-lite
class ZbsLite:
    def __init__(self, ns: Netns, work: Path) -> None:
        self.ns = ns
        self.data = work / "zbs-lite"
        self.bin = str(ROOT / ".venv" / "bin" / "zbs-lite")

    def start(self) -> ZbsLite:
        run(
            self.ns.exec(
                self.bin, "serve", "--data-dir", str(self.data), "--daemon", "--listen", API_IP,
                "--api-port", "0", "--vip", VIP, "--chunks", str(CHUNKS),
                "--chunk-ip-base", f"{SUBNET}.{CHUNK_BASE}", "--chunk-port", str(CHUNK_PORT), "--pool", "dir",
            ),
            timeout=120,
        )  # fmt: skip
        return self

    def env(self) -> dict[str, str]:
        out = run([self.bin, "env", "--data-dir", str(self.data)]).stdout
        env = {}
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0] if value else ""
        return env

    def status(self) -> dict[str, Any]:
        return json.loads(run([self.bin, "status", "--data-dir", str(self.data), "--json"]).stdout)

    def chunk(self, action: str, n: int) -> None:
        run([self.bin, "chunk", action, str(n), "--data-dir", str(self.data)])

    def stop(self) -> None:
        run([self.bin, "stop", "--data-dir", str(self.data)], check=False, timeout=60)


def chunk_of(portal: str) -> int:
    """The chunk server number serving at ``portal`` (10.77.0.1N:3261 → N)."""
    return int(portal.split(":")[0].rsplit(".", 1)[1]) - CHUNK_BASE + 1


# ---------------------------------------------------------------------------------- CSI clients
class Csi:
    """A CSI endpoint (a unix socket) and its stubs."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.channel = grpc.insecure_channel(f"unix://{sock}")
        self.identity = csi_grpc.IdentityStub(self.channel)
        self.controller = csi_grpc.ControllerStub(self.channel)
        self.node = csi_grpc.NodeStub(self.channel)

    def wait(self, timeout: float = 120) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def mount_cap(fs: str) -> Any:
    cap = csi.VolumeCapability(access_mode=csi.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER))
    cap.mount.fs_type = fs
    return cap


def block_cap() -> Any:
    cap = csi.VolumeCapability(access_mode=csi.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER))
    cap.block.SetInParent()
    return cap


class Controller:
    """zbs-csi in controller mode on the host, inside the namespace (it reaches the API there)."""

    def __init__(self, ns: Netns, work: Path, zbs: ZbsLite) -> None:
        self.ns = ns
        self.work = work
        self.zbs = zbs
        self.sock = work / "controller.sock"
        self.log = work / "controller.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.csi: Csi | None = None

    def start(self) -> Controller:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZBS_", "REQUESTS_CA"))}
        env.update(self.zbs.env())
        env["ZBS_CSI_TARGET_PREFIX"] = "vm"
        env["ZBS_CSI_KUBERNETES_CLUSTER_ID"] = "vm-rig"
        argv = self.ns.exec(
            sys.executable, "-m", "zbs_csi.main", "--mode", "controller", "--endpoint", f"unix://{self.sock}",
            "--state-dir", str(self.work / "controller-state"), "--log-level", "debug",
        )  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        self.csi = Csi(self.sock)
        self.csi.wait(60)
        return self

    @property
    def stub(self) -> csi_grpc.ControllerStub:
        assert self.csi is not None
        return self.csi.controller

    def create(
        self, name: str, size: int = GiB, fs: str = "xfs", block: bool = False, secrets: dict[str, str] | None = None
    ) -> str:
        """CreateVolume; ``secrets`` is a StorageClass's provisioner secret (its CHAP class)."""
        cap = block_cap() if block else mount_cap(fs)
        resp = self.stub.CreateVolume(
            csi.CreateVolumeRequest(
                name=name,
                capacity_range=csi.CapacityRange(required_bytes=size),
                volume_capabilities=[cap],
                parameters={"replication.n": "1"},
                secrets=secrets or {},
            ),
            timeout=120,
        )
        return str(resp.volume.volume_id)

    def publish(
        self, volume_id: str, node_id: str, block: bool = False, secrets: dict[str, str] | None = None
    ) -> dict[str, str]:
        """ControllerPublish; ``secrets`` (controller-publish secret) registers the node's CHAP."""
        resp = self.stub.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(
                volume_id=volume_id,
                node_id=node_id,
                volume_capability=block_cap() if block else mount_cap("xfs"),
                secrets=secrets or {},
            ),
            timeout=120,
        )
        return dict(resp.publish_context)

    def unpublish(self, volume_id: str, node_id: str) -> None:
        self.stub.ControllerUnpublishVolume(
            csi.ControllerUnpublishVolumeRequest(volume_id=volume_id, node_id=node_id), timeout=120
        )

    def expand(self, volume_id: str, size: int) -> None:
        self.stub.ControllerExpandVolume(
            csi.ControllerExpandVolumeRequest(
                volume_id=volume_id, capacity_range=csi.CapacityRange(required_bytes=size)
            ),
            timeout=120,
        )

    def delete(self, volume_id: str) -> None:
        self.stub.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=120)

    def stop(self) -> None:
        if self.csi is not None:
            self.csi.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---------------------------------------------------------------------------------- node VMs
@dataclass
class Vm:
    """One Kubernetes node: a qemu VM booted from a qcow2 overlay of the node image."""

    name: str
    index: int
    ns: Netns
    image: Path
    work: Path
    accel: Accel
    memory_mb: int = 1024
    proc: subprocess.Popen[bytes] | None = None
    forward: subprocess.Popen[bytes] | None = None
    iqn: str = ""
    boot_seconds: float = 0.0
    plugin_env: dict[str, str] = field(default_factory=dict)

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{VM_BASE + self.index}"

    @property
    def disk(self) -> Path:
        return self.work / f"{self.name}.qcow2"

    @property
    def share(self) -> Path:
        """A read-write directory shared with the VM at /mnt/share (logs, scripts)."""
        return self.work / f"{self.name}-share"

    @property
    def node_log(self) -> Path:
        return self.share / "node.log"

    @property
    def csi_sock(self) -> Path:
        return self.work / f"{self.name}-csi.sock"

    def _ssh_base(self) -> list[str]:
        return [
            "ssh", "-i", str(self.image / "ssh" / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
        ]  # fmt: skip

    def ssh_argv(self, command: str) -> list[str]:
        mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.work}/{self.name}.mux", "-o", "ControlPersist=900"]
        return self.ns.exec(*self._ssh_base(), *mux, f"root@{self.ip}", command)

    def sh(self, command: str, *, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the VM (test-side convenience; the driver itself never uses a shell)."""
        res = subprocess.run(self.ssh_argv(command), capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise RigError(
                f"{self.name}: `{command[:200]}` exited {res.returncode}: {(res.stderr or res.stdout)[-3000:]}"
            )
        return res

    # ------------------------------------------------------------------ life cycle
    def create_disk(self) -> None:
        self.share.mkdir(parents=True, exist_ok=True)
        run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                str(self.image / "rootfs.img"),
                str(self.disk),
            ]
        )

    def boot(self) -> None:
        """Start qemu (hard-killable: ``kill``) and return at once; ``wait_ssh`` waits for the node."""
        self.console = self.work / f"{self.name}-console.log"
        tap = f"tap{self.index}"
        with contextlib.suppress(RigError):
            self.ns.tap(tap)
        argv = self.ns.exec(
            "qemu-system-x86_64", *self.accel.args, "-m", str(self.memory_mb), "-smp", "1",
            "-kernel", str(self.image / "vmlinuz"), "-initrd", str(self.image / "initrd.img"),
            "-append", f"root=/dev/vda rw console=ttyS0 quiet net.ifnames=0 panic=-1 zbsvm.ip={self.ip}/24 "
                       f"systemd.hostname={self.name}",
            "-drive", f"file={self.disk},if=virtio,format=qcow2,cache=unsafe",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:77:00:{VM_BASE + self.index:02x},romfile=",
            "-virtfs", f"local,path={ROOT},mount_tag=repo,security_model=none,readonly=on",
            "-virtfs", f"local,path={self.share},mount_tag=share,security_model=none",
            "-display", "none", "-serial", f"file:{self.console}", "-monitor", "none", "-no-reboot",
        )  # fmt: skip
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ssh(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RigError(f"{self.name}: qemu exited {self.proc.returncode}: {err[-2000:]}")
            res = subprocess.run(
                self.ns.exec(*self._ssh_base(), f"root@{self.ip}", "true"), capture_output=True, check=False
            )
            if res.returncode == 0:
                self.boot_seconds = time.monotonic() - self._t0
                self._prepare()
                return
            time.sleep(1)
        tail = self.console.read_text(errors="replace")[-3000:] if self.console.exists() else ""
        raise RigError(f"{self.name}: no ssh after {timeout:.0f} s; console:\n{tail}")

    def _prepare(self) -> None:
        """Mount the checkout and the share, and let Debian's python3 import the project."""
        site = ROOT / ".venv" / "lib" / "python3.11" / "site-packages"
        p9 = "mount -t 9p -o trans=virtio,version=9p2000.L"
        self.sh(
            f"mkdir -p {ROOT} /mnt/share && (mountpoint -q {ROOT} || {p9},ro repo {ROOT}) && "
            f"(mountpoint -q /mnt/share || {p9} share /mnt/share) && "
            f"echo \"import site; site.addsitedir('{site}')\" > /usr/lib/python3/dist-packages/zbs-venv.pth"
        )
        # The image carries no initiator name (cloned nodes must not share one): provisioning
        # gives each node its own, as Debian's open-iscsi postinst would have.
        self.sh(
            "[ -s /etc/iscsi/initiatorname.iscsi ] || "
            "echo InitiatorName=$(iscsi-iname -p iqn.1993-08.org.debian:01) > /etc/iscsi/initiatorname.iscsi"
        )
        self.iqn = self.sh("sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi").stdout.strip()

    def kill(self) -> None:
        """Power cut: SIGKILL qemu (no logout, no flush)."""
        self.plugin_env = {}
        self.stop_forward()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        run(["ssh", "-o", f"ControlPath={self.work}/{self.name}.mux", "-O", "exit", "x"], check=False, timeout=10)

    def shutdown(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.stop_forward()
        with contextlib.suppress(subprocess.TimeoutExpired, RigError):
            self.sh("systemctl poweroff", check=False, timeout=20)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.kill()
        run(["ssh", "-o", f"ControlPath={self.work}/{self.name}.mux", "-O", "exit", "x"], check=False, timeout=10)

    # ------------------------------------------------------------------ node plugin
    def start_plugin(self, connector: str = "kernel", **env: str) -> Csi:
        """The node plugin as a transient systemd unit; its socket forwarded here."""
        self.plugin_env = {"connector": connector, **env}
        props = " ".join(f"-E {k}={shlex.quote(v)}" for k, v in {"PYTHONDONTWRITEBYTECODE": "1", **env}.items())
        self.sh(
            "systemctl reset-failed zbs-csi-node 2>/dev/null; mkdir -p /run/zbs-csi && rm -f /run/zbs-csi/csi.sock && "
            f"systemd-run --unit=zbs-csi-node --property=StandardOutput=append:/mnt/share/node.log "
            f"--property=StandardError=append:/mnt/share/node.log {props} "
            f"python3 -m zbs_csi.main --mode node --connector {connector} --host-exec none "
            "--endpoint unix:///run/zbs-csi/csi.sock --state-dir /var/lib/zbs-csi --log-level debug && "
            "for i in $(seq 1 600); do [ -S /run/zbs-csi/csi.sock ] && exit 0; "
            "systemctl is-active -q zbs-csi-node || exit 1; sleep 0.2; done; exit 1",
            timeout=200,
        )
        return self.connect()

    def connect(self) -> Csi:
        self.stop_forward()
        self.csi_sock.unlink(missing_ok=True)
        argv = self.ns.exec(
            *self._ssh_base(), "-o", "ControlPath=none", "-o", "ExitOnForwardFailure=yes", "-N",
            "-L", f"{self.csi_sock}:/run/zbs-csi/csi.sock", f"root@{self.ip}",
        )  # fmt: skip
        self.forward = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while not self.csi_sock.exists():
            if self.forward.poll() is not None or time.monotonic() > deadline:
                raise RigError(f"{self.name}: the CSI socket forward did not come up")
            time.sleep(0.2)
        node = Csi(self.csi_sock)
        node.wait(60)
        return node

    def stop_forward(self) -> None:
        if self.forward is not None and self.forward.poll() is None:
            self.forward.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.forward.wait(10)
        self.forward = None

    def kill_plugin(self) -> None:
        self.plugin_env = {}
        self.sh("systemctl kill -s KILL zbs-csi-node; systemctl reset-failed zbs-csi-node 2>/dev/null; true")

    def stop_plugin(self) -> None:
        self.plugin_env = {}
        self.sh("systemctl stop zbs-csi-node 2>/dev/null; systemctl reset-failed zbs-csi-node 2>/dev/null; true")

    # ------------------------------------------------------------------ what is on the node
    def leftovers(self, target_iqn: str, volume_id: str) -> list[str]:
        """Sessions, node records, SCSI devices and maps of a volume/target still on the node."""
        serial = volume_id.replace("-", "")
        out = self.sh(
            f"iscsiadm -m session 2>/dev/null | grep -F {shlex.quote(target_iqn)} | sed 's/^/session: /'; "
            f"iscsiadm -m node 2>/dev/null | grep -F {shlex.quote(target_iqn)} | sed 's/^/node record: /'; "
            f"for d in /sys/block/sd*; do [ -e $d/device/vpd_pg80 ] && grep -qa {serial} $d/device/vpd_pg80 "
            '&& echo "SCSI device: ${d##*/}"; done; '
            f'for u in /sys/block/dm-*/dm/uuid; do [ -e $u ] && grep -q {serial[:25]} $u && echo "map: $u"; done; '
            f"ls /var/lib/zbs-csi/volumes/{volume_id}.json 2>/dev/null | sed 's/^/stage record: /'; true",
            check=False,
        ).stdout
        return [line for line in out.splitlines() if line.strip()]

    def active_paths(self, wwid: str) -> int:
        """Paths of the multipath map ``wwid`` that are up (``active ready running``)."""
        out = self.sh(f"multipath -ll {shlex.quote(wwid)}").stdout
        return len(re.findall(r"active\s+ready\s+running", out))

    def journal(self, unit: str, since: str, expect: str, timeout: float = 30) -> str:
        """``unit``'s journal since epoch ``since``, polled until it holds ``expect`` (or ``timeout``).

        A daemon's line reaches journald a moment after the client that caused it has returned
        (iscsid logs a refused CHAP login after iscsiadm exited 24; CI saw it land late once).
        """
        deadline = time.monotonic() + timeout
        while True:
            out = self.sh(f"journalctl -u {shlex.quote(unit)} --since @{int(since)} --no-pager").stdout
            if expect in out or time.monotonic() > deadline:
                return out
            time.sleep(0.5)

    def log_since(self, offset: int) -> str:
        try:
            with open(self.node_log, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.node_log.stat().st_size
        except OSError:
            return 0


# ---------------------------------------------------------------------------------- kubelet's side
@dataclass
class Staged:
    volume_id: str
    context: dict[str, str]
    staging: str
    target: str
    cap: Any
    block: bool

    @property
    def target_iqn(self) -> str:
        return self.context["targetIqn"]


def stage(node: Csi, volume_id: str, context: dict[str, str], *, block: bool = False, fs: str = "xfs",
          pod: str = "p") -> Staged:  # fmt: skip
    staging = f"/var/lib/kubelet/plugins/kubernetes.io/csi/zbs/{volume_id}/globalmount"
    target = f"/var/lib/kubelet/pods/{pod}/volumes/{volume_id}/{'dev' if block else 'mount'}"
    cap = block_cap() if block else mount_cap(fs)
    node.node.NodeStageVolume(
        csi.NodeStageVolumeRequest(
            volume_id=volume_id, publish_context=context, staging_target_path=staging, volume_capability=cap
        ),
        timeout=600,
    )
    node.node.NodePublishVolume(
        csi.NodePublishVolumeRequest(
            volume_id=volume_id,
            publish_context=context,
            staging_target_path=staging,
            target_path=target,
            volume_capability=cap,
        ),
        timeout=120,
    )
    return Staged(volume_id, context, staging, target, cap, block)


def unstage(node: Csi, s: Staged) -> None:
    node.node.NodeUnpublishVolume(
        csi.NodeUnpublishVolumeRequest(volume_id=s.volume_id, target_path=s.target), timeout=120
    )
    node.node.NodeUnstageVolume(
        csi.NodeUnstageVolumeRequest(volume_id=s.volume_id, staging_target_path=s.staging), timeout=600
    )


def stats(node: Csi, s: Staged) -> Any:
    return node.node.NodeGetVolumeStats(
        csi.NodeGetVolumeStatsRequest(volume_id=s.volume_id, volume_path=s.target), timeout=60
    )


# ---------------------------------------------------------------------------------- the rig
class Rig:
    """Namespace, zbs-lite, controller and node VMs; ``close`` removes all of it."""

    def __init__(self, work: Path, vms: int = 2) -> None:
        self.work = work
        self.accel = accelerator()
        self.image = vm_image()
        self.ns = Netns()
        self.zbs = ZbsLite(self.ns, work)
        self.controller = Controller(self.ns, work, self.zbs)
        self.vms = [Vm(chr(ord("a") + i), i, self.ns, self.image, work, self.accel) for i in range(vms)]

    def start(self) -> Rig:
        self.ns.up()
        for vm in self.vms:  # boot first: the VMs take longest and need nothing else yet
            vm.create_disk()
            vm.boot()
        self.zbs.start()
        self.controller.start()
        errors: list[BaseException] = []

        def wait(vm: Vm) -> None:
            try:
                vm.wait_ssh()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=wait, args=(vm,)) for vm in self.vms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return self

    def apply_node_role(self, vm: Vm, **extra_vars: Any) -> subprocess.CompletedProcess[str]:
        """The zbs_node role on the VM, its real target: open-iscsi tuned, multipath configured."""
        inventory = self.work / f"inventory-{vm.name}.yml"
        inventory.write_text(
            json.dumps(
                {
                    "all": {
                        "hosts": {
                            vm.name: {
                                "ansible_host": vm.ip,
                                "ansible_user": "root",
                                "ansible_python_interpreter": "/usr/bin/python3",
                                "ansible_ssh_private_key_file": str(self.image / "ssh" / "id_ed25519"),
                                "ansible_ssh_common_args": SSH_OPTS,
                                **extra_vars,
                            }
                        }
                    }
                }
            )
        )
        playbook = self.work / "node.yml"
        playbook.write_text("- hosts: all\n  roles:\n    - smartx.zbs.zbs_node\n")
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
            ANSIBLE_HOST_KEY_CHECKING="False",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_PIPELINING="True",  # one ssh round trip per task: they are slow under TCG
            ANSIBLE_LOCAL_TEMP=str(self.work / "ansible-tmp"),
        )
        bin_dir = Path(sys.executable).parent
        return run(
            self.ns.exec(str(bin_dir / "ansible-playbook"), "-i", str(inventory), str(playbook)), timeout=900, env=env
        )

    def close(self) -> None:
        for vm in self.vms:
            vm.stop_forward()
        self.controller.stop()
        for vm in self.vms:
            with contextlib.suppress(Exception):
                vm.kill()
        self.zbs.stop()
        self.ns.down()


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    t0 = time.monotonic()
    yield box
    box.append(time.monotonic() - t0)


# ---------------------------------------------------------------------------------- fsync'd writers
class Writer:
    """tests/vm/writer.py in a VM: fsync'd 4 KiB records, each acknowledged on stdout as it lands."""

    def __init__(self, vm: Vm, path: str, seconds: float = 900, *, start: int = 0, direct: bool = False) -> None:
        self.vm = vm
        self.path = path
        self.start = start
        self.direct = direct
        self.acks: list[tuple[int, float]] = []
        script = ROOT / "tests" / "vm" / "writer.py"
        cmd = f"python3 {script} write {shlex.quote(path)} --seconds {seconds} --start {start}"
        self.proc = subprocess.Popen(
            vm.ssh_argv(cmd + (" --direct" if direct else "")),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ack":
                self.acks.append((int(parts[1]), float(parts[2])))

    def wait_acks(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acks) < count:
            if self.proc.poll() is not None and len(self.acks) < count:
                self._reader.join(5)
                if len(self.acks) >= count:
                    return
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RigError(f"writer on {self.vm.name} stopped after {len(self.acks)} acks: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise RigError(f"writer on {self.vm.name}: {len(self.acks)} of {count} acks in {timeout:.0f} s")
            time.sleep(0.2)

    def join(self, timeout: float = 600) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    def stop(self) -> None:
        """End the writer; every write acknowledged so far counts, later ones do not."""
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        self._reader.join(10)
        self.vm.sh("pkill -f tests/vm/writer.py; true", check=False)

    @property
    def last(self) -> int:
        return self.acks[-1][0] if self.acks else self.start - 1

    def longest_pause(self) -> float:
        """The longest time between two consecutive acknowledged writes (the I/O stall)."""
        times = [t for _, t in self.acks]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def verify(self, vm: Vm | None = None, path: str | None = None) -> str:
        """Every acknowledged record is intact (read after dropping the page cache)."""
        vm = vm or self.vm
        script = ROOT / "tests" / "vm" / "writer.py"
        direct = " --direct" if self.direct else ""
        return vm.sh(
            f"sync; echo 3 > /proc/sys/vm/drop_caches; python3 {script} verify {shlex.quote(path or self.path)} "
            f"{self.last + 1} --start {self.start}{direct}",
            check=False,
        ).stdout.strip()


def node_plugin(vm: Vm, *, multipath: bool, connector: str = "kernel") -> Csi:
    """The VM's node plugin with this connector and multipath on or off, (re)started only when that changes."""
    env = {"ZBS_CSI_MULTIPATH": "true" if multipath else "false"}
    cached: Csi | None = getattr(vm, "_csi", None)
    same = vm.plugin_env == {"connector": connector, **env}
    if cached is not None and same and vm.forward is not None and vm.forward.poll() is None:
        return cached
    vm.stop_plugin()
    node = vm.start_plugin(connector, **env)
    vm._csi = node  # type: ignore[attr-defined]
    return node


@dataclass
class Failover:
    chunk: int
    pause: float  # the longest time between two acknowledged writes
    acks: int
    verified: str  # "ok" when every acknowledged write reads back intact


def chunk_failover(rig: Rig, vm: Vm, s: Staged, chunk: int, during: Callable[[], None] | None = None) -> Failover:
    """Stop ``chunk`` while ``vm`` writes fsync'd records to ``s``; start it once writes resumed."""
    writer = Writer(vm, f"{s.target}/records")
    try:
        writer.wait_acks(30)
        rig.zbs.chunk("stop", chunk)
        try:
            writer.wait_acks(len(writer.acks) + 30, timeout=300)
            if during is not None:
                during()
        finally:
            rig.zbs.chunk("start", chunk)
    finally:
        writer.stop()
    return Failover(chunk, writer.longest_pause(), len(writer.acks), writer.verify())


def provision(
    rig: Rig, vm: Vm, node: Csi, name: str, undo: list[Callable[[], object]], *, fs: str = "xfs", block: bool = False
) -> Staged:
    """CreateVolume, ControllerPublish to ``vm``, NodeStage + NodePublish; each undone in ``undo``."""
    ctl = rig.controller
    vid = ctl.create(name, GiB, fs=fs, block=block)
    undo.append(lambda: ctl.delete(vid))
    ctx = ctl.publish(vid, vm.iqn, block=block)
    undo.append(lambda: ctl.unpublish(vid, vm.iqn))
    s = stage(node, vid, ctx, fs=fs, block=block, pod=name)
    undo.append(lambda: unstage(node, s))
    return s


def retire(rig: Rig, vm: Vm, node: Csi, s: Staged) -> list[str]:
    """NodeUnpublish + NodeUnstage, ControllerUnpublish, DeleteVolume; what the node still holds."""
    unstage(node, s)
    rig.controller.unpublish(s.volume_id, vm.iqn)
    left = vm.leftovers(s.target_iqn, s.volume_id)
    rig.controller.delete(s.volume_id)
    return left
