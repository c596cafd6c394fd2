# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible_collections.smartx.zbs.plugins.modules import zbs_target

NODE1 = "iqn.2004-10.com.example:node1"


def test_create_rerun_check_diff_delete(fake, run_module):
    args = {"name": "db", "description": "db volumes", "replica_num": 2, "iqn_whitelist": [NODE1]}
    created = run_module(zbs_target, args, diff=True)
    assert created["changed"] is True
    assert created["target"]["name"] == "db"
    assert created["diff"]["before"] == {} and created["diff"]["after"]["description"] == "db volumes"
    assert fake.target("db")["iqn_whitelist"] == NODE1

    fake.calls.clear()
    assert run_module(zbs_target, args)["changed"] is False
    assert fake.ops() == ["login", "get-iscsi-targets"]

    changed = run_module(zbs_target, dict(args, description="new"), check=True, diff=True)
    assert changed["changed"] is True
    assert changed["diff"]["before"]["description"] == "db volumes"
    assert changed["diff"]["after"]["description"] == "new"
    assert fake.target("db")["description"] == "db volumes", "check mode wrote nothing"

    assert run_module(zbs_target, {"name": "db", "state": "absent"})["changed"] is True
    assert fake.target("db") is None
    assert run_module(zbs_target, {"name": "db", "state": "absent"})["changed"] is False


def test_whitelists_compare_as_sets(fake, run_module):
    fake.add_target("db", ip_whitelist="10.0.0.2,10.0.0.1")
    out = run_module(zbs_target, {"name": "db", "ip_whitelist": ["10.0.0.1", "10.0.0.2"]})
    assert out["changed"] is False


def test_immutable_fields_fail_naming_the_field(fake, run_module):
    fake.add_target("db", replica_num=2)
    out = run_module(zbs_target, {"name": "db", "replica_num": 3})
    assert out["failed"] and out["field"] == "replica_num" and "cannot be changed" in out["msg"]
    out = run_module(zbs_target, {"name": "db", "stripe_size": "128KiB"})
    assert out["failed"] and out["field"] == "stripe_size"
    assert fake.writes() == []


def test_chap_secrets_follow_update_secrets_and_never_leak(fake, run_module):
    chap = {"enabled": True, "name": "db-target", "secret": "Secret123456"}
    created = run_module(zbs_target, {"name": "db", "chap": chap}, diff=True)
    assert created["changed"] is True
    assert fake.target("db")["chap_secret"] == "Secret123456"
    assert "Secret123456" not in str(created)

    rotated = dict(chap, secret="Other1234567")
    assert run_module(zbs_target, {"name": "db", "chap": rotated})["changed"] is False, "on_create ignores secrets"
    assert fake.target("db")["chap_secret"] == "Secret123456"

    forced = run_module(zbs_target, {"name": "db", "chap": rotated, "update_secrets": "always"})
    assert forced["changed"] is True
    assert fake.target("db")["chap_secret"] == "Other1234567"
    assert "Other1234567" not in str(forced)


def test_initiator_chaps_compared_by_iqn_and_name(fake, run_module):
    chaps = [{"initiator_iqn": NODE1, "chap_name": "node1", "chap_secret": "Node1Secret0001"}]
    assert run_module(zbs_target, {"name": "db", "initiator_chaps": chaps})["changed"] is True
    assert run_module(zbs_target, {"name": "db", "initiator_chaps": chaps})["changed"] is False
    renamed = [dict(chaps[0], chap_name="node1b")]
    assert run_module(zbs_target, {"name": "db", "initiator_chaps": renamed})["changed"] is True
    assert fake.target("db")["initiator_chaps"][0]["chap_name"] == "node1b"


def test_bad_chap_and_names_fail_without_writing(fake, run_module):
    out = run_module(zbs_target, {"name": "db", "chap": {"enabled": True, "name": "x", "secret": "short"}})
    assert out["failed"] and "chap.secret" in out["msg"] and "short" not in out["msg"]
    out = run_module(zbs_target, {"name": "bad_name!"})
    assert out["failed"] and "name" in out["msg"]
    out = run_module(zbs_target, {"name": "db", "iqn_whitelist": ["*/*", NODE1]})
    assert out["failed"] and out["field"] == "iqn_whitelist"
    assert fake.writes() == []


def test_delete_with_luns_reports_the_api_message(fake, run_module):
    fake.add_target("db")
    fake.add_lun("db", "data")
    out = run_module(zbs_target, {"name": "db", "state": "absent"})
    assert out["failed"] is True
    assert out["msg"].startswith("delete-iscsi-target") and "LUN" in out["msg"]
    assert out["status"] == 400 and out["path"] == "/delete-iscsi-target"


def test_connection_options_come_from_the_environment(fake, run_module, monkeypatch):
    monkeypatch.setenv("ZBS_HOST", "zbs.unit.test:443")
    monkeypatch.setenv("ZBS_USERNAME", "admin")
    monkeypatch.setenv("ZBS_PASSWORD", "secret-pass")
    out = run_module(zbs_target, {"name": "db"}, connection=False)
    assert out["changed"] is True


def test_missing_connection_options_fail_argument_validation(fake, run_module):
    out = run_module(zbs_target, {"name": "db"}, connection=False)
    assert out["failed"] and "host" in out["msg"] and "password" in out["msg"]


def test_api_nulls_equal_their_meaning(fake, run_module):
    target = fake.add_target("db")
    target.update(description=None, iops=None, bps=None)
    out = run_module(zbs_target, {"name": "db", "description": "", "qos": {"iops": 0, "bps": 0}})
    assert out["changed"] is False


def test_qos_the_api_shows_as_null_is_0_as_on_luns(fake, run_module):
    fake.add_target("db", iops=None, bps=None)
    out = run_module(zbs_target, {"name": "db", "qos": {"iops": 0}}, diff=True)
    assert out["changed"] is False
    assert out["target"]["iops"] == 0 and out["target"]["bps"] == 0
    assert out["diff"]["before"]["iops"] == 0


def test_an_upper_case_name_is_refused_naming_the_stored_form(fake, run_module):
    out = run_module(zbs_target, {"name": "My-Target"})
    assert out["failed"] and out["field"] == "name" and "'my-target'" in out["msg"]
    assert fake.ops() == []
