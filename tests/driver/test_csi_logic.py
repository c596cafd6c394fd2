"""The driver's pure logic: parameters, sizes, ids, capabilities, mounts, config, state, runner."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest
from zbs_csi import caps
from zbs_csi.chap import chap_from_secrets
from zbs_csi.config import ConfigError, load_config
from zbs_csi.controller import choose_size
from zbs_csi.errors import CsiError
from zbs_csi.ids import check_volume_id, is_iqn, lun_name_for
from zbs_csi.locks import KeyedLocks
from zbs_csi.log import JsonFormatter, log_context, redact
from zbs_csi.node.connectors.base import AttachTarget, ConnectorError
from zbs_csi.node.mounts import find_mount, parse_mountinfo
from zbs_csi.node.runner import FIXED_PATH, CommandError, HostRunner, Runner
from zbs_csi.node.state import StageRecord, StateStore
from zbs_csi.params import k8s_objects, parse_mutable_params, parse_snapshot_params, parse_volume_params
from zbs_csi.proto import csi_pb2 as csi

GiB = 1024**3
Mode = csi.VolumeCapability.AccessMode


def code(fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(CsiError) as exc:
        fn(*args)
    return exc.value.code, exc.value.message


def test_storage_class_parameters() -> None:
    p = parse_volume_params(
        {
            "csi.storage.k8s.io/fstype": "xfs",
            "csi.storage.k8s.io/pvc/name": "data",
            "replication.n": "3",
            "thinProvisioning": "false",
            "iops": "3000",
            "throughput": "104857600",
            "stripeNum": "4",
            "stripeSize": "128Ki",
        }
    )
    assert (p.fs_type, p.replica_num, p.thin_provision, p.stripe_num, p.stripe_size) == ("xfs", 3, False, 4, 131072)
    assert p.lun_fields() == {"thin_provision": False, "iops": 3000, "bps": 104857600}
    for bad in ({"bogus": "2"}, {"iops": "lots"}, {"stripeSize": "100Ki"}, {"replication.n": "5"}):
        c, msg = code(parse_volume_params, bad)
        assert c == grpc.StatusCode.INVALID_ARGUMENT and next(iter(bad)) in msg
    assert parse_mutable_params({"iops": "10"}) == {"iops": 10}
    c, msg = code(parse_mutable_params, {"replication.n": "3"})
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "replication.n" in msg


def test_sidecar_metadata_is_accepted_in_every_request_that_may_carry_it() -> None:
    """--extra-create-metadata (provisioner, snapshotter) and --extra-modify-metadata (resizer)."""
    pvc = {
        "csi.storage.k8s.io/pvc/name": "db",
        "csi.storage.k8s.io/pvc/namespace": "apps",
        "csi.storage.k8s.io/pv/name": "pvc-1",
    }
    snap = {
        "csi.storage.k8s.io/volumesnapshot/name": "nightly",
        "csi.storage.k8s.io/volumesnapshot/namespace": "apps",
        "csi.storage.k8s.io/volumesnapshotcontent/name": "snapcontent-1",
    }
    assert parse_volume_params(pvc).replica_num is None
    assert parse_mutable_params({**pvc, "iops": "10"}) == {"iops": 10}
    parse_snapshot_params(snap)
    assert k8s_objects({**pvc, **snap}) == {
        "pvc": "apps/db",
        "pv": "pvc-1",
        "volumesnapshot": "apps/nightly",
        "volumesnapshotcontent": "snapcontent-1",
    }
    c, msg = code(parse_snapshot_params, {**snap, "retention": "7d"})
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "retention" in msg
    # another driver's keys are no metadata of ours
    c, msg = code(parse_snapshot_params, {"csi.storage.k8s.io/pvc/name": "db"})
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "pvc/name" in msg


def test_storage_class_accepts_what_the_modules_accept() -> None:
    """One owner per rule: a StorageClass value is accepted exactly when the shared client
    (what zbs_target/zbs_lun use) accepts it, and the error quotes the client's rule."""
    from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import parse_bool
    from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import ZbsValidationError
    from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
        validate_replica_num,
        validate_stripe_num,
        validate_stripe_size,
    )

    cases = {
        "stripeSize": (validate_stripe_size, ["256KB", "256KiB", "256Ki", "256K", "4096", "64 KiB", "0.25MiB",
                                              "100Ki", "512KiB", "2KiB", "256kb", "lots", "-4096"]),
        "stripeNum": (lambda v: validate_stripe_num(int(v)), ["1", "8", "128", "3", "256", "0"]),
        "replication.n": (lambda v: validate_replica_num(int(v)), ["1", "2", "3", "4", "0"]),
        "thinProvisioning": (lambda v: parse_bool(v, "thin"), ["true", "False", "yes", "no", "1", "0", "on",
                                                                "off", "maybe", ""]),
    }  # fmt: skip
    for key, (rule, values) in cases.items():
        for value in values:
            try:
                want = rule(value)
            except (ZbsValidationError, ValueError):
                c, msg = code(parse_volume_params, {key: value})
                assert c == grpc.StatusCode.INVALID_ARGUMENT and key in msg, (key, value, msg)
                continue
            field = {"stripeSize": "stripe_size", "stripeNum": "stripe_num", "replication.n": "replica_num",
                     "thinProvisioning": "thin_provision"}[key]  # fmt: skip
            assert getattr(parse_volume_params({key: value}), field) == want, (key, value)
    c, msg = code(parse_volume_params, {"stripeSize": "100Ki"})
    assert msg == "parameter 'stripeSize': must be a power of two from 4KiB to 256KiB, got 102400"


def test_sizes_round_up_within_the_limit() -> None:
    assert choose_size(0, 0, GiB) == GiB
    assert choose_size(1, 0, GiB) == GiB
    assert choose_size(GiB + 1, 0, GiB) == 2 * GiB
    assert choose_size(100 * 1024**2, 200 * 1024**2, GiB) == 100 * 1024**2  # the limit wins over the granularity
    assert code(choose_size, 2 * GiB, GiB, GiB)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code(choose_size, 1000, 1001, GiB)[0] == grpc.StatusCode.OUT_OF_RANGE
    assert code(choose_size, 65 * 1024**4, 0, GiB)[0] == grpc.StatusCode.OUT_OF_RANGE


def test_names_and_ids() -> None:
    a, b = lun_name_for("pvc-1"), lun_name_for("PVC-1")
    assert a != b and a == lun_name_for("pvc-1")
    hostile = lun_name_for("$(rm -rf /); ../../x\n" + "é" * 60)
    assert all(ch.isalnum() or ch == "-" for ch in hostile) and len(hostile) <= 61
    assert check_volume_id("0b7c7a3e-6f31-4f5c-9d0e-2a4b7c9d1e2f")
    for bad in ("../etc", "0B7C7A3E-6F31-4F5C-9D0E-2A4B7C9D1E2F", "x", ""):
        assert code(check_volume_id, bad)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert is_iqn("iqn.2026-01.com.example:node-1") and is_iqn("eui.0123456789ABCDEF")
    assert not is_iqn("iqn.2026-01.com.example:a;b") and not is_iqn("node-1")


def _cap(kind: str, mode: int, fs: str = "") -> csi.VolumeCapability:
    c = csi.VolumeCapability(access_mode=csi.VolumeCapability.AccessMode(mode=mode))
    if kind == "block":
        c.block.SetInParent()
    else:
        c.mount.fs_type = fs
    return c


def test_capabilities() -> None:
    assert caps.parse(_cap("mount", Mode.SINGLE_NODE_WRITER), "ext4").fs_type == "ext4"
    assert caps.parse(_cap("block", Mode.MULTI_NODE_MULTI_WRITER)).multi_node
    assert caps.parse(_cap("mount", Mode.SINGLE_NODE_READER_ONLY, "xfs")).readonly
    assert "MULTI_NODE_MULTI_WRITER" in (caps.unsupported_reason(_cap("mount", Mode.MULTI_NODE_MULTI_WRITER)) or "")
    assert caps.unsupported_reason(_cap("mount", Mode.SINGLE_NODE_WRITER, "btrfs"))
    assert caps.unsupported_reason(csi.VolumeCapability())


def test_chap_secrets() -> None:
    assert chap_from_secrets({}) is None
    chap = chap_from_secrets({"node.session.auth.username": "n1", "node.session.auth.password": "abcdefgh1234"})
    assert chap is not None and "abcdefgh1234" not in repr(chap)
    assert code(chap_from_secrets, {"node.session.auth.username": "n1"})[0] == grpc.StatusCode.INVALID_ARGUMENT
    bad = {"node.session.auth.username": "n1", "node.session.auth.password": "short"}
    assert code(chap_from_secrets, bad)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_publish_context_is_validated() -> None:
    ok = AttachTarget.from_context(
        "v", {"portal": "127.0.0.1:3260", "targetIqn": "iqn.2016-02.com.smartx:system:t", "lun": "3"}
    )
    assert (ok.portal, ok.lun, ok.portals) == ("127.0.0.1:3260", 3, ())
    paths = AttachTarget.from_context(
        "v",
        {
            "portal": "10.0.0.1:3260",
            "portals": "10.0.0.11:3261, 10.0.0.12:3261",
            "targetIqn": "iqn.2016-02.com.smartx:system:t",
            "lun": "3",
        },
    )
    assert paths.portals == ("10.0.0.11:3261", "10.0.0.12:3261")
    for bad in (
        {"portal": "h:1/x", "targetIqn": "iqn.2016-02.com.smartx:system:t", "lun": "1"},
        {"portal": "h:99999", "targetIqn": "iqn.2016-02.com.smartx:system:t", "lun": "1"},
        {"portal": "h:1", "targetIqn": "-o", "lun": "1"},
        {"portal": "h:1", "targetIqn": "iqn.2016-02.com.smartx:system:t", "lun": "1 2"},
        {"portal": "h:1", "portals": "h:2,-o", "targetIqn": "iqn.2016-02.com.smartx:system:t", "lun": "1"},
        {"portal": "h:1", "portals": "h:2/x", "targetIqn": "iqn.2016-02.com.smartx:system:t", "lun": "1"},
    ):
        with pytest.raises(ConnectorError):
            AttachTarget.from_context("v", bad)


MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
95 22 7:3 / /var/lib/kubelet/plugins/stage\040dir rw,relatime shared:50 - xfs /dev/loop3 rw,nouuid
96 22 7:3 / /var/lib/kubelet/pods/p/mount ro,relatime shared:50 - xfs /dev/loop3 rw,nouuid
97 96 7:3 / /var/lib/kubelet/pods/p/mount rw,relatime shared:50 - xfs /dev/loop3 rw,nouuid
"""


def test_mountinfo() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert find_mount("/var/lib/kubelet/plugins/stage dir", entries) is not None
    top = find_mount("/var/lib/kubelet/pods/p/mount/", entries)
    assert top is not None and not top.readonly, "the topmost mount wins"
    assert find_mount("/var/lib/kubelet", entries) is None


def test_config_layers(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"luns_per_target": 100, "connector": "kernel", "target_prefix": "file"}))
    env = {"ZBS_HOST": "h", "ZBS_CSI_TARGET_PREFIX": "env", "ZBS_CSI_CHAP": "yes", "ZBS_CSI_KUBERNETES_CLUSTER_ID": "k"}
    cfg = load_config(str(f), env=env, overrides={"connector": "userspace", "mode": None})
    assert (cfg.zbs_host, cfg.luns_per_target, cfg.connector, cfg.target_prefix, cfg.chap) == (
        "h",
        100,
        "userspace",
        "env",
        True,
    )
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = load_config(None, env={"ZBS_CSI_ZBS_PASSWORD_FILE": str(pw), "ZBS_CSI_MODE": "node"})
    assert cfg.password() == "s3cret" and "s3cret" not in repr(cfg)
    for bad in ({"ZBS_CSI_MODE": "both"}, {"ZBS_CSI_LUNS_PER_TARGET": "300"}, {"ZBS_CSI_CHAP": "maybe"}):
        with pytest.raises(ConfigError):
            load_config(None, env=bad)
    f.write_text(json.dumps({"no_such_key": 1}))
    with pytest.raises(ConfigError, match="no_such_key"):
        load_config(str(f), env={})


def test_data_portals_come_from_zbs_lite_env_and_are_validated() -> None:
    base = {"ZBS_CSI_KUBERNETES_CLUSTER_ID": "k"}
    cfg = load_config(None, env={**base, "ZBS_ISCSI_DATA_PORTALS": "10.0.0.11:3261, 10.0.0.12:3261,"})
    assert cfg.data_portal_list == ["10.0.0.11:3261", "10.0.0.12:3261"]
    assert load_config(None, env=base).data_portal_list == []
    for bad in ("10.0.0.11", "10.0.0.11:99999", "h:1/x", "-o x:1"):
        with pytest.raises(ConfigError, match="data_portals"):
            load_config(None, env={**base, "ZBS_ISCSI_DATA_PORTALS": bad})


def test_logs_are_json_with_context_and_without_secrets() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "staged", None, None)
    record.fields = {"secrets": {"password": "p"}, "chap_secret": "z", "device": "/dev/loop1"}  # type: ignore[attr-defined]
    with log_context(op="NodeStageVolume", volume_id="v1"):
        doc = json.loads(JsonFormatter().format(record))
    assert doc["op"] == "NodeStageVolume" and doc["volume_id"] == "v1" and doc["device"] == "/dev/loop1"
    assert doc["secrets"] == "***" and doc["chap_secret"] == "***"
    assert redact({"a": [{"token": "t"}]}) == {"a": [{"token": "***"}]}


def test_locks_abort_a_second_operation_on_the_same_volume() -> None:
    locks = KeyedLocks()
    with locks.hold("v1"):
        with pytest.raises(CsiError) as exc, locks.hold("v1"):
            pass
        assert exc.value.code == grpc.StatusCode.ABORTED
        with locks.hold("v2"):
            pass
    with locks.hold("v1"):
        pass


def test_state_store_is_atomic_and_refuses_bad_ids(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    rec = StageRecord("0b7c7a3e-6f31-4f5c-9d0e-2a4b7c9d1e2f", "/stage", "mount", fs_type="xfs")
    store.put(rec)
    assert store.get(rec.volume_id) == rec
    assert [r.volume_id for r in store.all()] == [rec.volume_id]
    assert not list((tmp_path / "volumes").glob(".tmp-*"))
    with pytest.raises(CsiError):
        store.get("../../etc/passwd")
    store.delete(rec.volume_id)
    assert store.get(rec.volume_id) is None


def test_runner_uses_a_fixed_environment_and_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAKY", "1")
    out = Runner().run(["env"]).stdout
    assert f"PATH={FIXED_PATH}" in out and "LEAKY" not in out
    assert "X=1" in Runner().run(["env"], env={"X": "1"}).stdout
    assert Runner().run(["cat"], stdin="via stdin").stdout == "via stdin"
    with pytest.raises(CommandError) as exc:
        Runner().run(["sh", "-c", "echo topsecret >&2; exit 3", "topsecret"], redact=["topsecret"])
    assert exc.value.rc == 3 and "topsecret" not in str(exc.value) and "topsecret" not in exc.value.argv
    with pytest.raises(CommandError, match="timed out"):
        Runner().run(["sleep", "5"], timeout=0.2)
    with pytest.raises(CommandError) as exc:
        Runner().run(["no-such-binary-zbs"])
    assert exc.value.rc == 127
    assert HostRunner(strategy="none").run(["true"], host=True).argv == ["true"]


IP_ADDR = """1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever
4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever
"""


def test_an_iqn_logged_in_from_another_host_is_a_duplicate() -> None:
    from zbs_csi.node.iqn_guard import foreign_sessions, parse_ip_addr

    local = parse_ip_addr(IP_ADDR)
    me = "iqn.2026-01.com.example:node-1"
    conns = [
        {"initiator_iqn": me, "initiator_ip": "127.0.5.9"},  # loopback: all of 127/8 is this host
        {"initiator_iqn": me, "initiator_ip": "192.0.2.2"},
        {"initiator_iqn": "iqn.2026-01.com.example:node-2", "initiator_ip": "192.0.2.3"},
    ]
    assert foreign_sessions(conns, me, local) == []
    conns.append({"initiator_iqn": me.upper(), "initiator_ip": "192.0.2.3"})  # same subnet, another host
    assert foreign_sessions(conns, me, local) == ["192.0.2.3"]


def test_fsck_preen_is_opt_in_and_stops_on_what_needs_a_person() -> None:
    from zbs_csi.node.fs import Filesystems
    from zbs_csi.node.runner import RecordingRunner, Result

    rc = {"value": 1}
    runner = RecordingRunner(
        responders=[lambda argv, _: Result(argv, rc["value"], "", "fixed") if argv[0] == "e2fsck" else None]
    )
    fs = Filesystems(runner)
    assert fs.preen("/dev/loop9") == ""  # 1: errors corrected
    rc["value"] = 4
    assert "exited 4" in fs.preen("/dev/loop9")
    assert runner.calls[-1] == ["e2fsck", "-p", "/dev/loop9"]
    assert parse_volume_params({"fsck": "preen"}).fsck == "preen"
    assert parse_volume_params({"fsck": "off"}).fsck == ""
    assert code(parse_volume_params, {"fsck": "yes"})[0] == grpc.StatusCode.INVALID_ARGUMENT
