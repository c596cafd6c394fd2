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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...ids import check_volume_id
from ..mounts import find_mount
from ..runner import CommandError, Runner
from . import fuse, qsd
from .base import Attachment, AttachTarget, Chap, ConnectorError
from .qmp import QmpError, qmp_execute
from .tcp import has_established

log = logging.getLogger(__name__)

IO_FAILED = "io-failed"  # in the run directory: this export's I/O was failed (session lost)


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
        secret = run / "chap"
        export = qsd.QsdExport(
            portal=target.portal,
            target_iqn=target.target_iqn,
            lun=target.lun,
            initiator=self.initiator,
            disk=run / "disk",
            qmp=self._qmp_path(run),
            pidfile=run / "qsd.pid",
            readonly=target.readonly,
            chap_user=chap.username if chap is not None else "",
            chap_secret_file=secret if chap is not None else None,
        )
        export.disk.touch()
        if chap is not None:
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(chap.password)
        data: dict[str, Any] = {
            "run_dir": str(run),
            "disk": str(export.disk),
            "qmp": str(export.qmp),
            "pidfile": str(export.pidfile),
        }
        try:
            data["pid"] = qsd.start(self.runner, export, self.timeout)
        except CommandError as exc:
            self._cleanup_dir(run)
            raise ConnectorError(f"iSCSI login to {target.target_iqn} lun {target.lun} failed: {exc.stderr}") from exc
        except (OSError, ValueError) as exc:
            self.detach(target, data, [])
            raise ConnectorError(f"qemu-storage-daemon for lun {target.lun} of {target.target_iqn}: {exc}") from exc
        finally:
            secret.unlink(missing_ok=True)
        disk = export.disk
        try:
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
        secrets from its environment, never from argv. Mutual CHAP is checked here: this
        login fails when the target cannot prove the ``_in`` credentials. (qemu-storage-daemon
        has no setting for the target's credentials, so its own session is one-way CHAP.)
        """
        env: dict[str, str] = {}
        if chap is not None:
            env = {"LIBISCSI_CHAP_USERNAME": chap.username, "LIBISCSI_CHAP_PASSWORD": chap.password}
            if chap.username_in:
                env["LIBISCSI_CHAP_TARGET_USERNAME"] = chap.username_in
                env["LIBISCSI_CHAP_TARGET_PASSWORD"] = chap.password_in
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
        if isinstance(pid, int) and pid > 1 and qsd.pid_alive(pid) and qsd.is_ours(pid, data.get("run_dir", "")):
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
        if pid is not None:
            # Stuck (libiscsi reconnecting, or waiting on its own export): the export's I/O is
            # failed first, so nothing waits on the daemon, then it is killed.
            qsd.stop(pid, data.get("run_dir", ""), grace, on_stuck=lambda: self._fail_io(data))

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
                qmp_execute(data["qmp"], "block_resize", {"node-name": qsd.NODE_NAME, "size": size})
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
        if self._io_failed(data):
            return "the iSCSI session was lost and the volume's I/O was failed: it must be staged again"
        pid = data.get("pid")
        if not isinstance(pid, int) or not qsd.pid_alive(pid):
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
