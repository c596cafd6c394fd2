"""The kernel connector's command sequence, against a recording runner and a fake sysfs tree.

The kernel iSCSI initiator (iscsi_tcp) cannot run on these machines, so this is the one place
the host is simulated: ``iscsiadm``/``multipath`` are recorded and answered by responders,
and /sys is a directory tree the test builds the way the kernel would lay it out.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from zbs_csi.chap import Chap
from zbs_csi.node.connectors.base import AttachTarget, ConnectorError
from zbs_csi.node.connectors.kernel import NODE_SETTINGS, KernelConnector, SessionTuning, parse_sessions
from zbs_csi.node.runner import RecordingRunner, Result

VOL = "0b7c7a3e-6f31-4f5c-9d0e-2a4b7c9d1e2f"
OTHER = "11111111-2222-4333-8444-555555555555"
IQN = "iqn.2016-02.com.smartx:system:zbs-csi-0001"
PORTAL = "10.0.0.10:3260"
NODE = "iqn.2026-01.com.example:node-1"


def vpd80(serial: str) -> bytes:
    return bytes([0, 0x80, 0, len(serial)]) + serial.encode()


class FakeHost:
    """sysfs for one iSCSI session (sid 3, SCSI host 2) with LUNs as sdX under one dm map each."""

    def __init__(self, root: Path) -> None:
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.logged_in = False
        self.logout_rc = 0
        self.flush_failures = 0
        sess = self.sys / "class/iscsi_session/session3"
        (sess / "device/target2:0:0").mkdir(parents=True)
        (sess / "state").write_text("LOGGED_IN\n")
        (self.sys / "class/scsi_host/host2").mkdir(parents=True)
        (self.sys / "class/scsi_host/host2/scan").write_text("")

    def add_lun(self, lun: int, disk: str, dm: str, serial: str) -> None:
        (self.sys / f"class/scsi_device/2:0:0:{lun}/device/block/{disk}").mkdir(parents=True)
        dev = self.sys / f"block/{disk}/device"
        dev.mkdir(parents=True)
        (dev / "vpd_pg80").write_bytes(vpd80(serial))
        (dev / "state").write_text("running\n")
        (dev / "delete").write_text("")
        (dev / "rescan").write_text("")
        (self.sys / f"block/{disk}/holders/{dm}").mkdir(parents=True)
        (self.sys / f"block/{dm}/dm").mkdir(parents=True)
        (self.sys / f"block/{dm}/dm/name").write_text(f"mpath-{disk}\n")
        (self.sys / f"block/{dm}/dm/uuid").write_text(f"mpath-36{serial}\n")
        (self.sys / f"block/{dm}/slaves/{disk}").mkdir(parents=True)
        (self.sys / f"block/{dm}/size").write_text(str(4 * 1024 * 1024 * 2))

    def respond(self, argv: list[str], _stdin: str | None) -> Result | None:
        if argv[:3] == ["iscsiadm", "-m", "session"]:
            if not self.logged_in:
                return Result(argv, 21, "", "iscsiadm: No active sessions.")
            return Result(argv, 0, f"tcp: [3] {PORTAL},1 {IQN} (non-flash)\n")
        if "--login" in argv:
            self.logged_in = True
        if "--logout" in argv:
            if self.logout_rc:
                return Result(argv, self.logout_rc, "", "iscsiadm: Could not logout: session busy")
            self.logged_in = False
        if argv[:2] == ["multipath", "-f"] and self.flush_failures:
            self.flush_failures -= 1
            return Result(argv, 1, "", "map in use")
        return None


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def connector(host: FakeHost, strategy: str = "chroot") -> tuple[KernelConnector, RecordingRunner]:
    runner = RecordingRunner(strategy=strategy, responders=[host.respond])
    conn = KernelConnector(runner, NODE, sysfs=str(host.sys), dev=str(host.dev), device_timeout=1, poll=0.01)
    return conn, runner


def test_session_tuning_and_mutual_chap_reach_the_node_record(host: FakeHost, caplog: pytest.LogCaptureFixture) -> None:
    """The configured queue depth, cmds_max and replacement_timeout, and mutual CHAP's _in
    credentials, are written into the node record before the login; no secret is logged."""
    host.add_lun(5, "sdc", "dm-1", VOL.replace("-", ""))
    runner = RecordingRunner(strategy="chroot", responders=[host.respond])
    tuning = SessionTuning(queue_depth=64, cmds_max=256, replacement_timeout=15)
    conn = KernelConnector(
        runner, NODE, sysfs=str(host.sys), dev=str(host.dev), device_timeout=1, poll=0.01, tuning=tuning
    )
    chap = Chap("node-1", "NodeSecret12345", "zbs-target", "TargetSecret12")
    with caplog.at_level(logging.DEBUG):
        conn.attach(AttachTarget(VOL, PORTAL, IQN, 5), chap)
    node = ["chroot", "/host", "iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL]
    login = runner.calls.index([*node, "--login"])
    for key, value in (
        ("node.session.queue_depth", "64"),
        ("node.session.cmds_max", "256"),
        ("node.session.timeo.replacement_timeout", "15"),
        ("node.session.auth.username_in", "zbs-target"),
        ("node.session.auth.password_in", "TargetSecret12"),
    ):
        assert runner.calls.index([*node, "-o", "update", "-n", key, "-v", value]) < login
    assert "TargetSecret12" not in caplog.text and "NodeSecret12345" not in caplog.text


def test_parse_sessions() -> None:
    text = f"tcp: [3] {PORTAL},1 {IQN} (non-flash)\ntcp: [12] [fd00::1]:3260,1 iqn.x:y (non-flash)\n"
    sessions = parse_sessions(text)
    assert [(s.sid, s.portal, s.target_iqn) for s in sessions] == [(3, PORTAL, IQN), (12, "[fd00::1]:3260", "iqn.x:y")]
    assert parse_sessions("iscsiadm: No active sessions.") == []


def test_attach_logs_in_once_scans_only_its_lun_and_never_logs_the_chap_secret(
    host: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    host.add_lun(5, "sdc", "dm-1", VOL.replace("-", ""))
    conn, runner = connector(host)
    secret = "TopSecretChap42"
    with caplog.at_level(logging.DEBUG):
        att = conn.attach(AttachTarget(VOL, PORTAL, IQN, 5), Chap("node-1", secret))
    assert att.device == str(host.dev / "mapper" / "mpath-sdc")
    assert att.data["paths"] == ["sdc"] and att.data["dm"] == "dm-1"
    assert (host.sys / "class/scsi_host/host2/scan").read_text() == "0 0 5"  # this LUN only, no wildcard
    node = ["chroot", "/host", "iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL]
    assert [*node, "-o", "new"] in runner.calls
    for key, value in NODE_SETTINGS:
        assert [*node, "-o", "update", "-n", key, "-v", value] in runner.calls
    assert ("node.startup", "manual") in NODE_SETTINGS and ("node.session.scan", "manual") in NODE_SETTINGS
    assert [*node, "-o", "update", "-n", "node.session.auth.password", "-v", secret] in runner.calls
    assert runner.calls.index([*node, "--login"]) > runner.calls.index(
        [*node, "-o", "update", "-n", "node.session.auth.password", "-v", secret]
    )
    assert secret not in caplog.text

    # A second volume of the same target reuses the session: no second login.
    host.add_lun(6, "sdd", "dm-2", OTHER.replace("-", ""))
    before = len(runner.calls)
    conn.attach(AttachTarget(OTHER, PORTAL, IQN, 6), None)
    assert not any("--login" in c for c in runner.calls[before:])
    assert (host.sys / "class/scsi_host/host2/scan").read_text() == "0 0 6"


def test_a_reused_lun_id_with_another_volume_is_refused(host: FakeHost) -> None:
    host.add_lun(5, "sdc", "dm-1", OTHER.replace("-", ""))  # LUN 5 now belongs to another volume
    conn, _ = connector(host)
    with pytest.raises(ConnectorError) as exc:
        conn.attach(AttachTarget(VOL, PORTAL, IQN, 5), None)
    assert not exc.value.retryable and "refusing" in str(exc.value)


def test_detach_keeps_a_shared_session_and_logs_out_with_the_last_volume(host: FakeHost) -> None:
    host.add_lun(5, "sdc", "dm-1", VOL.replace("-", ""))
    host.add_lun(6, "sdd", "dm-2", OTHER.replace("-", ""))
    conn, runner = connector(host, strategy="nsenter")
    a = conn.attach(AttachTarget(VOL, PORTAL, IQN, 5), None)
    b = conn.attach(AttachTarget(OTHER, PORTAL, IQN, 6), None)
    host.flush_failures = 2
    n = len(runner.calls)
    conn.detach(AttachTarget(VOL, PORTAL, IQN, 5), a.data, [AttachTarget(OTHER, PORTAL, IQN, 6)])
    calls = [c[c.index("--") + 1 :] if "--" in c else c for c in runner.calls[n:]]
    assert calls.count(["multipath", "-f", "mpath-sdc"]) == 3  # retried while the map was busy
    assert (host.sys / "block/sdc/device/delete").read_text() == "1"
    assert ["multipath", "-w", "36" + VOL.replace("-", "")] in calls
    assert not any("--logout" in c for c in calls), "another staged volume still uses the session"

    n = len(runner.calls)
    conn.detach(AttachTarget(OTHER, PORTAL, IQN, 6), b.data, [])
    calls = [c[c.index("--") + 1 :] if "--" in c else c for c in runner.calls[n:]]
    order = [c for c in calls if c[0] == "iscsiadm" and ("--logout" in c or "delete" in c)]
    assert order == [
        ["iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL, "--logout"],
        ["iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL, "-o", "delete"],
    ]


def test_a_failed_logout_is_retryable_and_deletes_nothing(host: FakeHost) -> None:
    host.add_lun(5, "sdc", "dm-1", VOL.replace("-", ""))
    conn, runner = connector(host)
    att = conn.attach(AttachTarget(VOL, PORTAL, IQN, 5), None)
    host.logout_rc = 8
    n = len(runner.calls)
    with pytest.raises(ConnectorError) as exc:
        conn.detach(AttachTarget(VOL, PORTAL, IQN, 5), att.data, [])
    assert exc.value.retryable
    assert not any("-o" in c and "delete" in c for c in runner.calls[n:])


def test_expand_rescans_every_path_then_resizes_the_map(host: FakeHost) -> None:
    host.add_lun(5, "sdc", "dm-1", VOL.replace("-", ""))
    conn, runner = connector(host)
    att = conn.attach(AttachTarget(VOL, PORTAL, IQN, 5), None)
    size = conn.resize(AttachTarget(VOL, PORTAL, IQN, 5), att.data, 4 * 1024**3)
    assert (host.sys / "block/sdc/device/rescan").read_text() == "1"
    assert runner.calls[-1][-4:] == ["multipathd", "resize", "map", "mpath-sdc"]
    assert size == 4 * 1024**3


def test_condition_reports_a_dead_session_and_a_map_without_paths(host: FakeHost) -> None:
    host.add_lun(5, "sdc", "dm-1", VOL.replace("-", ""))
    conn, _ = connector(host)
    att = conn.attach(AttachTarget(VOL, PORTAL, IQN, 5), None)
    assert conn.condition(att.data) is None
    (host.sys / "block/sdc/device/state").write_text("offline\n")
    assert "no active path" in (conn.condition(att.data) or "")
    (host.sys / "class/iscsi_session/session3/state").write_text("FAILED\n")
    assert "FAILED" in (conn.condition(att.data) or "")


def test_a_fresh_session_without_a_scsi_target_yet_is_scanned_on_its_host(tmp_path: Path) -> None:
    """Real sysfs: the session's device links to .../hostN/sessionM; no target dir before a scan."""
    host = FakeHost(tmp_path)
    session_dir = host.sys / "devices/platform/host7/session3"
    session_dir.mkdir(parents=True)
    link = host.sys / "class/iscsi_session/session3/device"
    shutil.rmtree(link)
    link.symlink_to(session_dir)
    (host.sys / "class/scsi_host/host7").mkdir(parents=True)
    (host.sys / "class/scsi_host/host7/scan").write_text("")
    (host.sys / "class/scsi_device/7:0:0:2/device/block/sde").mkdir(parents=True)
    dev = host.sys / "block/sde/device"
    dev.mkdir(parents=True)
    (dev / "vpd_pg80").write_bytes(vpd80(VOL.replace("-", "")))
    conn, _ = connector(host)
    conn.multipath = False
    att = conn.attach(AttachTarget(VOL, PORTAL, IQN, 2), None)
    assert (host.sys / "class/scsi_host/host7/scan").read_text() == "0 0 2"
    assert att.device == str(host.dev / "sde") and att.data["hctl"] == "7:0:0:2"
