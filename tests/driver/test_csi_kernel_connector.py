"""The kernel connector's command sequence, against a recording runner and a fake sysfs/dev tree.

The kernel iSCSI initiator (iscsi_tcp) cannot run on these machines, so this is the one place
the host is simulated: ``iscsiadm``/``multipath``/``udevadm`` are recorded and answered by
responders, /sys is a directory tree laid out the way the kernel does, and /dev holds real
block device nodes (mknod) so device-node checks run for real. The same connector runs
against a real kernel in qemu VMs in tests/vm (the ``vm`` stage): that is where the timing
(udev, multipathd) is proven; this file pins the decisions.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from zbs_csi.chap import Chap
from zbs_csi.node.connectors.base import AttachTarget, ConnectorError
from zbs_csi.node.connectors.kernel import (
    DATA_PORTAL_SETTINGS,
    NODE_SETTINGS,
    KernelConnector,
    SessionTuning,
    parse_sessions,
)
from zbs_csi.node.connectors.node_record import record_files
from zbs_csi.node.runner import RecordingRunner, Result
from zbs_csi.node.scsi_inquiry import InquiryError, parse_unit_serial, read_unit_serial, vpd_inquiry_cdb

VOL = "0b7c7a3e-6f31-4f5c-9d0e-2a4b7c9d1e2f"
OTHER = "11111111-2222-4333-8444-555555555555"
IQN = "iqn.2016-02.com.smartx:system:zbs-csi-0001"
VIP = "10.0.0.10:3260"
DATA = ("10.0.0.11:3261", "10.0.0.12:3261")
NODE = "iqn.2026-01.com.example:node-1"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="block device nodes need mknod (root)")


def vpd80(serial: str) -> bytes:
    return bytes([0, 0x80, 0, len(serial)]) + serial.encode()


def wwid_of(volume_id: str) -> str:
    return "36" + volume_id.replace("-", "")[:31]


class FakeHost:
    """A host with one SCSI host per iSCSI session; LUNs appear as sdX, maps as dm-N."""

    def __init__(self, root: Path, *, maps_on_uevent: bool = True) -> None:
        self.sys = root / "sys"
        self.dev = root / "dev"
        (self.dev / "mapper").mkdir(parents=True)
        self.maps_on_uevent = maps_on_uevent  # find_multipaths no: multipathd maps every path at once
        self.sessions: dict[str, int] = {}  # portal -> sid
        self.dead: set[str] = set()
        self.refusing: set[str] = set()  # portals whose target refuses the login (CHAP: exit 24)
        self.wwids: set[str] = set()
        self.luns: dict[tuple[str, int], str] = {}  # (portal, lun) -> volume id
        self.disks: dict[str, str] = {}  # sdX -> volume id
        self.logout_rc = 0
        self.flush_failures = 0
        # open-iscsi's node database: record file -> its lines (Debian's layout), and each
        # portal's record as its login read it (later lines win, as in open-iscsi's parser).
        self.records: dict[str, list[str]] = {}
        self.record_db = "/etc/iscsi/nodes"
        self.modes: dict[str, int] = {}  # record file -> mode, when not open-iscsi's 0600
        self.at_login: dict[str, dict[str, str]] = {}
        self._next_disk = 0
        self._lock = threading.Lock()

    def serve(self, portal: str, lun: int, volume_id: str) -> None:
        self.luns[(portal, lun)] = volume_id

    def _login(self, portal: str) -> None:
        sid = len(self.sessions) + 3
        host = sid + 4
        self.sessions[portal] = sid
        sess = self.sys / f"class/iscsi_session/session{sid}"
        (sess / f"device/target{host}:0:0").mkdir(parents=True, exist_ok=True)
        (sess / "state").write_text("LOGGED_IN\n")
        (self.sys / f"class/scsi_host/host{host}").mkdir(parents=True, exist_ok=True)
        (self.sys / f"class/scsi_host/host{host}/scan").write_text("")
        for (p, lun), vol in self.luns.items():
            if p == portal:
                self._disk(host, lun, vol)

    def _disk(self, host: int, lun: int, volume_id: str) -> None:
        disk = f"sd{chr(ord('a') + self._next_disk)}"
        self.disks[disk] = volume_id
        self._next_disk += 1
        minor = 16 * self._next_disk
        (self.sys / f"class/scsi_device/{host}:0:0:{lun}/device/block/{disk}").mkdir(parents=True)
        d = self.sys / f"block/{disk}"
        (d / "device").mkdir(parents=True)
        (d / "holders").mkdir()
        (d / "dev").write_text(f"8:{minor}\n")
        (d / "size").write_text(str(2 * 1024**3 // 512))
        for name, value in (("state", "running\n"), ("delete", ""), ("rescan", "")):
            (d / "device" / name).write_text(value)
        (d / "device/vpd_pg80").write_bytes(vpd80(volume_id.replace("-", "")))
        os.mknod(self.dev / disk, stat.S_IFBLK | 0o600, os.makedev(8, minor))
        if self.maps_on_uevent or wwid_of(volume_id) in self.wwids:
            self._map(disk, volume_id)

    def _map(self, disk: str, volume_id: str) -> None:
        wwid = wwid_of(volume_id)
        dm = next((u.parent.parent.name for u in self.sys.glob("block/dm-*/dm/uuid") if wwid in u.read_text()), "")
        if not dm:
            n = len(list(self.sys.glob("block/dm-*")))
            dm = f"dm-{n}"
            (self.sys / f"block/{dm}/dm").mkdir(parents=True)
            (self.sys / f"block/{dm}/dm/name").write_text(wwid + "\n")
            (self.sys / f"block/{dm}/dm/uuid").write_text(f"mpath-{wwid}\n")
            (self.sys / f"block/{dm}/dev").write_text(f"253:{n}\n")
            (self.sys / f"block/{dm}/size").write_text(str(4 * 1024**3 // 512))
            os.mknod(self.dev / "mapper" / wwid, stat.S_IFBLK | 0o600, os.makedev(253, n))
        (self.sys / f"block/{dm}/slaves/{disk}").mkdir(parents=True, exist_ok=True)
        (self.sys / f"block/{disk}/holders/{dm}").mkdir(parents=True, exist_ok=True)

    def volume_of(self, disk: str) -> str:
        return self.disks[disk]

    def respond(self, argv: list[str], stdin: str | None) -> Result | None:
        with self._lock:  # the connector logs in to several portals at once; the fake kernel is one
            return self._respond(argv, stdin)

    def record_of(self, portal: str) -> str:
        """The flat record file open-iscsi 2.1.8 makes for ``-o new`` (tests/vm saw it)."""
        address, _, port = portal.rpartition(":")
        return f"{self.record_db}/{IQN}/{address},{port}"

    def parsed(self, portal: str) -> dict[str, str]:
        lines = self.records.get(self.record_of(portal), [])
        return dict(line.split(" = ", 1) for line in lines if " = " in line and not line.startswith("#"))

    def _node_db(self, argv: list[str], stdin: str | None) -> Result | None:
        """``iscsiadm -m node -o new|update|show|delete``, ``find`` and ``dd`` on the node database."""
        if argv[0] == "find":
            assert argv[-2:] == ["-printf", "%m %p\\n"], "paths and modes only"
            roots = [a for a in argv[1:] if a.startswith("/")]
            found = [
                f"{self.modes.get(f, 0o600):o} {f}\n" for f in self.records if any(f.startswith(r + "/") for r in roots)
            ]
            return Result(argv, 1 if len(roots) > 1 else 0, "".join(found), "find: no such file")
        if argv[0] == "chmod":
            self.modes[argv[2]] = int(argv[1], 8)
            return Result(argv, 0)
        if argv[0] == "dd":
            path = next(a for a in argv if a.startswith("of="))[3:]
            if path not in self.records:
                return Result(argv, 1, "", f"dd: failed to open '{path}': No such file or directory")
            self.records[path] += (stdin or "").splitlines()
            return Result(argv, 0)
        if argv[:2] != ["iscsiadm", "-m"] or argv[2] != "node" or "-o" not in argv:
            return None
        portal, op = argv[argv.index("-p") + 1], argv[argv.index("-o") + 1]
        path = self.record_of(portal)
        if op == "new":
            self.records[path] = ["# BEGIN RECORD 2.1.8", f"node.name = {IQN}", "node.session.auth.authmethod = None",
                                  "node.session.auth.username = <empty>", "node.session.auth.password = <empty>",
                                  "# END RECORD"]  # fmt: skip
        elif op == "update":  # open-iscsi rewrites the record with the new values
            values = self.parsed(portal) | dict(zip(argv[argv.index("-n") + 1 :: 4], argv[argv.index("-v") + 1 :: 4]))
            self.records[path] = ["# BEGIN RECORD 2.1.8", *(f"{k} = {v}" for k, v in values.items()), "# END RECORD"]
        elif op == "show":
            shown = {k: "********" if "password" in k and v != "<empty>" else v for k, v in self.parsed(portal).items()}
            return Result(argv, 0, "# BEGIN RECORD 2.1.8\n" + "".join(f"{k} = {v}\n" for k, v in shown.items()))
        elif op == "delete":
            self.records.pop(path, None)
        return Result(argv, 0)

    def _respond(self, argv: list[str], stdin: str | None) -> Result | None:
        db = self._node_db(argv, stdin)
        if db is not None:
            return db
        if argv[:3] == ["iscsiadm", "-m", "session"]:
            if not self.sessions:
                return Result(argv, 21, "", "iscsiadm: No active sessions.")
            lines = [f"tcp: [{sid}] {p},1 {IQN} (non-flash)" for p, sid in self.sessions.items()]
            return Result(argv, 0, "\n".join(lines) + "\n")
        portal = argv[argv.index("-p") + 1] if "-p" in argv else ""
        if "--login" in argv:
            self.at_login[portal] = self.parsed(portal)
            if portal in self.dead:
                return Result(argv, 8, "", "iscsiadm: connection refused")
            if portal in self.refusing:
                return Result(argv, 24, "", "iscsiadm: Login failed due to authorization failure")
            self._login(portal)
        if "--logout" in argv:
            if self.logout_rc:
                return Result(argv, self.logout_rc, "", "iscsiadm: Could not logout: session busy")
            del self.sessions[portal]
        if argv[:2] == ["udevadm", "info"]:
            disk = argv[-1].rsplit("/", 1)[-1]
            return Result(argv, 0, f"DEVNAME=/dev/{disk}\nID_SERIAL={wwid_of(self.volume_of(disk))}\n")
        if argv[:2] == ["cat", "/etc/multipath/wwids"]:
            return Result(argv, 0, "# wwids\n" + "".join(f"/{w}/\n" for w in sorted(self.wwids)))
        if argv[:2] == ["multipath", "-a"]:
            self.wwids.add(wwid_of(self.volume_of(argv[2].rsplit("/", 1)[-1])))
        if argv[:2] == ["multipath", "-w"]:
            self.wwids.discard(argv[2])
        if argv[:3] == ["multipathd", "add", "path"]:
            self._map(argv[3], self.volume_of(argv[3]))
        if argv[:2] == ["multipath", "-f"] and self.flush_failures:
            self.flush_failures -= 1
            return Result(argv, 1, "", "map in use")
        return None

    def inquiry(self, device: str) -> str:
        """What an INQUIRY through ``device`` answers: the serial of the path behind it."""
        rdev = os.stat(device).st_rdev
        for dev in self.sys.glob("block/*/dev"):
            if dev.read_text().strip() == f"{os.major(rdev)}:{os.minor(rdev)}":
                name = dev.parent.name
                disk = name if name.startswith("sd") else sorted(p.name for p in (dev.parent / "slaves").iterdir())[0]
                return self.volume_of(disk).replace("-", "")
        raise AssertionError(f"no device {device}")


class Checkpoints(list[dict[str, Any]]):
    def __call__(self, data: dict[str, Any]) -> None:
        self.append({k: list(v) if isinstance(v, list) else v for k, v in data.items()})


def connector(host: FakeHost, strategy: str = "chroot") -> tuple[KernelConnector, RecordingRunner]:
    runner = RecordingRunner(strategy=strategy, responders=[host.respond])
    conn = KernelConnector(
        runner, NODE, sysfs=str(host.sys), dev=str(host.dev), device_timeout=1, poll=0.01, inquiry=host.inquiry
    )
    return conn, runner


def bare(calls: list[list[str]]) -> list[list[str]]:
    """Commands without the host-exec prefix."""
    out = []
    for c in calls:
        if c[:2] == ["chroot", "/host"]:
            c = c[2:]
        elif "--" in c:
            c = c[c.index("--") + 1 :]
        out.append(c)
    return out


def test_session_tuning_reaches_the_node_record_before_the_login(tmp_path: Path) -> None:
    """The configured queue depth, cmds_max and replacement_timeout go into the record first."""
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    runner = RecordingRunner(strategy="chroot", responders=[host.respond])
    tuning = SessionTuning(queue_depth=64, cmds_max=256, replacement_timeout=15)
    conn = KernelConnector(
        runner, NODE, sysfs=str(host.sys), dev=str(host.dev), device_timeout=1, poll=0.01, tuning=tuning,
        inquiry=host.inquiry,
    )  # fmt: skip
    conn.attach(AttachTarget(VOL, VIP, IQN, 5), None, Checkpoints())
    assert {
        "node.session.queue_depth": "64",
        "node.session.cmds_max": "256",
        "node.session.timeo.replacement_timeout": "15",
    }.items() <= host.at_login[VIP].items()
    assert not any(c[0] == "dd" for c in bare(runner.calls)), "no CHAP, nothing appended"


ONE_WAY = Chap("node-1", "NodeSecret12345")
MUTUAL = Chap("node-1", "NodeSecret12345", "zbs-target", "TargetSecret12")


@pytest.mark.parametrize("chap", [ONE_WAY, MUTUAL], ids=["one-way", "mutual"])
@pytest.mark.parametrize("portals", [(), DATA], ids=["single-path", "multipath"])
def test_chap_reaches_the_node_record_and_no_argv_ever_holds_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, chap: Chap, portals: tuple[str, ...]
) -> None:
    """The auth block is appended to each portal's record file through dd's stdin, checked with
    ``iscsiadm -o show`` (masked) and only then logged in with; no command line, environment or
    log line holds a secret (on the connector before the fix, ``-o update -v <password>`` did)."""
    host = FakeHost(tmp_path)
    for p in portals or (VIP,):
        host.serve(p, 5, VOL)
    conn, runner = connector(host)
    with caplog.at_level(logging.DEBUG):
        att = conn.attach(AttachTarget(VOL, VIP, IQN, 5, portals=portals), chap, Checkpoints())
        conn.detach(AttachTarget(VOL, VIP, IQN, 5, portals=portals), att.data, [])
    secrets = [s for s in (chap.password, chap.password_in) if s]
    for argv in runner.calls:
        assert not any(secret in arg for secret in secrets for arg in argv), f"a secret in argv: {argv[:6]}"
    assert not any(secret in caplog.text for secret in secrets)
    want = {"node.session.auth.authmethod": "CHAP", "node.session.auth.username": chap.username,
            "node.session.auth.password": chap.password}  # fmt: skip
    if chap.username_in:
        want |= {"node.session.auth.username_in": chap.username_in, "node.session.auth.password_in": chap.password_in}
    calls = bare(runner.calls)
    for p in portals or (VIP,):
        assert want.items() <= host.at_login[p].items(), f"the login through {p} read another auth block"
        record = host.record_of(p)
        write = calls.index(["dd", f"of={record}", "oflag=append", "conv=notrunc,nocreat", "status=none"])
        assert runner.stdins[write] == "".join(f"{k} = {v}\n" for k, v in want.items()), "the block, via stdin only"
        show = calls.index(["iscsiadm", "-m", "node", "-T", IQN, "-p", p, "-o", "show"])
        assert write < show < calls.index(["iscsiadm", "-m", "node", "-T", IQN, "-p", p, "--login"])
    assert sum(1 for c in calls if c[0] == "dd") == len(portals or (VIP,)), "one write per record"
    assert not host.records, "detach deleted the records, and the secrets in them"


def test_record_files_of_one_portal_in_either_layout() -> None:
    found = "".join(
        f"{line}\n"
        for line in (
            f"600 /etc/iscsi/nodes/{IQN}/10.0.0.1,3260",  # -o new: flat file
            f"600 /etc/iscsi/nodes/{IQN}/10.0.0.11,3260",  # another portal sharing a prefix
            f"644 /var/lib/iscsi/nodes/{IQN}/10.0.0.1,3260,1/default",  # discovered: per tpgt and iface
            f"600 /var/lib/iscsi/nodes/{IQN}/10.0.0.1,3260,1/iface0",
            f"600 /etc/iscsi/nodes/{IQN}/10.0.0.1,3261",
            f"600 /etc/iscsi/nodes/{IQN}.x/10.0.0.1,3260",
            f"600 /etc/iscsi/send_targets/10.0.0.1,3260/{IQN},10.0.0.1,3260,1,default",
            f"600 /etc/iscsi/nodes/{IQN}/fd00::1,3260",
        )
    )
    assert record_files(found, IQN, "10.0.0.1:3260") == {
        f"/etc/iscsi/nodes/{IQN}/10.0.0.1,3260": 0o600,
        f"/var/lib/iscsi/nodes/{IQN}/10.0.0.1,3260,1/default": 0o644,
        f"/var/lib/iscsi/nodes/{IQN}/10.0.0.1,3260,1/iface0": 0o600,
    }
    assert record_files(found, IQN, "[fd00::1]:3260") == {f"/etc/iscsi/nodes/{IQN}/fd00::1,3260": 0o600}


def test_a_record_that_cannot_be_found_fails_the_attach_and_never_falls_back_to_argv(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    host.record_db = "/usr/local/etc/iscsi/nodes"  # an open-iscsi built with another database root
    conn, runner = connector(host)
    with pytest.raises(ConnectorError, match="no open-iscsi node record") as err:
        conn.attach(AttachTarget(VOL, VIP, IQN, 5), MUTUAL, Checkpoints())
    assert not err.value.retryable
    calls = bare(runner.calls)
    assert not any("--login" in c for c in calls)
    assert not any(s in a for c in runner.calls for a in c for s in (MUTUAL.password, MUTUAL.password_in))


def test_a_record_open_iscsi_does_not_read_back_fails_before_any_login(tmp_path: Path) -> None:
    """``-o show`` is the proof that open-iscsi parsed the appended lines: without it, no login."""
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    conn, runner = connector(host)
    respond = host.respond

    def dd_lost(argv: list[str], stdin: str | None) -> Result | None:
        return Result(argv, 0) if argv[0] == "dd" else respond(argv, stdin)  # the write went nowhere

    runner.responders = [dd_lost]
    with pytest.raises(ConnectorError, match=r"did not take the CHAP credentials.*authmethod is None") as err:
        conn.attach(AttachTarget(VOL, VIP, IQN, 5), ONE_WAY, Checkpoints())
    assert ONE_WAY.password not in str(err.value)
    assert not any("--login" in c for c in bare(runner.calls))


def test_a_record_others_can_read_is_closed_before_a_secret_goes_in(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    respond = host.respond

    def made_0644(argv: list[str], stdin: str | None) -> Result | None:
        res = respond(argv, stdin)
        if argv[-2:] == ["-o", "new"]:
            host.modes[host.record_of(VIP)] = 0o644
        return res

    conn, runner = connector(host)
    runner.responders = [made_0644]
    conn.attach(AttachTarget(VOL, VIP, IQN, 5), ONE_WAY, Checkpoints())
    calls = bare(runner.calls)
    chmod = calls.index(["chmod", "0600", host.record_of(VIP)])
    assert chmod < next(i for i, c in enumerate(calls) if c[0] == "dd")
    assert host.modes[host.record_of(VIP)] == 0o600


def test_a_secret_open_iscsi_would_cut_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    conn, runner = connector(host)
    long = Chap("node-1", "a1" * 150)  # ZBS takes 512 characters; open-iscsi keeps 255
    with pytest.raises(ConnectorError, match="1-255 printable") as err:
        conn.attach(AttachTarget(VOL, VIP, IQN, 5), long, Checkpoints())
    assert long.password not in str(err.value) and not err.value.retryable
    assert not any("--login" in c for c in bare(runner.calls))


def test_parse_sessions() -> None:
    text = f"tcp: [3] {VIP},1 {IQN} (non-flash)\ntcp: [12] [fd00::1]:3260,1 iqn.x:y (non-flash)\n"
    sessions = parse_sessions(text)
    assert [(s.sid, s.portal, s.target_iqn) for s in sessions] == [(3, VIP, IQN), (12, "[fd00::1]:3260", "iqn.x:y")]
    assert parse_sessions("iscsiadm: No active sessions.") == []


def test_one_path_per_data_portal_and_the_map_is_the_device(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(tmp_path)
    for p in DATA:
        host.serve(p, 5, VOL)
    conn, runner = connector(host)
    secret = "TopSecretChap42"
    with caplog.at_level(logging.DEBUG):
        att = conn.attach(AttachTarget(VOL, VIP, IQN, 5, portals=DATA), Chap("node-1", secret), Checkpoints())
    assert att.device == str(host.dev / "mapper" / wwid_of(VOL))
    assert att.data["portals"] == list(DATA) and len(att.data["hctls"]) == 2
    calls = bare(runner.calls)
    for p in DATA:
        node = ["iscsiadm", "-m", "node", "-T", IQN, "-p", p]
        assert [*node, "-o", "new"] in calls and [*node, "--login"] in calls
        update = next(c for c in calls if c[: len(node) + 2] == [*node, "-o", "update"])  # one call, every setting
        pairs = list(zip(update[len(node) + 3 :: 4], update[len(node) + 5 :: 4], strict=True))
        assert set(NODE_SETTINGS + DATA_PORTAL_SETTINGS) <= set(pairs)
        assert calls.index([*node, "--login"]) > calls.index(update), "the settings are written before the login"
        assert host.at_login[p]["node.session.auth.password"] == secret
    assert not any(VIP in c for c in calls), "with data portals the VIP is not a path"
    assert secret not in caplog.text
    for h in (7, 8):
        assert (host.sys / f"class/scsi_host/host{h}/scan").read_text() == "0 0 5"  # this LUN only
    conn.verify(att.device, att.data, VOL)


def test_without_data_portals_one_session_through_the_vip(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    conn, runner = connector(host)
    att = conn.attach(AttachTarget(VOL, VIP, IQN, 5), None, Checkpoints())
    assert att.data["portals"] == [VIP]
    assert ["iscsiadm", "-m", "node", "-T", IQN, "-p", VIP, "--login"] in bare(runner.calls)


def test_a_dead_data_portal_leaves_the_other_paths_and_all_dead_falls_back_to_the_vip(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    for p in (*DATA, VIP):
        host.serve(p, 5, VOL)
    host.dead = {DATA[0]}
    conn, _ = connector(host)
    att = conn.attach(AttachTarget(VOL, VIP, IQN, 5, portals=DATA), None, Checkpoints())
    assert att.data["portals"] == [DATA[1]] and len(att.data["hctls"]) == 1

    host2 = FakeHost(tmp_path / "2")
    host2.serve(VIP, 5, VOL)
    host2.dead = set(DATA)
    conn2, _ = connector(host2)
    att2 = conn2.attach(AttachTarget(VOL, VIP, IQN, 5, portals=DATA), None, Checkpoints())
    assert att2.data["portals"] == [VIP]


def test_credentials_every_data_portal_refused_are_not_tried_on_the_vip(tmp_path: Path) -> None:
    """The cluster refuses a CHAP login, not a portal: one clear error, no second try through the VIP,
    no record left. A portal that is merely down still lets the VIP be tried."""
    host = FakeHost(tmp_path)
    for p in (*DATA, VIP):
        host.serve(p, 5, VOL)
    host.refusing = {*DATA, VIP}
    conn, runner = connector(host)
    with pytest.raises(ConnectorError, match="refused this node's CHAP credentials") as err:
        conn.attach(AttachTarget(VOL, VIP, IQN, 5, portals=DATA), Chap("node-1", "Wrong-secret-1"), Checkpoints())
    assert VIP not in str(err.value)
    assert not any(VIP in c for c in bare(runner.calls)), "the VIP was tried after every data portal refused"
    assert host.records == {} and host.sessions == {}

    host2 = FakeHost(tmp_path / "2")
    for p in (*DATA, VIP):
        host2.serve(p, 5, VOL)
    host2.refusing, host2.dead = {DATA[0]}, {DATA[1]}
    conn2, _ = connector(host2)
    att = conn2.attach(AttachTarget(VOL, VIP, IQN, 5, portals=DATA), Chap("node-1", "Right-secret-1"), Checkpoints())
    assert att.data["portals"] == [VIP], "one portal down: the VIP is still worth a try"


def test_strict_multipath_gets_the_wwid_registered_and_it_is_forgotten_on_detach(tmp_path: Path) -> None:
    """Debian's find_multipaths strict maps only known WWIDs: the driver registers and removes its own."""
    host = FakeHost(tmp_path, maps_on_uevent=False)
    host.serve(VIP, 5, VOL)
    conn, runner = connector(host)
    seen = Checkpoints()
    t = AttachTarget(VOL, VIP, IQN, 5)
    att = conn.attach(t, None, seen)
    assert att.device == str(host.dev / "mapper" / wwid_of(VOL))
    assert att.data["wwid_added"] and wwid_of(VOL) in host.wwids
    assert any(c.get("wwid_added") for c in seen), "registered before the wait, so a crash still forgets it"
    calls = bare(runner.calls)
    assert calls.index(["multipath", "-a", "/dev/sda"]) < calls.index(["multipathd", "add", "path", "sda"])
    conn.detach(t, att.data, [])
    assert wwid_of(VOL) not in host.wwids
    assert not host.sessions


def test_a_wwid_the_admin_registered_is_never_removed(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, maps_on_uevent=False)
    host.serve(VIP, 5, VOL)
    host.wwids = {wwid_of(VOL), "3600a0b80000000000000000000000001"}
    conn, runner = connector(host)
    t = AttachTarget(VOL, VIP, IQN, 5)
    att = conn.attach(t, None, Checkpoints())
    assert not att.data.get("wwid_added")
    conn.detach(t, att.data, [])
    assert host.wwids == {wwid_of(VOL), "3600a0b80000000000000000000000001"}
    assert not any(c[:2] == ["multipath", "-w"] for c in bare(runner.calls))


def test_checkpoints_come_before_each_step_that_leaves_something(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, maps_on_uevent=False)
    host.serve(VIP, 5, VOL)
    conn, _ = connector(host)
    seen = Checkpoints()
    conn.attach(AttachTarget(VOL, VIP, IQN, 5), None, seen)
    assert seen[0] == {"target_iqn": IQN, "portals": [VIP], "hctls": []}, "the record exists before the login"
    assert any(c["hctls"] and "wwid" not in c for c in seen), "the path is recorded before it is scanned"


def test_an_interrupted_attach_is_undone_from_its_checkpoint(tmp_path: Path) -> None:
    """A plugin killed after login and scan: detach with the partial record leaves nothing."""
    host = FakeHost(tmp_path, maps_on_uevent=False)
    host.serve(VIP, 5, VOL)
    conn, runner = connector(host)
    seen = Checkpoints()
    t = AttachTarget(VOL, VIP, IQN, 5)
    conn.attach(t, None, seen)
    partial = next(c for c in seen if c["hctls"] and "wwid" not in c)
    (host.sys / "block/dm-0").rename(host.sys / "gone-dm-0")  # the map was never built
    conn.detach(t, partial, [])
    assert (host.sys / "block/sda/device/delete").read_text() == "1"
    assert ["iscsiadm", "-m", "node", "-T", IQN, "-p", VIP, "--logout"] in bare(runner.calls)
    assert ["iscsiadm", "-m", "node", "-T", IQN, "-p", VIP, "-o", "delete"] in bare(runner.calls)


def test_a_masked_lun_fails_at_once_instead_of_waiting_for_a_device(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 6, VOL)  # the session shows LUN 6 only: LUN 5 is masked for this node
    conn, _ = connector(host)
    conn.device_timeout = 60
    t0 = time.monotonic()
    with pytest.raises(ConnectorError, match="not visible"):
        conn.attach(AttachTarget(VOL, VIP, IQN, 5), None, Checkpoints())
    assert time.monotonic() - t0 < 10


def test_a_path_multipathd_takes_late_is_refused_when_multipath_is_off(tmp_path: Path) -> None:
    """multipathd acts after udev: the claim can come after attach; verify (before probe, mkfs) sees it."""
    host = FakeHost(tmp_path, maps_on_uevent=False)
    host.serve(VIP, 5, VOL)
    conn, _ = connector(host)
    conn.multipath = False
    att = conn.attach(AttachTarget(VOL, VIP, IQN, 5), None, Checkpoints())
    conn.verify(att.device, att.data, VOL)
    host._map("sda", VOL)  # multipathd (find_multipaths no) takes the path now
    with pytest.raises(ConnectorError, match="multipath is off") as exc:
        conn.verify(att.device, att.data, VOL)
    assert not exc.value.retryable


def test_a_vpd_page_missing_after_the_scan_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    sysfs_read = KernelConnector._read_bytes

    def kernel(path: Path) -> bytes:  # the scan's INQUIRY for page 0x80 failed: no page until a rescan
        if path.name == "vpd_pg80" and (path.parent / "rescan").read_text() != "1":
            return b""
        return sysfs_read(path)

    monkeypatch.setattr(KernelConnector, "_read_bytes", staticmethod(kernel))
    conn, _ = connector(host)
    att = conn.attach(AttachTarget(VOL, VIP, IQN, 5), None, Checkpoints())
    assert (host.sys / "block/sda/device/rescan").read_text() == "1", "the connector asked for a rescan"
    assert att.device.endswith(wwid_of(VOL))


def test_a_reused_lun_id_with_another_volume_is_refused(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, OTHER)  # LUN 5 now belongs to another volume
    conn, _ = connector(host)
    with pytest.raises(ConnectorError) as exc:
        conn.attach(AttachTarget(VOL, VIP, IQN, 5), None, Checkpoints())
    assert not exc.value.retryable and "refusing" in str(exc.value)


def test_verify_refuses_a_node_that_is_not_the_volume(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    host.serve(VIP, 6, OTHER)
    conn, _ = connector(host)
    t = AttachTarget(VOL, VIP, IQN, 5)
    att = conn.attach(t, None, Checkpoints())
    conn.attach(AttachTarget(OTHER, VIP, IQN, 6), None, Checkpoints())
    other_map = str(host.dev / "mapper" / wwid_of(OTHER))
    with pytest.raises(ConnectorError) as exc:
        conn.verify(other_map, att.data, VOL)
    assert not exc.value.retryable
    with pytest.raises(ConnectorError) as exc:
        conn.verify(str(tmp_path / "missing"), att.data, VOL)
    assert exc.value.retryable, "a device node that is not there yet is worth another try"
    conn.inquiry = lambda _dev: OTHER.replace("-", "")  # the node answers as another LUN
    with pytest.raises(ConnectorError, match="answers as"):
        conn.verify(att.device, att.data, VOL)


def test_with_multipath_off_a_path_held_by_multipathd_is_refused(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)  # multipathd maps it anyway (find_multipaths no)
    host.serve(VIP, 5, VOL)
    conn, _ = connector(host)
    conn.multipath = False
    with pytest.raises(ConnectorError, match="multipath"):
        conn.attach(AttachTarget(VOL, VIP, IQN, 5), None, Checkpoints())
    host2 = FakeHost(tmp_path / "2", maps_on_uevent=False)
    host2.serve(VIP, 5, VOL)
    conn2, runner2 = connector(host2)
    conn2.multipath = False
    att = conn2.attach(AttachTarget(VOL, VIP, IQN, 5), None, Checkpoints())
    assert att.device == str(host2.dev / "sda") and "wwid" not in att.data
    assert not any(c[0].startswith("multipath") for c in bare(runner2.calls))


def test_detach_keeps_shared_sessions_and_logs_out_with_the_last_volume(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    for p in DATA:
        host.serve(p, 5, VOL)
        host.serve(p, 6, OTHER)
    conn, runner = connector(host, strategy="nsenter")
    ta, tb = AttachTarget(VOL, VIP, IQN, 5, portals=DATA), AttachTarget(OTHER, VIP, IQN, 6, portals=DATA)
    a = conn.attach(ta, None, Checkpoints())
    b = conn.attach(tb, None, Checkpoints())
    assert sum("--login" in c for c in runner.calls) == 2, "the second volume reuses both sessions"
    host.flush_failures = 2
    n = len(runner.calls)
    conn.detach(ta, a.data, [tb])
    calls = bare(runner.calls[n:])
    assert calls.count(["multipath", "-f", wwid_of(VOL)]) == 3  # retried while the map was busy
    mine = [d for d, v in host.disks.items() if v == VOL]
    theirs = [d for d, v in host.disks.items() if v == OTHER]
    assert len(mine) == 2 and all((host.sys / f"block/{d}/device/delete").read_text() == "1" for d in mine)
    assert all((host.sys / f"block/{d}/device/delete").read_text() == "" for d in theirs), "the others' paths stay"
    assert not any("--logout" in c for c in calls), "another staged volume still uses the sessions"

    n = len(runner.calls)
    conn.detach(tb, b.data, [])
    order = [c for c in bare(runner.calls[n:]) if c[0] == "iscsiadm" and ("--logout" in c or "delete" in c)]
    assert order == [
        x for p in DATA for x in (["iscsiadm", "-m", "node", "-T", IQN, "-p", p, "--logout"],
                                  ["iscsiadm", "-m", "node", "-T", IQN, "-p", p, "-o", "delete"])
    ]  # fmt: skip


def test_a_failed_logout_is_retryable_and_deletes_nothing(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.serve(VIP, 5, VOL)
    conn, runner = connector(host)
    t = AttachTarget(VOL, VIP, IQN, 5)
    att = conn.attach(t, None, Checkpoints())
    host.logout_rc = 8
    n = len(runner.calls)
    with pytest.raises(ConnectorError) as exc:
        conn.detach(t, att.data, [])
    assert exc.value.retryable
    assert not any("-o" in c and "delete" in c for c in runner.calls[n:])


def test_expand_rescans_every_path_then_resizes_the_map(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    for p in DATA:
        host.serve(p, 5, VOL)
    conn, runner = connector(host)
    t = AttachTarget(VOL, VIP, IQN, 5, portals=DATA)
    att = conn.attach(t, None, Checkpoints())
    size = conn.resize(t, att.data, 4 * 1024**3)
    assert all((host.sys / f"block/{d}/device/rescan").read_text() == "1" for d in ("sda", "sdb"))
    assert bare(runner.calls)[-1] == ["multipathd", "resize", "map", wwid_of(VOL)]
    assert size == 4 * 1024**3


def test_condition_reports_dead_sessions_and_a_map_without_paths(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    for p in DATA:
        host.serve(p, 5, VOL)
    conn, _ = connector(host)
    att = conn.attach(AttachTarget(VOL, VIP, IQN, 5, portals=DATA), None, Checkpoints())
    assert conn.condition(att.data, VOL) is None
    (host.sys / "class/iscsi_session/session3/state").write_text("FAILED\n")
    assert conn.condition(att.data, VOL) is None, "one path of two down: degraded, still healthy"
    for d in ("sda", "sdb"):
        (host.sys / f"block/{d}/device/state").write_text("offline\n")
    assert "no active path" in (conn.condition(att.data, VOL) or "")
    (host.sys / "class/iscsi_session/session4/state").write_text("FAILED\n")
    assert "FAILED" in (conn.condition(att.data, VOL) or "")


def test_probe_reports_missing_multipathd(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    conn, runner = connector(host)
    assert conn.missing() == []
    runner.responders.insert(
        0, lambda argv, _s: Result(argv, 1, "", "can't connect") if argv[:2] == ["multipathd", "show"] else None
    )
    assert conn.missing() == ["a running multipathd (systemctl enable --now multipathd)"]


def test_unit_serial_inquiry_request_and_answer() -> None:
    assert vpd_inquiry_cdb(0x80) == bytes([0x12, 0x01, 0x80, 0x00, 0xFC, 0x00])  # EVPD, page 0x80, 252 bytes
    assert parse_unit_serial(vpd80("0B7C7A3E6F314F5C ")) == "0b7c7a3e6f314f5c"
    assert parse_unit_serial(bytes([0, 0x83, 0, 4]) + b"abcd") == "", "another page is not a serial"
    assert parse_unit_serial(b"\0\x80") == ""
    with pytest.raises(InquiryError):
        read_unit_serial("/nonexistent/device")
