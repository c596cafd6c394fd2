# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible_collections.smartx.zbs.plugins.modules import zbs_initiator

NODE1 = "iqn.2004-10.com.example:node1"
NODE2 = "iqn.2004-10.com.example:node2"


def _setup(fake):
    fake.add_target("db")
    fake.add_target("web")
    fake.add_lun("db", "data", allowed_initiators=NODE2)
    fake.add_lun("db", "logs", allowed_initiators="")
    fake.add_lun("web", "static", allowed_initiators=f"{NODE1},{NODE2}")
    fake.add_lun("web", "open")  # */*


def test_exact_grants_listed_and_revokes_the_rest(fake, run_module):
    _setup(fake)
    args = {"iqn": NODE1, "luns": [{"target": "db", "name": "data"}, {"target": "db", "lun_id": 2}]}
    out = run_module(zbs_initiator, args, diff=True)
    assert out["changed"] is True
    assert fake.lun("db", "data")["allowed_initiators"] == f"{NODE1},{NODE2}"
    assert fake.lun("db", "logs")["allowed_initiators"] == NODE1
    assert fake.lun("web", "static")["allowed_initiators"] == NODE2, "exact revoked the unlisted LUN"
    assert fake.lun("web", "open")["allowed_initiators"] == "*/*", "an open LUN is never narrowed"
    assert out["diff"]["before"]["luns"] == ["web/static"]
    assert out["diff"]["after"]["luns"] == ["db/data", "db/logs"]
    assert [r["name"] for r in out["open_luns"]] == ["open"]
    assert run_module(zbs_initiator, args)["changed"] is False


def test_append_keeps_existing_grants(fake, run_module):
    _setup(fake)
    out = run_module(zbs_initiator, {"iqn": NODE1, "mode": "append", "luns": [{"target": "db", "name": "data"}]})
    assert out["changed"] is True
    assert NODE1 in fake.lun("web", "static")["allowed_initiators"]
    assert {(r["target"], r["name"]) for r in out["luns"]} == {("db", "data"), ("web", "static")}


def test_absent_revokes_everywhere_including_chap(fake, run_module):
    _setup(fake)
    fake.target("db")["initiator_chaps"] = [
        {"initiator_iqn": NODE1, "chap_name": "n1", "chap_secret": "Node1Secret0001"},
        {"initiator_iqn": NODE2, "chap_name": "n2", "chap_secret": "Node2Secret0002"},
    ]
    check = run_module(zbs_initiator, {"iqn": NODE1, "state": "absent"}, check=True)
    assert check["changed"] is True and fake.writes() == []
    out = run_module(zbs_initiator, {"iqn": NODE1, "state": "absent"})
    assert out["changed"] is True
    assert fake.lun("web", "static")["allowed_initiators"] == NODE2
    assert [c["initiator_iqn"] for c in fake.target("db")["initiator_chaps"]] == [NODE2]
    assert fake.target("db")["initiator_chaps"][0]["chap_secret"] == "Node2Secret0002", "other hosts keep their secret"
    assert "Node1Secret0001" not in str(out) and "Node2Secret0002" not in str(out)
    assert run_module(zbs_initiator, {"iqn": NODE1, "state": "absent"})["changed"] is False


def test_chap_set_on_the_luns_targets(fake, run_module):
    _setup(fake)
    args = {
        "iqn": NODE1,
        "luns": [{"target": "db", "name": "data"}],
        "chap": {"name": "node1", "secret": "Node1Secret0001"},
    }
    out = run_module(zbs_initiator, args)
    assert out["changed"] is True and out["chap_targets"] == ["db"]
    assert fake.target("db")["initiator_chaps"] == [
        {"initiator_iqn": NODE1, "chap_name": "node1", "chap_secret": "Node1Secret0001"}
    ]
    assert run_module(zbs_initiator, args)["changed"] is False
    assert run_module(zbs_initiator, dict(args, update_secrets="always"))["changed"] is True


def test_unknown_lun_and_bad_iqn_fail_without_writing(fake, run_module):
    _setup(fake)
    out = run_module(zbs_initiator, {"iqn": NODE1, "luns": [{"target": "db", "name": "nope"}]})
    assert out["failed"] and out["field"] == "luns[0]" and "nope" in out["msg"]
    out = run_module(zbs_initiator, {"iqn": "node1", "luns": []})
    assert out["failed"] and "iqn" in out["msg"]
    out = run_module(zbs_initiator, {"iqn": NODE1, "luns": [{"target": "db"}]})
    assert out["failed"] and "name" in out["msg"] and "lun_id" in out["msg"]
    assert fake.writes() == []


def test_refuses_to_rewrite_a_chap_list_whose_secrets_the_api_hides(fake, run_module):
    _setup(fake)
    fake.target("db")["initiator_chaps"] = [
        {"initiator_iqn": NODE1, "chap_name": "n1", "chap_secret": None},
        {"initiator_iqn": NODE2, "chap_name": "n2", "chap_secret": None},
    ]
    out = run_module(zbs_initiator, {"iqn": NODE1, "state": "absent"})
    assert out["failed"] and "does not return the CHAP secret" in out["msg"]
    assert len(fake.target("db")["initiator_chaps"]) == 2


def test_warns_when_the_target_whitelist_keeps_the_initiator_out(fake, run_module):
    _setup(fake)
    fake.target("db")["iqn_whitelist"] = NODE2
    out = run_module(zbs_initiator, {"iqn": NODE1, "luns": [{"target": "db", "name": "data"}]})
    assert out["changed"] is True
    # ansible-core 2.19 reports warnings as structured summaries; older versions as strings
    assert any("iqn_whitelist" in str(w) and "'db'" in str(w) for w in out["warnings"])


def test_exact_warns_naming_each_open_lun_the_node_still_sees(fake, run_module):
    """'Node 1 sees exactly these LUNs' must not be silently false: open LUNs are named."""
    _setup(fake)
    fake.add_target("hidden", iqn_whitelist=NODE2)
    fake.add_lun("hidden", "open-but-not-for-node1")  # */*, but the target keeps NODE1 out
    args = {"iqn": NODE1, "luns": [{"target": "db", "name": "data"}]}
    out = run_module(zbs_initiator, args)
    assert out["changed"] is True
    assert [(r["target"], r["name"]) for r in out["open_luns"]] == [("web", "open")]
    assert any("also sees 1 LUN(s) open to every initiator" in w and "web/open" in w for w in out["warnings"])
    assert not any("hidden" in w for w in out["warnings"])
    appended = run_module(zbs_initiator, dict(args, mode="append"))
    assert not appended.get("warnings"), "append promises nothing about other LUNs"


def test_exact_can_fail_on_open_luns_before_changing_anything(fake, run_module):
    _setup(fake)
    out = run_module(zbs_initiator, {"iqn": NODE1, "luns": [{"target": "db", "name": "data"}], "on_open_luns": "fail"})
    assert out["failed"] and out["field"] == "on_open_luns" and "web/open" in out["msg"]
    assert fake.writes() == []


def test_check_mode_plans_grants_of_luns_an_earlier_task_would_create(fake, run_module):
    _setup(fake)
    args = {"iqn": NODE1, "mode": "append", "luns": [{"target": "new", "name": "data"}]}
    out = run_module(zbs_initiator, args, check=True)
    assert out["changed"] is True and "LUN 'data' in target 'new'" in out["msg"] and "does not exist yet" in out["msg"]
    assert fake.writes() == []
    real = run_module(zbs_initiator, args)
    assert real["failed"] and "no LUN 'data' in target 'new'" in real["msg"]
