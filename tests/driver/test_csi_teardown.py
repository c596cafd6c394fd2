"""Single-writer publishes and a teardown that always completes, on real parts.

Each test runs its own zbs-lite and real zbs-csi processes (controller and node, userspace
connector: iSCSI logins by qemu-storage-daemon, FUSE exports, loop devices, xfs mounts),
talking gRPC as Kubernetes would. The leftover case of issue #17: a SINGLE_NODE_SINGLE_WRITER
volume published twice, then cleaned up while zbs-lite is stopped midway: NodeUnpublish and
NodeUnstage must remove every mount, loop device and daemon, in bounded time.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from csi_harness import NODE_A, DriverProcess, GiB, Mode, block_cap, clean_env, code_of, host_leftovers, mount_cap
from zbs_csi.node.connectors import fuse
from zbs_csi.node.mounts import read_mounts
from zbs_csi.node.runner import Runner
from zbs_csi.proto import csi_pb2 as csi

from zbs_lite.testing import ZbsLiteProcess

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real loop devices, FUSE, mounts")

REPLACEMENT_TIMEOUT = 5  # seconds a lost session may stay down before teardown fails its I/O
OK, PRECONDITION = grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION


def _cap(access: str, mode: int) -> csi.VolumeCapability:
    return mount_cap("xfs", mode) if access == "mount" else block_cap(mode)


@dataclass
class Node:
    """A controller and one node plugin on their own zbs-lite, driven like kubelet and the sidecars."""

    work: Path
    zl: ZbsLiteProcess
    ctrl: DriverProcess
    node: DriverProcess

    @property
    def stage(self) -> Path:
        return self.work / "stage"

    def create(self, name: str, cap: csi.VolumeCapability) -> tuple[str, dict[str, str]]:
        """CreateVolume and ControllerPublish to the node: the volume id and publish context."""
        vid = self.ctrl.controller.CreateVolume(
            csi.CreateVolumeRequest(
                name=name, capacity_range=csi.CapacityRange(required_bytes=GiB), volume_capabilities=[cap]
            ),
            timeout=300,
        ).volume.volume_id
        ctx = self.ctrl.controller.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE_A, volume_capability=cap), timeout=120
        ).publish_context
        return vid, dict(ctx)

    def stage_volume(self, vid: str, ctx: dict[str, str], cap: csi.VolumeCapability) -> None:
        self.node.node.NodeStageVolume(
            csi.NodeStageVolumeRequest(
                volume_id=vid, staging_target_path=str(self.stage), publish_context=ctx, volume_capability=cap
            ),
            timeout=300,
        )

    def publish(self, vid: str, target: Path, cap: csi.VolumeCapability, readonly: bool = False) -> grpc.StatusCode:
        req = csi.NodePublishVolumeRequest(
            volume_id=vid,
            staging_target_path=str(self.stage),
            target_path=str(target),
            volume_capability=cap,
            readonly=readonly,
        )
        return code_of(self.node.node.NodePublishVolume, req)

    def unpublish(self, vid: str, target: Path) -> grpc.StatusCode:
        req = csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(target))
        return code_of(self.node.node.NodeUnpublishVolume, req)

    def unstage(self, vid: str, timeout: float = 120) -> grpc.StatusCode:
        req = csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(self.stage))
        return code_of(self.node.node.NodeUnstageVolume, req, timeout=timeout)

    def delete(self, vid: str) -> None:
        """ControllerUnpublish and DeleteVolume (zbs-lite restarted first if it was stopped)."""
        if not self.zl.running:
            self.zl.start()
        self.ctrl.controller.ControllerUnpublishVolume(
            csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE_A), timeout=120
        )
        self.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=120)


def force_cleanup(work: Path) -> None:
    """Safety net after a failed test: what the driver should have removed, removed by force.

    Aborting the FUSE exports first frees anything blocked on them (an unmount in D state),
    so a failing run never leaves this machine with mounts nobody can remove.
    """
    runner = Runner(default_timeout=30)
    for entry in reversed(read_mounts()):
        if entry.mount_point.startswith(f"{work}/") and entry.fs_type.startswith("fuse"):
            fuse.abort(entry.mount_point, runner)
    for pid_dir in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
            if cmdline.startswith("qemu-storage-daemon") and str(work) in cmdline:
                os.kill(int(pid_dir.name), signal.SIGKILL)
    for entry in reversed(read_mounts()):
        if entry.mount_point.startswith(f"{work}/"):
            subprocess.run(["umount", "--lazy", entry.mount_point], check=False, timeout=30)
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text(encoding="utf-8").startswith(f"{work}/"):
                subprocess.run(["losetup", "--detach", f"/dev/{backing.parent.parent.name}"], check=False, timeout=30)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    zl = ZbsLiteProcess(tmp_path / "zbs-lite").start()
    env = clean_env(zl.env)
    env.update(
        ZBS_CSI_DEFAULT_REPLICA_NUM="1",
        ZBS_CSI_KUBERNETES_CLUSTER_ID="teardown",
        ZBS_CSI_LOG_LEVEL="debug",
        ZBS_CSI_ISCSI_REPLACEMENT_TIMEOUT=str(REPLACEMENT_TIMEOUT),
    )
    n = Node(
        tmp_path,
        zl,
        DriverProcess(tmp_path, "controller", env, name="ctrl"),
        DriverProcess(tmp_path, "node", env, node_id=NODE_A, name="node"),
    )
    try:
        n.ctrl.start()
        n.node.start()
        yield n
    finally:
        n.node.stop()
        n.ctrl.stop()
        force_cleanup(tmp_path)
        zl.stop()


def _write_unsynced(access: str, target: Path) -> None:
    """Data the kernel still has to write back when the storage goes away."""
    if access == "mount":
        (target / "data").write_bytes(os.urandom(8 << 20))  # xfs delays allocation: dirty pages
    else:
        fd = os.open(target, os.O_WRONLY)
        try:
            os.write(fd, os.urandom(1 << 20))
        finally:
            os.close(fd)


@pytest.mark.parametrize("access", ["mount", "block"])
def test_publish_twice_fail_then_clean_up_with_zbs_lite_stopped_midway(node: Node, access: str) -> None:
    cap = _cap(access, Mode.SINGLE_NODE_SINGLE_WRITER)
    vid, ctx = node.create(f"teardown-{access}", cap)
    node.stage_volume(vid, ctx, cap)
    first, second = node.work / "pods" / "a" / "vol", node.work / "pods" / "b" / "vol"
    assert node.publish(vid, first, cap) == OK
    _write_unsynced(access, first)

    problems = []
    code = node.publish(vid, second, cap)
    if code != PRECONDITION:
        problems.append(f"a second publish of a SINGLE_NODE_SINGLE_WRITER volume gave {code}")
    if os.path.lexists(second):
        problems.append(f"the refused publish left {second} behind")

    node.zl.stop()  # the storage goes away midway
    # The CO cleans up both paths it asked for (NodeUnpublish after a failed publish is allowed).
    for target in (first, second):
        code = node.unpublish(vid, target)
        if code != OK:
            problems.append(f"NodeUnpublish {target.name} gave {code}")
    t0 = time.monotonic()
    code = node.unstage(vid, timeout=240)
    took = time.monotonic() - t0
    if code != OK:
        problems.append(f"NodeUnstage with zbs-lite stopped gave {code} after {took:.0f}s")

    left = host_leftovers([node.node.state_dir], node.work)
    assert not problems and not left, "\n".join(problems + [f"left behind: {x}" for x in left])
    # The lost session was given up on (pending I/O failed) rather than waited for forever.
    assert "failing its pending I/O" in node.node.log_tail(200_000)
    node.delete(vid)
    assert node.unstage(vid) == OK  # and again: nothing left to do


def _write_through(access: str, path: Path, data: bytes) -> None:
    if access == "mount":
        (path / "shared").write_bytes(data)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, 4096)  # O_DIRECT wants an aligned buffer
            buf.write(data.ljust(4096, b"\0"))
            os.write(fd, buf)
        finally:
            os.close(fd)


def _read_through(access: str, path: Path, size: int) -> bytes:
    if access == "mount":
        return (path / "shared").read_bytes()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 4096)
        os.readv(fd, [buf])
        return bytes(buf[:size])
    finally:
        os.close(fd)


@pytest.mark.parametrize("access", ["mount", "block"])
def test_single_writer_survives_a_plugin_restart_and_multi_writer_publishes_twice(node: Node, access: str) -> None:
    single, multi = Mode.SINGLE_NODE_SINGLE_WRITER, Mode.SINGLE_NODE_MULTI_WRITER
    cap = _cap(access, single)
    vid, ctx = node.create(f"rwop-{access}", cap)
    node.stage_volume(vid, ctx, cap)
    a, b = node.work / "pods" / "a" / "vol", node.work / "pods" / "b" / "vol"
    assert node.publish(vid, a, cap) == OK
    node.node.stop()  # what is published where is on the host, not in the plugin's memory
    node.node.start()
    assert node.publish(vid, b, cap) == PRECONDITION
    assert not os.path.lexists(b)
    assert node.publish(vid, a, cap) == OK  # the same publish again: idempotent
    assert node.publish(vid, a, cap, readonly=True) == grpc.StatusCode.ALREADY_EXISTS
    assert node.publish(vid, b, _cap(access, multi)) == PRECONDITION  # another capability
    assert node.unpublish(vid, a) == OK
    assert node.publish(vid, b, cap) == OK  # once the first publish is gone, the second may go
    assert node.unpublish(vid, b) == OK
    assert node.unstage(vid) == OK

    cap = _cap(access, multi)
    vid2, ctx = node.create(f"rwo-{access}", cap)
    node.stage_volume(vid2, ctx, cap)
    assert node.publish(vid2, a, cap) == OK
    assert node.publish(vid2, b, cap, readonly=True) == OK  # several workloads, one read-only
    _write_through(access, a, b"written through a")
    assert _read_through(access, b, 17) == b"written through a"
    if access == "mount":  # (a read-only bind of a device node does not stop writes to it)
        with pytest.raises(OSError) as exc:
            _write_through(access, b, b"through b")
        assert exc.value.errno == errno.EROFS
    assert node.unstage(vid2) == PRECONDITION  # still published: unpublish first
    assert node.unpublish(vid2, a) == OK
    assert node.unpublish(vid2, b) == OK
    assert node.unstage(vid2) == OK
    assert not host_leftovers([node.node.state_dir], node.work)
    node.delete(vid)
    node.delete(vid2)


def test_io_to_a_lost_volume_fails_after_the_replacement_timeout_and_a_restage_recovers(node: Node) -> None:
    cap = _cap("mount", Mode.SINGLE_NODE_MULTI_WRITER)
    vid, ctx = node.create("lost", cap)
    node.stage_volume(vid, ctx, cap)
    pod = node.work / "pods" / "a" / "vol"
    assert node.publish(vid, pod, cap) == OK
    with open(pod / "before", "w", encoding="utf-8") as fh:
        fh.write("kept")
        fh.flush()
        os.fsync(fh.fileno())

    node.zl.stop()  # the storage goes away while a workload writes
    writer = subprocess.Popen(
        ["dd", "if=/dev/zero", f"of={pod / 'during'}", "bs=64k", "count=16", "oflag=direct"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rc = writer.wait(timeout=REPLACEMENT_TIMEOUT + 60)
    except subprocess.TimeoutExpired:
        pytest.fail("a write to a volume whose session is lost still waits (the session watch did not fail it)")
    assert rc != 0 and "error" in writer.communicate()[1].lower()
    stats = node.node.node.NodeGetVolumeStats(
        csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(pod)), timeout=60
    )
    assert stats.volume_condition.abnormal and "session was lost" in stats.volume_condition.message

    node.zl.start()
    # The pod restarts: kubelet unpublishes, stages again (the broken stage is redone), publishes.
    assert node.unpublish(vid, pod) == OK
    node.stage_volume(vid, ctx, cap)
    assert node.publish(vid, pod, cap) == OK
    assert (pod / "before").read_text(encoding="utf-8") == "kept"
    stats = node.node.node.NodeGetVolumeStats(
        csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(pod)), timeout=60
    )
    assert not stats.volume_condition.abnormal, stats.volume_condition.message
    assert node.unpublish(vid, pod) == OK
    assert node.unstage(vid) == OK
    assert not host_leftovers([node.node.state_dir], node.work)
    node.delete(vid)


def test_fuse_abort_mounts_fusectl_when_missing_and_ends_the_export(tmp_path: Path) -> None:
    """A real FUSE export (qemu-storage-daemon over a plain file), aborted through a fusectl
    mounted by ``fuse.abort`` itself at a directory of the test's own."""
    image, export, conns = tmp_path / "image", tmp_path / "export", tmp_path / "connections"
    image.write_bytes(b"\0" * (1 << 20))
    export.touch()
    conns.mkdir()
    daemon = subprocess.Popen(
        [
            "qemu-storage-daemon",
            "--blockdev",
            f"driver=file,node-name=n,filename={image}",
            "--export",
            f"type=fuse,id=e,node-name=n,mountpoint={export},writable=on",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while export.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert export.stat().st_size == 1 << 20
        assert fuse.abort(str(export), Runner(), connections=conns) is True
        assert any(e.mount_point == str(conns) and e.fs_type == "fusectl" for e in read_mounts())
        with pytest.raises(OSError) as exc:
            export.read_bytes()  # (a stat may still be answered from the attribute cache)
        assert exc.value.errno == errno.ENOTCONN
        assert fuse.abort(str(tmp_path / "not-a-mount"), Runner(), connections=conns) is False
    finally:
        daemon.kill()
        daemon.wait(30)
        for mount in (export, conns):
            subprocess.run(["umount", str(mount)], check=False, timeout=30, capture_output=True)
