"""The kernel connector: open-iscsi (``iscsiadm``) + dm-multipath on the host.

Runs every command through the host-exec strategy (chroot /host or nsenter). The sequence
follows what the hardened anchors learned (Trident, gobrick), as csi.md lists it:

- node records with ``node.startup=manual`` and ``node.session.scan=manual`` (no automatic
  LUN scanning: we rescan only the LUN we need, on the session's own SCSI host);
- a device is identified by what the LUN says about itself (VPD 0x80 serial), never by a
  cached ``/dev/sdX``, so a LUN id reused after delete can never mount the old device;
- iscsiadm is serialized per target, different targets run in parallel;
- logout only when no other staged volume of this node uses the target's session (volumes
  share targets); a failed logout is retryable, never a half-delete;
- teardown: ``multipath -f`` with retries, delete each path through sysfs, forget the WWID;
- expansion: rescan every path, resize the multipath map, then check the device size.

The kernel initiator cannot run on the CI machines (no iscsi_tcp module): tests drive this
connector with a recording runner and a fake sysfs/dev tree (tests/driver/test_csi_kernel_connector.py).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...chap import PASSWORD_IN_KEY, PASSWORD_KEY, USER_IN_KEY, USER_KEY
from ..runner import CommandError, Runner
from .base import Attachment, AttachTarget, Chap, ConnectorError

log = logging.getLogger(__name__)

# Recommended initiator settings of the ZBS guide, plus what CSI-managed sessions need; the
# tunable ones (SessionTuning) follow.
NODE_SETTINGS = (
    ("node.startup", "manual"),
    ("node.session.scan", "manual"),
    ("node.conn[0].timeo.login_timeout", "5"),
    ("node.session.initial_login_retry_max", "24"),
    ("node.session.iscsi.DefaultTime2Wait", "1"),
)


@dataclass(frozen=True)
class SessionTuning:
    """The per-session settings SmartX's driver also exposes (config ``iscsi_*``, role ``zbs_csi_iscsi_*``).

    ``replacement_timeout`` is how long the SCSI layer holds I/O while the session is down
    before failing it to the filesystem (or to dm-multipath); see docs/csi-driver.md for how
    the default relates to the measured failover pauses.
    """

    queue_depth: int = 128
    cmds_max: int = 1024
    replacement_timeout: int = 120

    def settings(self) -> tuple[tuple[str, str], ...]:
        return (
            ("node.session.queue_depth", str(self.queue_depth)),
            ("node.session.cmds_max", str(self.cmds_max)),
            ("node.session.timeo.replacement_timeout", str(self.replacement_timeout)),
        )


_SESSION_LINE = re.compile(r"^(\w+): \[(\d+)\] (\S+?),(\d+) (\S+)")


@dataclass(frozen=True)
class Session:
    transport: str
    sid: int
    portal: str
    tpgt: int
    target_iqn: str


def parse_sessions(text: str) -> list[Session]:
    """``iscsiadm -m session`` output → sessions (``tcp: [3] 10.0.0.1:3260,1 iqn... (non-flash)``)."""
    out = []
    for line in text.splitlines():
        m = _SESSION_LINE.match(line.strip())
        if m:
            out.append(Session(m[1], int(m[2]), m[3], int(m[4]), m[5]))
    return out


def expected_serial(volume_id: str) -> str:
    """ZBS LUNs report their UUID (without dashes) as the VPD 0x80 unit serial number."""
    return volume_id.replace("-", "").lower()


class KernelConnector:
    name = "kernel"

    def __init__(
        self,
        runner: Runner,
        initiator: str,
        *,
        sysfs: str = "/sys",
        dev: str = "/dev",
        multipath: bool = True,
        tuning: SessionTuning | None = None,
        device_timeout: float = 30.0,
        poll: float = 0.2,
    ) -> None:
        self.runner = runner
        self.tuning = tuning or SessionTuning()
        self.initiator = initiator
        self.sys = Path(sysfs)
        self.dev = Path(dev)
        self.multipath = multipath
        self.device_timeout = device_timeout
        self.poll = poll
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _target_lock(self, iqn: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(iqn, threading.Lock())

    def _iscsiadm(self, *args: str, check: bool = True, secret: str | None = None) -> str:
        argv = ["iscsiadm", *args]
        try:
            return self.runner.run(argv, timeout=120, check=check, host=True, redact=[secret] if secret else []).stdout
        except CommandError as exc:
            raise ConnectorError(f"iscsiadm {' '.join(args[:4])}...: {exc.stderr}") from None

    def missing(self) -> list[str]:
        need = [["iscsiadm", "--version"]] + ([["multipath", "-h"]] if self.multipath else [])
        missing = []
        for argv in need:
            try:
                res = self.runner.run(argv, timeout=30, check=False, host=True)
            except CommandError:
                missing.append(argv[0])
                continue
            if res.rc == 127:
                missing.append(argv[0])
        return missing

    # ------------------------------------------------------------------ attach
    def attach(self, target: AttachTarget, chap: Chap | None) -> Attachment:
        with self._target_lock(target.target_iqn):
            session = self._ensure_session(target, chap)
            host, channel, scsi_target = self._scsi_address(session)
            self._scan_lun(host, channel, scsi_target, target.lun)
            disk = self._wait_disk(host, channel, scsi_target, target.lun)
        serial = self._serial(disk)
        if serial != expected_serial(target.volume_id):
            raise ConnectorError(
                f"LUN {target.lun} of {target.target_iqn} is {serial or 'unidentified'}, not volume "
                f"{target.volume_id}: refusing to use it (stale LUN id?)",
                retryable=False,
            )
        data: dict[str, Any] = {
            "session": session.sid,
            "portal": target.portal,
            "target_iqn": target.target_iqn,
            "paths": [disk],
            "hctl": f"{host}:{channel}:{scsi_target}:{target.lun}",
            "serial": serial,
        }
        device = str(self.dev / disk)
        if self.multipath:
            dm = self._wait_multipath(disk)
            if dm:
                data["dm"] = dm
                data["wwid"] = self._read(self.sys / "block" / dm / "dm" / "uuid").removeprefix("mpath-")
                device = str(self.dev / "mapper" / self._read(self.sys / "block" / dm / "dm" / "name"))
        log.info("attached", extra={"fields": {"device": device, "target": target.target_iqn, "lun": target.lun}})
        return Attachment(device, data)

    def _ensure_session(self, target: AttachTarget, chap: Chap | None) -> Session:
        for s in parse_sessions(self._iscsiadm("-m", "session", check=False)):
            if s.target_iqn == target.target_iqn:
                return s
        node = ("-m", "node", "-T", target.target_iqn, "-p", target.portal)
        self._iscsiadm(*node, "-o", "new")
        for key, value in NODE_SETTINGS + self.tuning.settings():
            self._iscsiadm(*node, "-o", "update", "-n", key, "-v", value)
        if chap is not None:
            self._iscsiadm(*node, "-o", "update", "-n", "node.session.auth.authmethod", "-v", "CHAP")
            self._iscsiadm(*node, "-o", "update", "-n", USER_KEY, "-v", chap.username)
            self._iscsiadm(*node, "-o", "update", "-n", PASSWORD_KEY, "-v", chap.password, secret=chap.password)
            if chap.username_in:
                # Mutual: open-iscsi then refuses a target that cannot prove these credentials.
                self._iscsiadm(*node, "-o", "update", "-n", USER_IN_KEY, "-v", chap.username_in)
                self._iscsiadm(
                    *node, "-o", "update", "-n", PASSWORD_IN_KEY, "-v", chap.password_in, secret=chap.password_in
                )
        try:
            self._iscsiadm(*node, "--login")
        except ConnectorError:
            self._iscsiadm(*node, "-o", "delete", check=False)
            raise
        for s in parse_sessions(self._iscsiadm("-m", "session")):
            if s.target_iqn == target.target_iqn:
                return s
        raise ConnectorError(f"logged in to {target.target_iqn} but no session is listed")

    def _scsi_address(self, session: Session) -> tuple[int, int, int]:
        """The SCSI host, channel and target id of an iSCSI session, from sysfs."""
        base = (self.sys / "class" / "iscsi_session" / f"session{session.sid}" / "device").resolve()
        for entry in sorted(base.glob("target*:*:*")):
            h, c, t = entry.name.removeprefix("target").split(":")
            return int(h), int(c), int(t)
        # With node.session.scan=manual the SCSI target appears only after the first scan:
        # the session device sits under its SCSI host (.../hostN/sessionM); iSCSI uses 0:0.
        m = re.fullmatch(r"host(\d+)", base.parent.name)
        if m:
            return int(m[1]), 0, 0
        raise ConnectorError(f"session {session.sid} has no SCSI host in sysfs")

    def _scan_lun(self, host: int, channel: int, scsi_target: int, lun: int) -> None:
        """Targeted rescan: only this LUN, never a wildcard scan of the host."""
        (self.sys / "class" / "scsi_host" / f"host{host}" / "scan").write_text(f"{channel} {scsi_target} {lun}")

    def _wait_disk(self, host: int, channel: int, scsi_target: int, lun: int) -> str:
        hctl = f"{host}:{channel}:{scsi_target}:{lun}"
        deadline = time.monotonic() + self.device_timeout
        while True:
            blocks = sorted((self.sys / "class" / "scsi_device" / hctl / "device" / "block").glob("*"))
            if blocks:
                return blocks[0].name
            if time.monotonic() > deadline:
                raise ConnectorError(f"no block device appeared for SCSI {hctl}")
            time.sleep(self.poll)

    def _serial(self, disk: str) -> str:
        raw = self._read_bytes(self.sys / "block" / disk / "device" / "vpd_pg80")
        if len(raw) < 4:
            return ""
        length = int.from_bytes(raw[2:4], "big")
        return raw[4 : 4 + length].decode("ascii", "replace").strip().lower()

    def _wait_multipath(self, disk: str) -> str:
        deadline = time.monotonic() + self.device_timeout
        while True:
            holders = sorted(p.name for p in (self.sys / "block" / disk / "holders").glob("dm-*"))
            if holders:
                return holders[0]
            if time.monotonic() > deadline:
                log.warning("no multipath map for %s: using the single path", disk)
                return ""
            time.sleep(self.poll)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    @staticmethod
    def _read_bytes(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""

    # ------------------------------------------------------------------ detach
    def detach(self, target: AttachTarget, data: dict[str, Any], still_staged: list[AttachTarget]) -> None:
        iqn = data.get("target_iqn") or target.target_iqn
        with self._target_lock(iqn):
            dm = data.get("dm", "")
            if dm:
                name = self._read(self.sys / "block" / dm / "dm" / "name") or dm
                for attempt in range(3):
                    res = self.runner.run(["multipath", "-f", name], timeout=60, check=False, host=True)
                    if res.rc == 0 or not (self.sys / "block" / dm).exists():
                        break
                    if attempt == 2:
                        raise ConnectorError(f"multipath -f {name}: {res.stderr.strip() or 'map in use'}")
                    time.sleep(1)
            for disk in data.get("paths", []):
                delete = self.sys / "block" / disk / "device" / "delete"
                if delete.exists():
                    self.runner.run(
                        ["blockdev", "--flushbufs", str(self.dev / disk)], timeout=60, check=False, host=True
                    )
                    delete.write_text("1")
            if dm and data.get("wwid"):
                self.runner.run(["multipath", "-w", data["wwid"]], timeout=60, check=False, host=True)
            if any(o.target_iqn == iqn for o in still_staged):
                log.info("keeping the session of %s: other staged volumes use it", iqn)
                return
            portal = data.get("portal") or target.portal
            node = ("-m", "node", "-T", iqn, "-p", portal)
            sessions = [s for s in parse_sessions(self._iscsiadm("-m", "session", check=False)) if s.target_iqn == iqn]
            if sessions:
                self._iscsiadm(*node, "--logout")  # raises ConnectorError: retryable, nothing half-deleted
            self._iscsiadm(*node, "-o", "delete", check=False)

    # ------------------------------------------------------------------ resize / health
    def resize(self, target: AttachTarget, data: dict[str, Any], size: int) -> int:
        for disk in data.get("paths", []):
            (self.sys / "block" / disk / "device" / "rescan").write_text("1")
        device = data["paths"][0] if data.get("paths") else ""
        dm = data.get("dm", "")
        if dm:
            name = self._read(self.sys / "block" / dm / "dm" / "name") or dm
            self.runner.run(["multipathd", "resize", "map", name], timeout=60, host=True)
            device = dm
        sectors = self._read(self.sys / "block" / device / "size")
        return int(sectors or 0) * 512

    def condition(self, data: dict[str, Any]) -> str | None:
        sid = data.get("session")
        state = self._read(self.sys / "class" / "iscsi_session" / f"session{sid}" / "state")
        if state and state != "LOGGED_IN":
            return f"iSCSI session {sid} is {state}"
        paths = data.get("paths", [])
        if not paths or not all((self.sys / "block" / d).exists() for d in paths):
            return "the SCSI device is gone"
        dm = data.get("dm", "")
        if dm:
            slaves = [p.name for p in (self.sys / "block" / dm / "slaves").glob("*")]
            running = [s for s in slaves if self._read(self.sys / "block" / s / "device" / "state") == "running"]
            if not running:
                return f"multipath map {dm} has no active path"
        return None

    def fail_io_if_lost(self, data: dict[str, Any], wait: bool = True) -> bool:
        """Nothing to do: the kernel bounds this itself (the session's replacement_timeout, then
        multipath's no_path_retry fail queued I/O), so an unmount never waits forever."""
        return False
