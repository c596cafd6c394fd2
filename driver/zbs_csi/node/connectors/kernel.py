"""The kernel connector: open-iscsi (``iscsiadm``) + dm-multipath on the host.

Runs every host command through the host-exec strategy (chroot /host or nsenter). The sequence
follows what the hardened anchors learned (Trident, gobrick), as csi.md lists it, and what a
stock Debian kernel in a VM taught us (tests/vm):

- paths: with multipath and data portals (the storage nodes' own iSCSI portals, given by the
  controller), one session per data portal; else one session through the access VIP, whose
  redirector moves it to a live storage node when its node fails;
- node records with ``node.startup=manual`` and ``node.session.scan=manual`` (no automatic
  LUN scanning: we rescan only the LUN we need, on each session's own SCSI host);
- a device is identified by what the LUN says about itself (VPD 0x80 serial), never by a
  cached ``/dev/sdX``, so a LUN id reused after delete can never mount the old device;
- multipath: the WWID is registered (``multipath -a``) when multipathd does not know it yet
  (Debian's stock ``find_multipaths strict`` builds no map otherwise), and forgotten on
  teardown only when the driver registered it; the device handed out is the map's
  ``/dev/mapper`` node once udev created it, never before;
- every step that leaves something on the host is checkpointed to the stage record first,
  so an interrupted attach is undone by the same detach;
- iscsiadm is serialized per target, different targets run in parallel;
- logout only when no other staged volume of this node uses the target's sessions (volumes
  share targets); a failed logout is retryable, never a half-delete;
- teardown: ``multipath -f`` with retries, delete each path through sysfs, forget the WWID;
- expansion: rescan every path, resize the multipath map, then check the device size.

Unit tests drive it with a recording runner and a fake sysfs (tests/driver); tests/vm runs
it for real against zbs-lite in qemu VMs with a stock kernel.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runner import CommandError, Runner
from ..scsi_inquiry import InquiryError, parse_unit_serial, read_unit_serial
from .base import Attachment, AttachTarget, Chap, ConnectorError
from .node_record import FIND_FORMAT, NODE_DBS, auth_block, check_shown, record_files

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
# A data portal is one path of several: a storage node that is down must not hold the stage
# for two minutes of login retries (the VIP's 24 retries are for landing on a live node).
DATA_PORTAL_SETTINGS = (("node.session.initial_login_retry_max", "2"),)


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
    """``iscsiadm -m session`` output → sessions (``tcp: [3] 10.0.0.1:3260,1 iqn... (non-flash)``).

    The portal shown is the persistent one (the record's portal, the VIP for a redirected
    session), which is what node records are keyed by.
    """
    out = []
    for line in text.splitlines():
        m = _SESSION_LINE.match(line.strip())
        if m:
            out.append(Session(m[1], int(m[2]), m[3], int(m[4]), m[5]))
    return out


def parse_udev_properties(text: str) -> dict[str, str]:
    """``udevadm info --query=property`` output → {KEY: value}."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


# iscsiadm's exit codes for a refused login (open-iscsi's ISCSI_ERR_LOGIN_AUTH_FAILED and
# ISCSI_ERR_FATAL_LOGIN): the numbers alone tell a user nothing.
LOGIN_AUTH_FAILED = 24
LOGIN_FATAL = 19


def login_hints(chap: Chap | None) -> dict[int, str]:
    """What a refused login most likely means, with these credentials."""
    if chap is None:
        return {LOGIN_AUTH_FAILED: "the target requires CHAP: the StorageClass needs a node-stage Secret"}
    hints = {
        LOGIN_AUTH_FAILED: "the target refused this node's CHAP credentials: "
        "check node.session.auth.username and password in the node-stage Secret"
    }
    if chap.username_in:
        hints[LOGIN_FATAL] = (
            "with mutual CHAP: the target could not prove node.session.auth.username_in and password_in "
            "of the node-stage Secret, so this node refused it"
        )
    return hints


def expected_serial(volume_id: str) -> str:
    """ZBS LUNs report their UUID (without dashes) as the VPD 0x80 unit serial number."""
    return volume_id.replace("-", "").lower()


Checkpoint = Callable[[dict[str, Any]], None]


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
        inquiry: Callable[[str], str] = read_unit_serial,
    ) -> None:
        self.runner = runner
        self.tuning = tuning or SessionTuning()
        self.initiator = initiator
        self.sys = Path(sysfs)
        self.dev = Path(dev)
        self.multipath = multipath
        self.device_timeout = device_timeout
        self.poll = poll
        self.inquiry = inquiry
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _target_lock(self, iqn: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(iqn, threading.Lock())

    def _iscsiadm(
        self, *args: str, check: bool = True, secrets: Sequence[str] = (), hints: dict[int, str] | None = None
    ) -> str:
        """iscsiadm on the host; ``hints`` explain its exit codes (``login_hints``)."""
        argv = ["iscsiadm", *args]
        try:
            return self.runner.run(argv, timeout=120, check=check, host=True, redact=secrets).stdout
        except CommandError as exc:
            hint = (hints or {}).get(exc.rc)
            raise ConnectorError(
                f"iscsiadm {' '.join(args[:4])}...: {exc.stderr}{f' ({hint})' if hint else ''}",
                refused="--login" in args and exc.rc in (LOGIN_AUTH_FAILED, LOGIN_FATAL),
            ) from None

    def _host(self, *argv: str, timeout: float = 60, check: bool = False) -> str:
        try:
            res = self.runner.run(list(argv), timeout=timeout, check=check, host=True)
        except CommandError as exc:
            raise ConnectorError(f"{argv[0]} {' '.join(argv[1:3])}: {exc.stderr}") from None
        return res.stdout if res.rc == 0 else ""

    def missing(self) -> list[str]:
        """What the node lacks: the tools, and with multipath a running multipathd."""
        need = [["iscsiadm", "--version"]]
        if self.multipath:
            need += [["multipath", "-h"], ["multipathd", "show", "daemon"]]
        missing = []
        for argv in need:
            try:
                res = self.runner.run(argv, timeout=30, check=False, host=True)
            except CommandError:
                missing.append(argv[0])
                continue
            if res.rc == 127:
                missing.append(argv[0])
            elif argv[0] == "multipathd" and res.rc != 0:
                missing.append("a running multipathd (systemctl enable --now multipathd)")
        return missing

    # ------------------------------------------------------------------ attach
    def attach(self, target: AttachTarget, chap: Chap | None, checkpoint: Checkpoint) -> Attachment:
        """Log in, find the LUN on every path, build the map; ``checkpoint`` persists progress."""
        data: dict[str, Any] = {"target_iqn": target.target_iqn, "portals": [], "hctls": []}
        with self._target_lock(target.target_iqn):
            sessions = self._ensure_sessions(target, chap, data, checkpoint)
            for session in sessions:
                if self._session_state(session.sid) not in ("", "LOGGED_IN"):
                    log.warning("session %d to %s is down: no path through it for now", session.sid, session.portal)
                    continue
                host, channel, scsi_target = self._scsi_address(session)
                data["hctls"].append(f"{host}:{channel}:{scsi_target}:{target.lun}")
            if not data["hctls"]:
                raise ConnectorError(f"no logged-in session to {target.target_iqn}")
            checkpoint(data)
            seen = [hctl for hctl in data["hctls"] if self._scan_lun(hctl)]
            if not seen:
                raise ConnectorError(
                    f"LUN {target.lun} of {target.target_iqn} is not visible to {self.initiator} on any path: "
                    "not published to this node (LUN masking), or deleted"
                )
            disks = self._wait_disks(seen)
        want = expected_serial(target.volume_id)
        for disk in disks:
            serial = self._sysfs_serial(disk)
            if not serial:
                # The scan's VPD read can fail transiently: a device rescan reads the pages again.
                (self.sys / "block" / disk / "device" / "rescan").write_text("1")
                serial = self._sysfs_serial(disk)
            if serial != want:
                raise ConnectorError(
                    f"LUN {target.lun} of {target.target_iqn} is {serial or 'unidentified'} on {disk}, not volume "
                    f"{target.volume_id}: refusing to use it (stale LUN id?)",
                    retryable=False,
                )
        self._settle()
        if self.multipath:
            device = self._multipath_device(disks, data, checkpoint)
        else:
            self._refuse_claimed(disks)
            device = self._wait_node(str(self.dev / disks[0]), disks[0])
        log.info(
            "attached",
            extra={"fields": {"device": device, "target": target.target_iqn, "lun": target.lun, "paths": disks}},
        )
        return Attachment(device, data)

    def _portals(self, target: AttachTarget) -> list[str]:
        return list(target.portals) if self.multipath and target.portals else [target.portal]

    def _ensure_sessions(
        self, target: AttachTarget, chap: Chap | None, data: dict[str, Any], checkpoint: Checkpoint
    ) -> list[Session]:
        """One session per portal; the VIP when no data portal can be reached.

        Not when every data portal refused the login (CHAP, authorization): the cluster decides
        that, not the portal, so the VIP would refuse it too and only add a second error.
        """
        wanted = self._portals(target)
        errors = self._login_all(target, wanted, chap, data, checkpoint)
        sessions = self._sessions(target.target_iqn, data["portals"])
        refused = bool(errors) and all(e.refused for e in errors.values())
        if not sessions and target.portal not in wanted and not refused:
            log.warning("no data portal of %s answered; falling back to the VIP %s", target.target_iqn, target.portal)
            errors.update(self._login_all(target, [target.portal], chap, data, checkpoint))
            sessions = self._sessions(target.target_iqn, data["portals"])
        if not sessions:
            detail = "; ".join(f"{p}: {e}" for p, e in errors.items()) or "no session"
            raise ConnectorError(f"could not log in to {target.target_iqn}: {detail}")
        return sessions

    def _login_all(
        self, target: AttachTarget, portals: list[str], chap: Chap | None, data: dict[str, Any], checkpoint: Checkpoint
    ) -> dict[str, ConnectorError]:
        """Node records for the ``portals`` without a session, then their logins in parallel; the failures."""
        have = {s.portal for s in self._sessions(target.target_iqn, portals)}
        data["portals"] += [p for p in portals if p not in data["portals"]]
        checkpoint(data)  # the records exist from here on: a crash leaves them to detach
        new = [p for p in portals if p not in have]
        for portal in new:
            node = ("-m", "node", "-T", target.target_iqn, "-p", portal)
            self._iscsiadm(*node, "-o", "new")
            settings = NODE_SETTINGS + self.tuning.settings()
            settings += DATA_PORTAL_SETTINGS if portal != target.portal else ()
            update = [arg for key, value in settings for arg in ("-n", key, "-v", value)]
            self._iscsiadm(*node, "-o", "update", *update)
            if chap is not None:
                self._write_chap(target.target_iqn, portal, chap)
        node_of = {p: ("-m", "node", "-T", target.target_iqn, "-p", p) for p in new}
        context = copy_context()  # the worker threads log with this operation's context (volume id, op)
        hints = login_hints(chap)

        def login(portal: str) -> str:
            return context.copy().run(self._iscsiadm, *node_of[portal], "--login", hints=hints)

        with ThreadPoolExecutor(max_workers=max(1, len(new))) as pool:
            logins = {p: pool.submit(login, p) for p in new}
        errors: dict[str, ConnectorError] = {}
        for portal, result in logins.items():
            exc = result.exception()
            if exc is not None:
                errors[portal] = exc if isinstance(exc, ConnectorError) else ConnectorError(str(exc))
                log.warning("no path through %s: %s", portal, exc)
                self._iscsiadm(*node_of[portal], "-o", "delete", check=False)
                data["portals"].remove(portal)
        if errors:
            checkpoint(data)
        return errors

    def _write_chap(self, iqn: str, portal: str, chap: Chap) -> None:
        """The auth block into the portal's node records without a secret in any argv (node_record.py).

        With ``*_in`` (mutual CHAP) open-iscsi also refuses a target that cannot prove them.
        """
        block = auth_block(chap)
        secrets = [s for s in (chap.password, chap.password_in) if s]
        try:
            found = self.runner.run(
                ["find", *(f"{db}/{iqn}" for db in NODE_DBS), "-maxdepth", "2", "-type", "f", "-printf", FIND_FORMAT],
                timeout=30, check=False, host=True,
            ).stdout  # fmt: skip
        except CommandError as exc:
            raise ConnectorError(f"cannot look for the node record of {iqn} at {portal}: {exc.stderr}") from None
        files = record_files(found, iqn, portal)
        if not files:
            raise ConnectorError(
                f"no open-iscsi node record of {iqn} at {portal} under {' or '.join(NODE_DBS)}: "
                "cannot set its CHAP credentials (and never on a command line)",
                retryable=False,
            )
        for path, mode in sorted(files.items()):
            if mode & 0o077:
                # open-iscsi makes them 0600; one that others can read (another build, a copy) is closed first.
                log.warning("node record %s has mode %o: making it 0600 before writing CHAP into it", path, mode)
                self._host("chmod", "0600", path, timeout=30, check=True)
            try:
                self.runner.run(
                    ["dd", f"of={path}", "oflag=append", "conv=notrunc,nocreat", "status=none"],
                    stdin=block, timeout=30, host=True, redact=secrets,
                )  # fmt: skip
            except CommandError as exc:
                raise ConnectorError(f"cannot write CHAP credentials into {path}: {exc.stderr}") from None
        shown = self._iscsiadm("-m", "node", "-T", iqn, "-p", portal, "-o", "show", secrets=secrets)
        problem = check_shown(shown, chap)
        if problem:
            raise ConnectorError(f"open-iscsi did not take the CHAP credentials of {iqn} at {portal}: {problem}")

    def _sessions(self, iqn: str, portals: list[str]) -> list[Session]:
        listed = parse_sessions(self._iscsiadm("-m", "session", check=False))
        return [s for s in listed if s.target_iqn == iqn and s.portal in portals]

    def _session_state(self, sid: int) -> str:
        return self._read(self.sys / "class" / "iscsi_session" / f"session{sid}" / "state")

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

    def _scan_lun(self, hctl: str) -> bool:
        """Targeted rescan: only this LUN, never a wildcard scan of the host.

        The write returns once the target answered; a LUN it does not show this initiator
        (masked, deleted) leaves no SCSI device, so there is nothing to wait for.
        """
        host, channel, scsi_target, lun = hctl.split(":")
        (self.sys / "class" / "scsi_host" / f"host{host}" / "scan").write_text(f"{channel} {scsi_target} {lun}")
        if (self.sys / "class" / "scsi_device" / hctl).exists():
            return True
        log.warning("the scan of %s found no LUN", hctl)
        return False

    def _disk_at(self, hctl: str) -> str:
        blocks = sorted((self.sys / "class" / "scsi_device" / hctl / "device" / "block").glob("*"))
        return blocks[0].name if blocks else ""

    def _wait_disks(self, hctls: list[str]) -> list[str]:
        """The block device of each path; all of them, or those that came before the timeout."""
        deadline = time.monotonic() + self.device_timeout
        while True:
            disks = [d for d in (self._disk_at(h) for h in hctls) if d]
            if len(disks) == len(hctls):
                return disks
            if time.monotonic() > deadline:
                if disks:
                    log.warning("only %d of %d paths showed the LUN", len(disks), len(hctls))
                    return disks
                raise ConnectorError(f"no block device appeared for SCSI {', '.join(hctls)}")
            time.sleep(self.poll)

    def _sysfs_serial(self, disk: str) -> str:
        return parse_unit_serial(self._read_bytes(self.sys / "block" / disk / "device" / "vpd_pg80"))

    def _settle(self) -> None:
        """Let udev finish the events of the new devices (device nodes, links, multipath claims)."""
        self._host("udevadm", "settle", f"--timeout={int(self.device_timeout)}", timeout=self.device_timeout + 10)

    def _holders(self, disk: str) -> list[str]:
        return sorted(p.name for p in (self.sys / "block" / disk / "holders").glob("dm-*"))

    def _refuse_claimed(self, disks: list[str]) -> None:
        """Without multipath, a path multipathd took (``find_multipaths no``) cannot be used."""
        for disk in disks:
            holders = self._holders(disk)
            if holders:
                raise ConnectorError(
                    f"{disk} is held by {holders[0]} (multipathd?) but the driver's multipath is off: "
                    "enable multipath in the driver or blacklist vendor ZBS in multipath.conf",
                    retryable=False,
                )

    # ------------------------------------------------------------------ multipath
    def _wwid(self, disk: str) -> str:
        """The WWID multipath uses for a path (udev's ID_SERIAL, multipath's default uid_attribute)."""
        props = parse_udev_properties(self._host("udevadm", "info", "--query=property", f"--name=/dev/{disk}"))
        wwid = props.get("ID_SERIAL", "")
        if not wwid:
            raise ConnectorError(f"udev has no ID_SERIAL for {disk}: cannot tell its multipath WWID")
        return wwid

    def _known_wwids(self) -> set[str]:
        text = self._host("cat", "/etc/multipath/wwids")
        return {line.strip().strip("/") for line in text.splitlines() if line.startswith("/")}

    def _multipath_device(self, disks: list[str], data: dict[str, Any], checkpoint: Checkpoint) -> str:
        wwid = self._wwid(disks[0])
        data["wwid"] = wwid
        if wwid not in self._known_wwids():
            # find_multipaths "strict" (Debian's default) maps only WWIDs in the wwids file.
            self._host("multipath", "-a", f"/dev/{disks[0]}", check=True)
            data["wwid_added"] = True
            checkpoint(data)
            for disk in disks:
                self._host("multipathd", "add", "path", disk)
        else:
            checkpoint(data)
        dm = self._wait_map(wwid, disks)
        self._settle()
        name = self._read(self.sys / "block" / dm / "dm" / "name")
        return self._wait_node(str(self.dev / "mapper" / name), dm)

    def _map_of(self, wwid: str) -> str:
        """The dm device of the multipath map for ``wwid`` (found by its dm uuid), or ""."""
        for uuid in sorted(self.sys.glob("block/dm-*/dm/uuid")):
            if self._read(uuid) == f"mpath-{wwid}":
                return uuid.parent.parent.name
        return ""

    def _wait_map(self, wwid: str, disks: list[str]) -> str:
        deadline = time.monotonic() + self.device_timeout
        while True:
            dm = self._map_of(wwid)
            slaves = {p.name for p in (self.sys / "block" / dm / "slaves").glob("*")} if dm else set()
            if dm and set(disks) <= slaves:
                return dm
            if time.monotonic() > deadline:
                if dm and slaves & set(disks):
                    log.warning("map %s has %d of %d paths", dm, len(slaves & set(disks)), len(disks))
                    return dm
                raise ConnectorError(
                    f"multipathd built no map for WWID {wwid} ({', '.join(disks)}) within {self.device_timeout:.0f} s: "
                    "is multipathd running, and is vendor ZBS not blacklisted?"
                )
            time.sleep(self.poll)

    def _wait_node(self, path: str, sysfs_name: str) -> str:
        """Wait until ``path`` is the block device node of ``sysfs_name`` (udev makes links late)."""
        want = self._read(self.sys / "block" / sysfs_name / "dev")
        deadline = time.monotonic() + self.device_timeout
        while True:
            if want and _rdev(path) == want:
                return path
            if time.monotonic() > deadline:
                raise ConnectorError(f"{path} did not become the device node of {sysfs_name} ({want or '?'})")
            time.sleep(self.poll)

    # ------------------------------------------------------------------ identity
    def verify(self, device: str, data: dict[str, Any], volume_id: str) -> None:
        """``device`` is this volume's node: the recorded map or path, answering with its serial."""
        expected = self._map_of(data["wwid"]) if data.get("wwid") else ""
        if not expected:
            disks = self._disks(data, volume_id)
            self._refuse_claimed(disks)  # multipathd may take a path late (it acts after udev)
            expected = disks[0] if disks else ""
        want = self._read(self.sys / "block" / expected / "dev") if expected else ""
        have = _rdev(device)
        if not have:
            raise ConnectorError(f"{device} is not a block device (yet)")
        if have != want:
            raise ConnectorError(
                f"{device} is device {have}, not the volume's {expected or '?'} ({want or '?'})", retryable=False
            )
        try:
            serial = self.inquiry(device)
        except InquiryError as exc:
            raise ConnectorError(f"cannot ask {device} who it is: {exc}") from exc
        if serial != expected_serial(volume_id):
            raise ConnectorError(
                f"{device} answers as {serial or 'unidentified'}, not volume {volume_id}: refusing to use it",
                retryable=False,
            )

    def _disks(self, data: dict[str, Any], volume_id: str) -> list[str]:
        """The path devices of a recorded attachment that still are this volume (hosts renumber on reboot)."""
        want = expected_serial(volume_id)
        disks = [self._disk_at(h) for h in data.get("hctls", [])]
        return [d for d in disks if d and self._sysfs_serial(d) == want]

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
            wwid = data.get("wwid", "")
            dm = self._map_of(wwid) if wwid else ""
            if dm:
                name = self._read(self.sys / "block" / dm / "dm" / "name") or dm
                for attempt in range(3):
                    res = self.runner.run(["multipath", "-f", name], timeout=60, check=False, host=True)
                    if res.rc == 0 or not (self.sys / "block" / dm).exists():
                        break
                    if attempt == 2:
                        raise ConnectorError(f"multipath -f {name}: {res.stderr.strip() or 'map in use'}")
                    time.sleep(1)
            for disk in self._disks(data, target.volume_id):
                delete = self.sys / "block" / disk / "device" / "delete"
                if delete.exists():
                    self.runner.run(
                        ["blockdev", "--flushbufs", str(self.dev / disk)], timeout=60, check=False, host=True
                    )
                    delete.write_text("1")
            if wwid and data.get("wwid_added"):
                self.runner.run(["multipath", "-w", wwid], timeout=60, check=False, host=True)
            if any(o.target_iqn == iqn for o in still_staged):
                log.info("keeping the sessions of %s: other staged volumes use them", iqn)
                return
            for portal in data.get("portals", []):
                node = ("-m", "node", "-T", iqn, "-p", portal)
                if self._sessions(iqn, [portal]):
                    self._iscsiadm(*node, "--logout")  # raises ConnectorError: retryable, nothing half-deleted
                self._iscsiadm(*node, "-o", "delete", check=False)

    # ------------------------------------------------------------------ resize / health
    def resize(self, target: AttachTarget, data: dict[str, Any], size: int) -> int:
        disks = self._disks(data, target.volume_id)
        if not disks:
            raise ConnectorError(f"no path of volume {target.volume_id} is present")
        for disk in disks:
            (self.sys / "block" / disk / "device" / "rescan").write_text("1")
        device = disks[0]
        dm = self._map_of(data["wwid"]) if data.get("wwid") else ""
        if dm:
            name = self._read(self.sys / "block" / dm / "dm" / "name") or dm
            self.runner.run(["multipathd", "resize", "map", name], timeout=60, host=True)
            device = dm
        sectors = self._read(self.sys / "block" / device / "size")
        return int(sectors or 0) * 512

    def condition(self, data: dict[str, Any], volume_id: str) -> str | None:
        iqn = data.get("target_iqn", "")
        sessions = self._sessions(iqn, data.get("portals", [])) if iqn else []
        states = {s.sid: self._session_state(s.sid) for s in sessions}
        if not any(state in ("", "LOGGED_IN") for state in states.values()):
            return f"no iSCSI session to {iqn or '?'} is logged in ({', '.join(map(str, states.values())) or 'none'})"
        disks = self._disks(data, volume_id)
        if not disks:
            return "the SCSI device is gone"
        if data.get("wwid"):
            dm = self._map_of(data["wwid"])
            if not dm:
                return f"the multipath map of {data['wwid']} is gone"
            slaves = [p.name for p in (self.sys / "block" / dm / "slaves").glob("*")]
            running = [s for s in slaves if self._read(self.sys / "block" / s / "device" / "state") == "running"]
            if not running:
                return f"multipath map {dm} has no active path"
        return None

    def fail_io_if_lost(self, data: dict[str, Any], wait: bool = True) -> bool:
        """Nothing to do: the kernel bounds this itself (the session's replacement_timeout, then
        multipath's no_path_retry fail queued I/O), so an unmount never waits forever."""
        return False


def _rdev(path: str) -> str:
    """``MAJOR:MINOR`` of the block device at ``path`` (following links), or ""."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    if not stat.S_ISBLK(st.st_mode):
        return ""
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
