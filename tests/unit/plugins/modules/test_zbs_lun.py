# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible_collections.smartx.zbs.plugins.modules import zbs_lun

NODE1 = "iqn.2004-10.com.example:node1"
NODE2 = "iqn.2004-10.com.example:node2"


def test_create_then_rerun_is_one_read_and_unchanged(fake, run_module):
    fake.add_target("app")
    first = run_module(
        zbs_lun, {"target": "app", "name": "data", "size": "10GiB", "allowed_initiators": [NODE2, NODE1]}
    )
    assert first["changed"] is True
    lun = fake.lun("app", "data")
    assert lun["assigned_size"] == 10 << 30
    assert lun["allowed_initiators"] == f"{NODE1},{NODE2}"
    assert first["size"] == "10GiB"

    fake.calls.clear()
    again = run_module(
        zbs_lun, {"target": "app", "name": "data", "size": "10240MiB", "allowed_initiators": [NODE1, NODE2]}
    )
    assert again["changed"] is False
    assert fake.ops() == ["login", "get-iscsi-luns"], "a no-change run reads the LUN once and writes nothing"


def test_check_mode_create_writes_nothing_and_diff_shows_after(fake, run_module):
    fake.add_target("app")
    out = run_module(zbs_lun, {"target": "app", "name": "data", "size": "1G"}, check=True, diff=True)
    assert out["changed"] is True
    assert fake.writes() == []
    assert fake.lun("app", "data") is None
    assert out["diff"]["before"] == {}
    assert out["diff"]["after"]["assigned_size"] == 1 << 30
    assert out["diff"]["after"]["size"] == "1GiB"


def test_grow_diff_and_shrink_refused(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", size=2 << 30)
    grown = run_module(zbs_lun, {"target": "app", "name": "data", "size": "3GiB"}, diff=True)
    assert grown["changed"] is True
    assert grown["diff"]["before"]["size"] == "2GiB"
    assert grown["diff"]["after"]["size"] == "3GiB"
    assert fake.lun("app", "data")["assigned_size"] == 3 << 30

    fake.calls.clear()
    shrink = run_module(zbs_lun, {"target": "app", "name": "data", "size": "1GiB"})
    assert shrink["failed"] is True
    assert "size" in shrink["msg"] and "only grow" in shrink["msg"] and "3GiB" in shrink["msg"]
    assert shrink["field"] == "size"
    assert fake.writes() == []
    assert fake.lun("app", "data")["assigned_size"] == 3 << 30


def test_check_mode_update_changes_nothing(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", size=1 << 30)
    out = run_module(zbs_lun, {"target": "app", "name": "data", "size": "2GiB"}, check=True)
    assert out["changed"] is True
    assert fake.writes() == []
    assert fake.lun("app", "data")["assigned_size"] == 1 << 30


def test_initiators_add_and_remove_modes(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", allowed_initiators=NODE1)
    added = run_module(
        zbs_lun, {"target": "app", "name": "data", "allowed_initiators": [NODE2], "initiators_mode": "add"}
    )
    assert added["changed"] is True
    assert fake.lun("app", "data")["allowed_initiators"] == f"{NODE1},{NODE2}"
    again = run_module(
        zbs_lun, {"target": "app", "name": "data", "allowed_initiators": [NODE2], "initiators_mode": "add"}
    )
    assert again["changed"] is False
    removed = run_module(
        zbs_lun, {"target": "app", "name": "data", "allowed_initiators": [NODE1, NODE2], "initiators_mode": "remove"}
    )
    assert removed["changed"] is True
    assert fake.lun("app", "data")["allowed_initiators"] == "", "removing the last IQN leaves nobody, not everybody"


def test_remove_from_open_lun_fails_clearly(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data")
    out = run_module(
        zbs_lun, {"target": "app", "name": "data", "allowed_initiators": [NODE1], "initiators_mode": "remove"}
    )
    assert out["failed"] is True
    assert "every initiator" in out["msg"]
    assert fake.lun("app", "data")["allowed_initiators"] == "*/*"


def test_immutable_lun_id_and_replica_down_fail_naming_the_field(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", replica_num=3)
    out = run_module(zbs_lun, {"target": "app", "name": "data", "lun_id": 7})
    assert out["failed"] and out["field"] == "lun_id"
    out = run_module(zbs_lun, {"target": "app", "name": "data", "replica_num": 2})
    assert out["failed"] and out["field"] == "replica_num" and "only go up" in out["msg"]
    assert fake.writes() == []


def test_bad_input_fails_before_any_api_call(fake, run_module):
    out = run_module(zbs_lun, {"target": "app", "name": "../etc", "size": "1GiB"})
    assert out["failed"] and "name" in out["msg"]
    out = run_module(zbs_lun, {"target": "app", "name": "ok", "size": "ten gigs"})
    assert out["failed"] and "size" in out["msg"]
    out = run_module(zbs_lun, {"target": "app", "name": "ok", "size": "1GiB", "allowed_initiators": ["not an iqn"]})
    assert out["failed"] and "allowed_initiators" in out["msg"]
    assert fake.writes() == []


def test_missing_target_and_size_fail_clearly(fake, run_module):
    out = run_module(zbs_lun, {"target": "nope", "name": "data", "size": "1GiB"})
    assert out["failed"] and "nope" in out["msg"] and "does not exist" in out["msg"]
    fake.add_target("app")
    out = run_module(zbs_lun, {"target": "app", "name": "data"})
    assert out["failed"] and out["field"] == "size"


def test_rename_with_from_name_is_idempotent(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "old")
    out = run_module(zbs_lun, {"target": "app", "name": "new", "from_name": "old"})
    assert out["changed"] is True
    assert fake.lun("app", "new") is not None and fake.lun("app", "old") is None
    assert run_module(zbs_lun, {"target": "app", "name": "new", "from_name": "old"})["changed"] is False


def test_clone_from_snapshot_then_grow_and_mask(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", size=1 << 30)
    fake.add_snapshot("app", "data", "nightly")
    out = run_module(
        zbs_lun,
        {
            "target": "app",
            "name": "data-test",
            "size": "2GiB",
            "allowed_initiators": [NODE1],
            "from_snapshot": {"lun": "data", "name": "nightly"},
        },
    )
    assert out["changed"] is True
    clone = fake.lun("app", "data-test")
    assert clone["assigned_size"] == 2 << 30
    assert clone["allowed_initiators"] == NODE1
    assert "clone-iscsi-lun-from-snapshot" in fake.writes()


def test_copy_from_other_lun(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", size=3 << 30)
    out = run_module(zbs_lun, {"target": "app", "name": "copy", "copy_from": {"lun": "data"}})
    assert out["changed"] is True
    assert fake.lun("app", "copy")["assigned_size"] == 3 << 30
    missing = run_module(zbs_lun, {"target": "app", "name": "copy2", "copy_from": {"lun": "nope"}})
    assert missing["failed"] and "nope" in missing["msg"]


def test_delete_with_snapshots_needs_remove_snapshots(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data")
    fake.add_snapshot("app", "data", "s1")
    refused = run_module(zbs_lun, {"target": "app", "name": "data", "state": "absent"})
    assert refused["failed"] and refused["field"] == "remove_snapshots"
    assert fake.lun("app", "data") is not None
    gone = run_module(zbs_lun, {"target": "app", "name": "data", "state": "absent", "remove_snapshots": True})
    assert gone["changed"] is True and fake.lun("app", "data") is None and not fake.snapshots
    assert run_module(zbs_lun, {"target": "app", "name": "data", "state": "absent"})["changed"] is False


def test_api_refusal_surfaces_operation_object_and_status(fake, run_module):
    fake.add_target("app")
    fake.fail_tasks["create-iscsi-lun"] = "pool is full"
    out = run_module(zbs_lun, {"target": "app", "name": "data", "size": "1GiB"})
    assert out["failed"] is True
    assert out["msg"].startswith("create-iscsi-lun")
    assert "pool is full" in out["msg"]


def test_wrong_password_is_an_auth_failure_without_the_password(fake, run_module):
    out = run_module(zbs_lun, {"target": "app", "name": "data", "password": "wrong-pass-123"})
    assert out["failed"] is True
    assert out["status"] == 401
    assert "wrong-pass-123" not in str(out)


def test_clone_refuses_a_lun_id_or_provisioning_it_cannot_have(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", thin_provision=True)
    out = run_module(zbs_lun, {"target": "app", "name": "c", "copy_from": {"lun": "data"}, "lun_id": 9})
    assert out["failed"] and out["field"] == "lun_id"
    out = run_module(zbs_lun, {"target": "app", "name": "c", "copy_from": {"lun": "data"}, "thin_provision": False})
    assert out["failed"] and out["field"] == "thin_provision"
    assert fake.lun("app", "c") is None
