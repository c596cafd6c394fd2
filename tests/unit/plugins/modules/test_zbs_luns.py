# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible_collections.smartx.zbs.plugins.modules import zbs_luns

NODE1 = "iqn.2004-10.com.example:node1"
NODE2 = "iqn.2004-10.com.example:node2"


def _luns(n, **extra):
    return [dict({"name": f"v{i:03d}", "size": "1GiB"}, **extra) for i in range(n)]


def test_many_luns_are_one_create_call_and_a_rerun_is_one_read(fake, run_module):
    fake.add_target("app", replica_num=1)
    first = run_module(zbs_luns, {"target": "app", "luns": _luns(200, allowed_initiators=[NODE1])})
    assert first["changed"] is True and len(first["created"]) == 200
    assert fake.writes() == ["create-iscsi-lun"], "200 LUNs, one create call"
    assert all(x["allowed_initiators"] == NODE1 and x["replica_num"] == 1 for x in fake.luns.values())
    assert len(first["luns"]) == 200

    fake.calls.clear()
    again = run_module(zbs_luns, {"target": "app", "luns": _luns(200, allowed_initiators=[NODE1])})
    assert again["changed"] is False and again["created"] == again["updated"] == again["deleted"] == []
    assert fake.ops() == ["login", "get-iscsi-luns"], "a no-change run is the login and one read"


def test_new_luns_are_closed_and_the_same_change_is_one_update_call(fake, run_module):
    fake.add_target("app")
    run_module(zbs_luns, {"target": "app", "luns": _luns(3)})
    assert {x["allowed_initiators"] for x in fake.luns.values()} == {""}
    fake.calls.clear()
    luns = [
        {"name": "v000", "size": "2GiB", "allowed_initiators": ["*"]},
        {"name": "v001", "size": "2GiB", "allowed_initiators": ["*"]},
        {"name": "v002", "qos": {"iops": 100}},
    ]
    out = run_module(zbs_luns, {"target": "app", "luns": luns}, diff=True)
    assert out["updated"] == ["v000", "v001", "v002"]
    assert fake.writes() == ["update-iscsi-lun", "update-iscsi-lun"], "two distinct changes, two calls"
    assert (
        fake.lun("app", "v001")["allowed_initiators"] == "*/*" and fake.lun("app", "v001")["assigned_size"] == 2 << 30
    )
    assert fake.lun("app", "v002")["iops"] == 100
    assert set(out["diff"]["before"]) == set(out["diff"]["after"]) == {"v000", "v001", "v002"}
    assert out["diff"]["after"]["v000"]["size"] == "2GiB" and out["diff"]["before"]["v000"]["size"] == "1GiB"


def test_check_mode_and_diff_list_every_lun_that_would_change_and_write_nothing(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "keep", allowed_initiators="")
    fake.add_lun("app", "grow", allowed_initiators="")
    fake.add_lun("app", "extra", allowed_initiators="")
    args = {
        "target": "app",
        "purge": True,
        "luns": [{"name": "keep"}, {"name": "grow", "size": "2GiB"}, {"name": "new", "size": "1GiB"}],
    }
    out = run_module(zbs_luns, args, check=True, diff=True)
    assert (out["created"], out["updated"], out["deleted"]) == (["new"], ["grow"], ["extra"])
    assert set(out["diff"]["before"]) == {"grow", "extra"} and set(out["diff"]["after"]) == {"grow", "new"}
    assert [x["name"] for x in out["luns"]] == ["grow", "keep", "new"]
    assert fake.writes() == []
    done = run_module(zbs_luns, args)
    assert (done["created"], done["updated"], done["deleted"]) == (["new"], ["grow"], ["extra"])
    assert sorted(fake.writes()) == ["create-iscsi-lun", "delete-iscsi-lun", "update-iscsi-lun"]
    assert fake.lun("app", "extra") is None


def test_purge_refuses_luns_in_use_or_with_snapshots_before_any_write(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "used", allowed_initiators=NODE1)
    fake.add_lun("app", "snapped", allowed_initiators="")
    fake.add_snapshot("app", "snapped", "s1")
    fake.add_connection("app", NODE1, "10.0.0.1")
    args = {"target": "app", "purge": True, "luns": [{"name": "new", "size": "1GiB"}]}
    out = run_module(zbs_luns, args)
    assert out["failed"] and out["field"] == "remove_snapshots" and "snapped" in out["msg"]
    out = run_module(zbs_luns, dict(args, remove_snapshots=True))
    assert out["failed"] and out["field"] == "force" and f"used: 1 live iSCSI session(s), from {NODE1}" in out["msg"]
    assert fake.writes() == []
    forced = run_module(zbs_luns, dict(args, remove_snapshots=True, force=True))
    assert forced["deleted"] == ["snapped", "used"] and any("in use" in w for w in forced["warnings"])


def test_entries_are_validated_before_any_call(fake, run_module):
    out = run_module(zbs_luns, {"target": "app", "luns": [{"name": "a", "size": "1GiB"}, {"name": "a"}]})
    assert out["failed"] and out["field"] == "luns[1].name" and "twice" in out["msg"]
    out = run_module(zbs_luns, {"target": "app", "luns": [{"name": "a", "allowed_initiators": ["*", NODE1]}]})
    assert out["failed"] and out["field"] == "luns[0].allowed_initiators"
    out = run_module(zbs_luns, {"target": "app", "luns": [{"name": "a", "size": "lots"}]})
    assert out["failed"] and out["field"] == "luns[0].size"
    assert fake.ops() == []


def test_rules_of_zbs_lun_hold_for_each_entry(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "big", size=4 << 30, replica_num=3)
    kept = run_module(zbs_luns, {"target": "app", "luns": [{"name": "big", "size": "1GiB"}]})
    assert kept["changed"] is False and any("stays 4GiB" in w for w in kept["warnings"])
    refused = run_module(zbs_luns, {"target": "app", "luns": [{"name": "big", "replica_num": 2}]})
    assert refused["failed"] and refused["field"] == "replica_num"
    refused = run_module(zbs_luns, {"target": "app", "luns": [{"name": "big", "lun_id": 9}]})
    assert refused["failed"] and refused["field"] == "lun_id"
    missing = run_module(zbs_luns, {"target": "app", "luns": [{"name": "new"}]})
    assert missing["failed"] and missing["field"] == "size"
    assert fake.writes() == []


def test_a_missing_target_fails_but_check_mode_plans_past_it(fake, run_module):
    args = {"target": "later", "luns": [{"name": "a", "size": "1GiB"}]}
    planned = run_module(zbs_luns, args, check=True)
    assert planned["changed"] is True and "does not exist yet" in planned["msg"]
    out = run_module(zbs_luns, args)
    assert out["failed"] and out["field"] == "target"
    # Nothing to create: a missing target is still not an empty one (a typo must not report "no change").
    purge = {"target": "later", "luns": [], "purge": True}
    assert run_module(zbs_luns, purge, check=True)["msg"].startswith("check mode: target 'later' does not exist")
    refused = run_module(zbs_luns, purge)
    assert refused["failed"] and refused["field"] == "target"
    fake.add_target("empty")
    assert run_module(zbs_luns, {"target": "empty", "luns": [], "purge": True})["changed"] is False
    assert fake.writes() == []
