"""The userspace connector: qemu-storage-daemon (libiscsi) + a FUSE export + a loop device.

For nodes without the iscsi_tcp kernel module (microVMs, CI machines). qemu-storage-daemon
logs in with the node's own IQN (so LUN masking applies exactly as with open-iscsi), CHAP
comes from a 0600 secret file that is removed once the daemon has read it, the LUN appears
as a file through FUSE, and ``losetup`` turns that file into a block device. The daemon is
detached, so volumes stay attached while the plugin restarts; everything it needs to tear
down is recorded in the attachment data.

When the target goes away, libiscsi reconnects forever and every request on the export
waits: a workload would hang, and so would an unmount or a loop detach, in the kernel. So a
session down for ``replacement_timeout`` (open-iscsi's name for the same bound) gets the
export's FUSE connection aborted: its I/O fails from then on (``fail_io_if_lost``, called
by the node's session watch and before each teardown step). Teardown also kills a daemon
that ignores SIGTERM; a lazy unmount of the export is the last resort.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from ...ids import check_volume_id
from ..mounts import find_mount
from ..runner import CommandError, Runner
from . import fuse
from .base import Attachment, AttachTarget, Chap, ConnectorError
from .qmp import QmpError, qmp_execute
from .tcp import has_established

log = logging.getLogger(__name__)

NODE_NAME = "lun"
EXPORT_ID = "exp"
# qemu's iscsi ``timeout``: a command unanswered this long (s) makes libiscsi reconnect and
# retry it, through the VIP, so a stuck chunk is left behind (Linux sd's default is also 30 s).
REQUEST_TIMEOUT = 30
IO_FAILED = "io-failed"  # in the run directory: this export's I/O was failed (session lost)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class UserspaceConnector:
    name = "userspace"

    def __init__(
        self,
        runner: Runner,
        state_dir: str,
        initiator: str,
        *,
        timeout: float = 120.0,
        replacement_timeout: float = 120.0,
    ) -> None:
        self.runner = runner
        self.root = Path(state_dir) / "userspace"
        self.initiator = initiator
        self.timeout = timeout
        self.replacement_timeout = replacement_timeout
        self._down_since: dict[str, float] = {}  # "<export>:<daemon pid>" -> when its session was seen down

    def missing(self) -> list[str]:
        need = ["qemu-storage-daemon", "iscsi-inq", "losetup", "blockdev"]
        missing = [b for b in need if shutil.which(b, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
        if not Path("/dev/fuse").exists():
            missing.append("/dev/fuse")
        return missing

    def _dir(self, volume_id: str) -> Path:
        return self.root / check_volume_id(volume_id)

    def attach(self, target: AttachTarget, chap: Chap | None) -> Attachment:
        run = self._dir(target.volume_id)
        if run.exists():
            # A leftover of an interrupted attach: clean it before starting afresh.
            self.detach(target, self._data_for(run), [])
        serial = self.read_serial(target, chap)
        if serial != target.volume_id.replace("-", "").lower():
            raise ConnectorError(
                f"LUN {target.lun} of {target.target_iqn} is {serial or 'unidentified'}, not volume "
                f"{target.volume_id}: refusing to use it (stale LUN id?)",
                retryable=False,
            )
        run.mkdir(parents=True, mode=0o700)
        disk, qmp, pidfile, secret = run / "disk", self._qmp_path(run), run / "qsd.pid", run / "chap"
        disk.touch()
        host, _, port = target.portal.rpartition(":")
        blockdev = (
            f"driver=iscsi,node-name={NODE_NAME},transport=tcp,portal={host}:{port},"
            f"target={target.target_iqn},lun={target.lun},initiator-name={self.initiator},"
            f"read-only={'on' if target.readonly else 'off'},timeout={REQUEST_TIMEOUT}"
        )
        argv = [
            "qemu-storage-daemon",
            "--daemonize",
            "--pidfile",
            str(pidfile),
            "--chardev",
            f"socket,id=qmp,path={qmp},server=on,wait=off",
            "--monitor",
            "chardev=qmp",
        ]
        if chap is not None:
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(chap.password)
            argv += ["--object", f"secret,id=chap,file={secret}"]
            blockdev += f",user={chap.username},password-secret=chap"
        argv += [
            "--blockdev",
            blockdev,
            "--export",
            f"type=fuse,id={EXPORT_ID},node-name={NODE_NAME},mountpoint={disk},"
            f"writable={'off' if target.readonly else 'on'}",
        ]
        data: dict[str, Any] = {"run_dir": str(run), "disk": str(disk), "qmp": str(qmp), "pidfile": str(pidfile)}
        try:
            self.runner.run(argv, timeout=self.timeout)
        except CommandError as exc:
            self._cleanup_dir(run)
            raise ConnectorError(f"iSCSI login to {target.target_iqn} lun {target.lun} failed: {exc.stderr}") from exc
        finally:
            secret.unlink(missing_ok=True)
        try:
            data["pid"] = int(pidfile.read_text().strip())
            size = disk.stat().st_size
            if size <= 0:
                raise ConnectorError(f"lun {target.lun} of {target.target_iqn} reports no capacity")
            loop = self.runner.run(["losetup", "--find", "--show", str(disk)], timeout=60).stdout.strip()
            if not loop.startswith("/dev/loop"):
                raise ConnectorError(f"losetup gave no loop device for {disk}")
            data["loop"] = loop
        except (CommandError, OSError, ValueError) as exc:
            self.detach(target, data, [])
            raise ConnectorError(f"exposing lun {target.lun} of {target.target_iqn} as a block device: {exc}") from exc
        except ConnectorError:
            self.detach(target, data, [])
            raise
        log.info("attached", extra={"fields": {"device": loop, "target": target.target_iqn, "lun": target.lun}})
        return Attachment(loop, data)

    def read_serial(self, target: AttachTarget, chap: Chap | None) -> str:
        """The LUN's VPD 0x80 unit serial, read through a login with the node's own IQN.

        This checks identity (a LUN id reused after a delete is another volume) and access
        (masking, CHAP) before anything is created on the host. libiscsi takes the CHAP
        secret from its environment, never from argv.
        """
        env: dict[str, str] = {}
        if chap is not None:
            env = {"LIBISCSI_CHAP_USERNAME": chap.username, "LIBISCSI_CHAP_PASSWORD": chap.password}
        url = f"iscsi://{target.portal}/{target.target_iqn}/{target.lun}"
        argv = ["iscsi-inq", "--initiator-name", self.initiator, "--evpd", "1", "--pagecode", "128", url]
        try:
            out = self.runner.run(argv, timeout=60, env=env).stdout
        except CommandError as exc:
            raise ConnectorError(f"iSCSI login to {target.target_iqn} lun {target.lun} failed: {exc.stderr}") from exc
        m = re.search(r"Unit Serial Number:\[([^\]]*)\]", out)
        return m[1].strip().lower() if m else ""

    @staticmethod
    def _qmp_path(run: Path) -> Path:
        """The QMP socket: in the run dir unless that path is too long for a unix socket."""
        path = run / "qmp.sock"
        if len(str(path).encode()) < 100:
            return path
        short = Path(tempfile.gettempdir()) / "zbs-csi-qmp"
        short.mkdir(mode=0o700, exist_ok=True)
        return short / (hashlib.sha256(str(run).encode()).hexdigest()[:24] + ".sock")

    def _data_for(self, run: Path) -> dict[str, Any]:
        data: dict[str, Any] = {"run_dir": str(run), "disk": str(run / "disk"), "pidfile": str(run / "qsd.pid")}
        with contextlib.suppress(OSError, ValueError):
            data["pid"] = int((run / "qsd.pid").read_text().strip())
        return data

    @staticmethod
    def _loops_for(disk: str, sys_block: Path = Path("/sys/block")) -> list[str]:
        """Loop devices backed by ``disk``, from sysfs: ``losetup --associated`` would stat
        the export, and a stat of an export whose daemon cannot answer waits with it."""
        loops = []
        for backing in sys_block.glob("loop*/loop/backing_file"):
            try:
                if backing.read_text(encoding="utf-8").strip() == disk:
                    loops.append(f"/dev/{backing.parent.parent.name}")
            except OSError:
                continue
        return sorted(loops)

    def _daemon(self, data: dict[str, Any]) -> int | None:
        """The pid of this attachment's qemu-storage-daemon, while it runs."""
        pid = data.get("pid")
        if isinstance(pid, int) and pid > 1 and _pid_alive(pid) and self._is_ours(pid, data.get("run_dir", "")):
            return pid
        return None

    def fail_io_if_lost(self, data: dict[str, Any], wait: bool = True) -> bool:
        """When the iSCSI session has been down for ``replacement_timeout``, fail the export's I/O.

        ``wait``: a teardown waits out the rest of that time for the session to return; the
        session watch only looks. True when the device's I/O fails from now on (failed here
        or before, or its daemon is gone); False while the session is up or may still return.
        """
        if self._io_failed(data):
            return True
        while True:
            pid = self._daemon(data)
            if pid is None:
                return True  # the daemon is gone: the kernel ended its FUSE connection with it
            key = f"{data.get('disk', '')}:{pid}"
            if has_established(pid):
                self._down_since.pop(key, None)
                return False
            down = time.monotonic() - self._down_since.setdefault(key, time.monotonic())
            if down >= self.replacement_timeout:
                break
            if not wait:
                return False
            time.sleep(min(0.5, self.replacement_timeout - down))
        log.warning("the iSCSI session of %s has been down for %.0fs: failing its pending I/O", data.get("disk"), down)
        self._fail_io(data)
        return True

    def _io_failed(self, data: dict[str, Any]) -> bool:
        run = data.get("run_dir", "")
        return bool(run) and (Path(run) / IO_FAILED).exists()

    def _fail_io(self, data: dict[str, Any]) -> None:
        """Abort the export's FUSE connection (once): its pending and future I/O fail at once.

        A marker in the run directory remembers it (across plugin restarts) for ``condition``.
        """
        if self._io_failed(data):
            return
        if data.get("disk"):
            fuse.abort(data["disk"], self.runner)
        if data.get("run_dir"):
            with contextlib.suppress(OSError):
                (Path(data["run_dir"]) / IO_FAILED).write_text(f"{time.time():.0f}\n", encoding="ascii")

    def detach(self, target: AttachTarget, data: dict[str, Any], still_staged: list[AttachTarget]) -> None:
        """Loop devices, daemon, export, run directory: each step bounded, whatever state the target is in."""
        disk = data.get("disk", "")
        lost = self.fail_io_if_lost(data)  # nothing below may wait on a device that can no longer answer
        loops = set(self._loops_for(disk)) if disk else set()
        if data.get("loop"):
            loops.add(data["loop"])
        for loop in sorted(loops):
            self._detach_loop(loop, data)
        self._stop_daemon(data, grace=2 if lost else 15)
        if disk and find_mount(disk) is not None:
            # The daemon did not unmount its export (it was killed): end the connection, unmount.
            self._fail_io(data)
            res = self.runner.run(["umount", disk], timeout=30, check=False)
            if res.rc != 0 and find_mount(disk) is not None:
                self.runner.run(["umount", "--lazy", disk], timeout=30)
        for key in [k for k in self._down_since if k.startswith(f"{disk}:")]:
            del self._down_since[key]
        if data.get("run_dir"):
            self._cleanup_dir(Path(data["run_dir"]))

    def _detach_loop(self, loop: str, data: dict[str, Any]) -> None:
        for attempt in range(2):
            try:
                res = self.runner.run(["losetup", "--detach", loop], timeout=60, check=False)
            except CommandError as exc:  # timed out: its backing export holds the I/O
                if attempt:
                    raise ConnectorError(f"detaching {loop}: {exc}") from exc
                self._fail_io(data)
                continue
            if res.rc != 0 and "No such device" not in res.stderr:
                raise ConnectorError(f"detaching {loop}: {res.stderr.strip()}")
            return

    def _stop_daemon(self, data: dict[str, Any], grace: float) -> None:
        """SIGTERM (the daemon unmounts its export); one still running after ``grace`` s is killed.

        A daemon whose session is lost has nothing left to write, and libiscsi's reconnect
        loop ignores SIGTERM: it gets a short grace.
        """
        pid = self._daemon(data)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            # Stuck (libiscsi reconnecting, or waiting on its own export): fail the export's
            # I/O so nothing waits on the daemon, then kill it.
            log.warning("qemu-storage-daemon %d ignores SIGTERM: killing it", pid)
            self._fail_io(data)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    @staticmethod
    def _is_ours(pid: int, run_dir: str) -> bool:
        """Only signal a pid that is still our qemu-storage-daemon (pids get reused)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return "qemu-storage-daemon" in cmdline and bool(run_dir) and run_dir in cmdline

    def _cleanup_dir(self, run: Path) -> None:
        if run.parent != self.root:
            return
        for name in ("chap", "qmp.sock", "qsd.pid", IO_FAILED, "disk"):
            with contextlib.suppress(OSError):
                (run / name).unlink()
        self._qmp_path(run).unlink(missing_ok=True)
        try:
            run.rmdir()
        except OSError:
            shutil.rmtree(run, ignore_errors=True)

    def resize(self, target: AttachTarget, data: dict[str, Any], size: int) -> int:
        try:
            if size > 0:
                qmp_execute(data["qmp"], "block_resize", {"node-name": NODE_NAME, "size": size})
        except (QmpError, OSError, KeyError) as exc:
            raise ConnectorError(f"block_resize of {target.volume_id}: {exc}") from exc
        # The FUSE attribute cache holds the old size for up to a second.
        deadline = time.monotonic() + 10
        while Path(data["disk"]).stat().st_size < size and time.monotonic() < deadline:
            time.sleep(0.2)
        self.runner.run(["losetup", "--set-capacity", data["loop"]], timeout=60)
        return int(self.runner.run(["blockdev", "--getsize64", data["loop"]], timeout=30).stdout.strip())

    def condition(self, data: dict[str, Any]) -> str | None:
        if self._io_failed(data):
            return "the iSCSI session was lost and the volume's I/O was failed: it must be staged again"
        pid = data.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return "the qemu-storage-daemon carrying the iSCSI session is not running"
        loop = data.get("loop", "")
        if not loop or not Path(loop).exists():
            return f"loop device {loop or '?'} is gone"
        disk = data.get("disk", "")
        if disk not in self._loops_for_backing(loop):
            return f"loop device {loop} no longer points at the volume"
        return None

    def _loops_for_backing(self, loop: str) -> str:
        try:
            return Path(f"/sys/block/{Path(loop).name}/loop/backing_file").read_text(encoding="utf-8").strip()
        except OSError:
            return ""
