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


def test_grow_diff_and_a_smaller_size_keeps_the_current_one(fake, run_module):
    """Create 2 GiB, grow to 3 GiB, re-run the create: ZBS cannot shrink, so 3 GiB stays, with a warning."""
    fake.add_target("app")
    fake.add_lun("app", "data", size=2 << 30)
    grown = run_module(zbs_lun, {"target": "app", "name": "data", "size": "3GiB"}, diff=True)
    assert grown["changed"] is True
    assert grown["diff"]["before"]["size"] == "2GiB"
    assert grown["diff"]["after"]["size"] == "3GiB"
    assert fake.lun("app", "data")["assigned_size"] == 3 << 30

    fake.calls.clear()
    kept = run_module(zbs_lun, {"target": "app", "name": "data", "size": "2GiB"})
    assert kept["changed"] is False and kept["size"] == "3GiB"
    assert any("smaller than the current 3GiB" in w and "stays 3GiB" in w for w in kept["warnings"])
    assert fake.writes() == []

    quiet = run_module(zbs_lun, {"target": "app", "name": "data", "size": "2GiB", "smaller_size": "ignore"})
    assert quiet["changed"] is False and not quiet.get("warnings")

    refused = run_module(zbs_lun, {"target": "app", "name": "data", "size": "1GiB", "smaller_size": "fail"})
    assert refused["failed"] is True and refused["field"] == "size"
    assert "cannot shrink" in refused["msg"] and "3GiB" in refused["msg"]
    assert fake.writes() == []
    assert fake.lun("app", "data")["assigned_size"] == 3 << 30


def test_a_new_lun_is_closed_unless_the_task_opens_it(fake, run_module):
    fake.add_target("app")
    run_module(zbs_lun, {"target": "app", "name": "closed", "size": "1GiB"})
    assert fake.lun("app", "closed")["allowed_initiators"] == "", "nobody, not the API's everybody"
    run_module(zbs_lun, {"target": "app", "name": "open", "size": "1GiB", "allowed_initiators": ["*"]})
    assert fake.lun("app", "open")["allowed_initiators"] == "*/*"
    again = run_module(zbs_lun, {"target": "app", "name": "open", "size": "1GiB", "allowed_initiators": ["*/*"]})
    assert again["changed"] is False
    mixed = run_module(zbs_lun, {"target": "app", "name": "open", "allowed_initiators": ["*", NODE1]})
    assert mixed["failed"] and mixed["field"] == "allowed_initiators"
    untouched = run_module(zbs_lun, {"target": "app", "name": "open", "size": "1GiB"})
    assert untouched["changed"] is False, "without the option an existing LUN keeps its list"


def test_a_clone_is_closed_right_after_zbs_made_it_open(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", allowed_initiators=NODE1)
    fake.add_snapshot("app", "data", "nightly")
    out = run_module(zbs_lun, {"target": "app", "name": "c", "from_snapshot": {"lun": "data", "name": "nightly"}})
    assert out["changed"] is True
    assert fake.lun("app", "c")["allowed_initiators"] == ""
    assert fake.writes() == ["clone-iscsi-lun-from-snapshot", "update-iscsi-lun"]


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


def test_check_mode_plans_a_lun_whose_target_an_earlier_task_would_create(fake, run_module):
    out = run_module(zbs_lun, {"target": "new-app", "name": "data", "size": "1GiB"}, check=True, diff=True)
    assert out["changed"] is True and "failed" not in out
    assert "target 'new-app' does not exist yet" in out["msg"]
    assert out["diff"]["after"]["size"] == "1GiB" and out["diff"]["after"]["allowed_initiators"] == ""
    clone = run_module(
        zbs_lun,
        {"target": "new-app", "name": "c", "from_snapshot": {"lun": "data", "name": "s1"}},
        check=True,
    )
    assert clone["changed"] is True and "does not exist yet" in clone["msg"]
    assert fake.writes() == []


def test_upper_case_target_names_are_refused_naming_the_stored_form(fake, run_module):
    out = run_module(zbs_lun, {"target": "My-App", "name": "data", "size": "1GiB"})
    assert out["failed"] and out["field"] == "target" and "'my-app'" in out["msg"]
    assert fake.ops() == []


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


def test_delete_with_snapshots_needs_remove_snapshots_and_the_diff_lists_them(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data")
    fake.add_snapshot("app", "data", "s1")
    fake.add_snapshot("app", "data", "s0")
    refused = run_module(zbs_lun, {"target": "app", "name": "data", "state": "absent"})
    assert refused["failed"] and refused["field"] == "remove_snapshots"
    assert fake.lun("app", "data") is not None
    args = {"target": "app", "name": "data", "state": "absent", "remove_snapshots": True}
    planned = run_module(zbs_lun, args, check=True, diff=True)
    assert planned["diff"]["before"]["snapshots"] == ["s0", "s1"] and planned["diff"]["after"] == {}
    gone = run_module(zbs_lun, args, diff=True)
    assert gone["changed"] is True and fake.lun("app", "data") is None and not fake.snapshots
    assert gone["diff"]["before"]["snapshots"] == ["s0", "s1"]
    assert run_module(zbs_lun, {"target": "app", "name": "data", "state": "absent"})["changed"] is False


def test_delete_of_a_lun_in_use_is_refused_naming_the_initiators_unless_forced(fake, run_module):
    fake.add_target("app")
    fake.add_lun("app", "data", allowed_initiators=NODE1)
    fake.add_connection("app", NODE1, "10.0.0.1")
    fake.add_connection("app", NODE2, "10.0.0.2")  # logged in to the target, but cannot see this LUN
    args = {"target": "app", "name": "data", "state": "absent"}
    for check in (False, True):
        out = run_module(zbs_lun, args, check=check, diff=True)
        assert out["failed"] and out["field"] == "force"
        assert f"1 live iSCSI session(s), from {NODE1} (10.0.0.1)" in out["msg"] and NODE2 not in out["msg"]
    assert fake.writes() == [] and fake.lun("app", "data") is not None
    forced = run_module(zbs_lun, dict(args, force=True), diff=True)
    assert forced["changed"] is True and fake.lun("app", "data") is None
    assert forced["diff"]["before"]["sessions"] == [f"{NODE1} (10.0.0.1)"]
    assert any("deleting it anyway" in w for w in forced["warnings"])


def test_a_session_the_api_does_not_name_counts_as_using_every_lun_of_its_target(fake, run_module):
    """CloudTower reports a session's IP, not its IQN: the LUN may be in use, so refuse."""
    fake.add_target("app")
    fake.add_lun("app", "data", allowed_initiators="")
    fake.add_connection("app", None, "10.0.0.9")
    out = run_module(zbs_lun, {"target": "app", "name": "data", "state": "absent"})
    assert out["failed"] and "from 10.0.0.9" in out["msg"]


def test_a_task_that_times_out_reports_changed(fake, run_module):
    """The API accepted the create: the LUN exists even though its task did not finish in time."""
    fake.add_target("app")
    fake.hang_tasks.add("create-iscsi-lun")
    out = run_module(zbs_lun, {"target": "app", "name": "data", "size": "1GiB", "wait_timeout": 0.2})
    assert out["failed"] is True and out["changed"] is True
    assert "did not finish" in out["msg"] and "may still finish" in out["msg"] and out["task_id"]
    assert fake.lun("app", "data") is not None


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


def test_the_documented_name_rules_are_the_validated_ones(fake, run_module):
    """ansible-doc must not promise letters and digits only while 'my data' is accepted."""
    import yaml
    from ansible_collections.smartx.zbs.plugins.modules import zbs_lun_snapshot

    for module in (zbs_lun, zbs_lun_snapshot):
        text = " ".join(yaml.safe_load(module.DOCUMENTATION)["options"]["name"]["description"])
        assert "printable ASCII" in text and "without leading or trailing spaces" in text, module.__name__
    fake.add_target("app")
    out = run_module(zbs_lun, {"target": "app", "name": "my data", "size": "1GiB"})
    assert out["changed"] is True and fake.lun("app", "my data") is not None
    refused = run_module(zbs_lun, {"target": "app", "name": " padded", "size": "1GiB"})
    assert refused["failed"] and refused["field"] == "name"
