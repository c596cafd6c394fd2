# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible_collections.smartx.zbs.plugins.modules import zbs_lun_snapshot


def test_snapshot_lifecycle(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data")
    args = {"target": "app", "lun": "data", "name": "s1"}
    check = run_module(zbs_lun_snapshot, args, check=True, diff=True)
    assert check["changed"] is True and not fake.snapshots
    assert check["diff"]["after"]["name"] == "s1"
    assert run_module(zbs_lun_snapshot, args)["changed"] is True
    assert len(fake.snapshots) == 1
    assert run_module(zbs_lun_snapshot, args)["changed"] is False
    assert run_module(zbs_lun_snapshot, dict(args, state="absent"))["changed"] is True
    assert not fake.snapshots
    assert run_module(zbs_lun_snapshot, dict(args, state="absent"))["changed"] is False


def test_rollback_always_changes_but_not_in_check_mode(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data")
    fake.add_snapshot("app", "data", "s1")
    args = {"target": "app", "lun": "data", "name": "s1", "state": "rolled_back"}
    check = run_module(zbs_lun_snapshot, args, check=True)
    assert check["changed"] is True and fake.writes() == []
    assert run_module(zbs_lun_snapshot, args)["changed"] is True
    assert run_module(zbs_lun_snapshot, args)["changed"] is True
    assert fake.writes() == ["rollback-iscsi-lun-from-snapshot"] * 2


def test_missing_lun_or_snapshot_fail_clearly(fake, run_module):
    fake.add_target("app")
    out = run_module(zbs_lun_snapshot, {"target": "app", "lun": "nope", "name": "s1"})
    assert out["failed"] and "nope" in out["msg"]
    fake.add_lun("app", "data")
    out = run_module(zbs_lun_snapshot, {"target": "app", "lun": "data", "name": "s9", "state": "rolled_back"})
    assert out["failed"] and "s9" in out["msg"]
    out = run_module(zbs_lun_snapshot, {"target": "app", "lun": "data", "name": "bad/name"})
    assert out["failed"] and "name" in out["msg"]
    assert fake.writes() == []


def test_no_change_run_is_one_read(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data")
    fake.add_lun("app", "other")
    fake.add_snapshot("app", "other", "s1")
    fake.add_snapshot("app", "data", "s1")
    fake.calls.clear()
    out = run_module(zbs_lun_snapshot, {"target": "app", "lun": "data", "name": "s1"})
    assert out["changed"] is False and out["snapshot"]["iscsi_lun"]["name"] == "data"
    assert fake.ops() == ["login", "get-iscsi-lun-snapshots"]
