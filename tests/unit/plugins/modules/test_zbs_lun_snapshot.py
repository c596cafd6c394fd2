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


NODE1 = "iqn.2004-10.com.example:node1"


def test_rollback_shows_that_it_shrinks_a_grown_lun(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", size=1 << 30)
    fake.add_snapshot("app", "data", "s1")
    fake.lun("app", "data")["assigned_size"] = 2 << 30  # grown after the snapshot
    args = {"target": "app", "lun": "data", "name": "s1", "state": "rolled_back"}
    planned = run_module(zbs_lun_snapshot, args, check=True, diff=True)
    assert planned["diff"]["before"]["size"] == "2GiB" and planned["size_before"] == "2GiB"
    assert "snapshot's size" in planned["diff"]["after"]["size"]
    done = run_module(zbs_lun_snapshot, args, diff=True)
    assert done["diff"]["before"]["size"] == "2GiB" and done["diff"]["after"]["size"] == "1GiB"
    assert done["size_before"] == "2GiB" and done["size"] == "1GiB" and done["lun"]["assigned_size"] == 1 << 30
    assert any("from 2GiB to 1GiB" in w for w in done["warnings"])


def test_rollback_of_a_lun_in_use_is_refused_unless_forced(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", allowed_initiators=NODE1)
    fake.add_snapshot("app", "data", "s1")
    fake.add_connection("app", NODE1, "10.0.0.1")
    args = {"target": "app", "lun": "data", "name": "s1", "state": "rolled_back"}
    for check in (True, False):
        out = run_module(zbs_lun_snapshot, args, check=check, diff=True)
        assert out["failed"] and out["field"] == "force" and NODE1 in out["msg"]
    assert fake.writes() == []
    forced = run_module(zbs_lun_snapshot, dict(args, force=True))
    assert forced["changed"] is True and fake.writes() == ["rollback-iscsi-lun-from-snapshot"]
    assert any("rolling back anyway" in w for w in forced["warnings"])


def test_a_missing_target_is_named_as_such_not_as_a_missing_lun(fake, run_module):
    out = run_module(zbs_lun_snapshot, {"target": "gone", "lun": "data", "name": "s1"})
    assert out["failed"] and out["field"] == "target" and "no target 'gone'" in out["msg"]


def test_check_mode_plans_snapshots_of_luns_an_earlier_task_would_create(fake, run_module):
    out = run_module(zbs_lun_snapshot, {"target": "new", "lun": "data", "name": "s1"}, check=True, diff=True)
    assert out["changed"] is True and "target 'new' does not exist yet" in out["msg"]
    fake.add_target("new")
    args = {"target": "new", "lun": "data", "name": "s1", "state": "rolled_back"}
    out = run_module(zbs_lun_snapshot, args, check=True)
    assert out["changed"] is True and "LUN 'data' in target 'new' does not exist yet" in out["msg"]
    assert fake.writes() == []
