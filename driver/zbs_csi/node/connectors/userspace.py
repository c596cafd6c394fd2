"""The userspace connector: qemu-storage-daemon (libiscsi) + a FUSE export + a loop device.

For nodes without the iscsi_tcp kernel module (microVMs, CI machines). qemu-storage-daemon
logs in with the node's own IQN (so LUN masking applies exactly as with open-iscsi), CHAP
comes from a 0600 secret file that is removed once the daemon has read it, the LUN appears
as a file through FUSE, and ``losetup`` turns that file into a block device. The daemon is
detached, so volumes stay attached while the plugin restarts; everything it needs to tear
down is recorded in the attachment data.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...ids import check_volume_id
from ..runner import CommandError, Runner
from .base import Attachment, AttachTarget, Chap, ConnectorError
from .qmp import QmpError, qmp_execute

log = logging.getLogger(__name__)

NODE_NAME = "lun"
EXPORT_ID = "exp"


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

    def __init__(self, runner: Runner, state_dir: str, initiator: str, *, timeout: float = 120.0) -> None:
        self.runner = runner
        self.root = Path(state_dir) / "userspace"
        self.initiator = initiator
        self.timeout = timeout

    def missing(self) -> list[str]:
        need = ["qemu-storage-daemon", "iscsi-inq", "losetup", "blockdev"]
        missing = [b for b in need if shutil.which(b, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
        if not Path("/dev/fuse").exists():
            missing.append("/dev/fuse")
        return missing

    def _dir(self, volume_id: str) -> Path:
        return self.root / check_volume_id(volume_id)

    def attach(
        self, target: AttachTarget, chap: Chap | None, checkpoint: Callable[[dict[str, Any]], None]
    ) -> Attachment:
        """Everything lives under the volume's run directory, so a re-attach cleans up by itself
        and ``checkpoint`` has nothing to persist before the attachment is complete."""
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
            f"read-only={'on' if target.readonly else 'off'}"
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

    def _loops_for(self, disk: str) -> list[str]:
        try:
            out = self.runner.run(["losetup", "--associated", disk, "--noheadings", "--output", "NAME"], timeout=30)
        except CommandError:
            return []
        return [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("/dev/loop")]

    def detach(self, target: AttachTarget, data: dict[str, Any], still_staged: list[AttachTarget]) -> None:
        disk = data.get("disk", "")
        # No stat of ``disk`` here: a FUSE export whose daemon died answers ENOTCONN.
        loops = set(self._loops_for(disk)) if disk else set()
        if data.get("loop"):
            loops.add(data["loop"])
        for loop in sorted(loops):
            res = self.runner.run(["losetup", "--detach", loop], timeout=60, check=False)
            if res.rc != 0 and "No such device" not in res.stderr:
                raise ConnectorError(f"detaching {loop}: {res.stderr.strip()}")
        pid = data.get("pid")
        if isinstance(pid, int) and pid > 1 and _pid_alive(pid) and self._is_ours(pid, data.get("run_dir", "")):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if disk and self._fuse_mounted(disk):
            self.runner.run(["umount", "--lazy", disk], timeout=30, check=False)
        if data.get("run_dir"):
            self._cleanup_dir(Path(data["run_dir"]))

    @staticmethod
    def _is_ours(pid: int, run_dir: str) -> bool:
        """Only signal a pid that is still our qemu-storage-daemon (pids get reused)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return "qemu-storage-daemon" in cmdline and bool(run_dir) and run_dir in cmdline

    @staticmethod
    def _fuse_mounted(path: str) -> bool:
        try:
            text = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
        except OSError:
            return False
        return any(line.split()[4] == path for line in text.splitlines() if len(line.split()) > 4)

    def _cleanup_dir(self, run: Path) -> None:
        if run.parent != self.root:
            return
        for name in ("chap", "qmp.sock", "qsd.pid", "disk"):
            (run / name).unlink(missing_ok=True)
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

    def verify(self, device: str, data: dict[str, Any], volume_id: str) -> None:
        """The loop device is ours (its backing file is this volume's export), checked before a probe.

        The LUN's identity was read through the node's own login (``iscsi-inq``) before the
        export was made; the export belongs to the volume's run directory.
        """
        if device != data.get("loop") or self._loops_for_backing(device) != data.get("disk"):
            raise ConnectorError(f"{device} is not the loop device of volume {volume_id}", retryable=False)

    def condition(self, data: dict[str, Any], volume_id: str) -> str | None:
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
