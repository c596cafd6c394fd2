# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import pytest
from ansible_collections.smartx.zbs.plugins.modules import zbs_info


def test_default_is_minimal(fake, run_module):
    fake.add_target("db")
    fake.add_lun("db", "data")
    out = run_module(zbs_info, {})
    assert out["changed"] is False
    assert out["gathered_subsets"] == ["minimal"]
    assert out["cluster"]["name"] == "unit"
    assert out["counts"] == {"targets": 1, "luns": 1, "snapshots": 0}
    assert "luns" not in out


def test_all_pages_are_read(fake, run_module):
    fake.add_target("db")
    for i in range(250):
        fake.add_lun("db", f"v{i:03d}")
    out = run_module(zbs_info, {"gather_subset": ["luns"]})
    assert len(out["luns"]) == 250
    assert fake.ops().count("get-iscsi-luns") == 3


def test_filters_and_query(fake, run_module):
    fake.add_target("db", chap_enabled=True, chap_name="t", chap_secret="TargetSecret1")
    fake.add_target("web")
    fake.add_lun("db", "data", size=5 << 30)
    fake.add_lun("db", "logs")
    fake.add_lun("web", "data")
    out = run_module(
        zbs_info,
        {"gather_subset": ["all", "!connections"], "target": "db", "query": "luns[?assigned_size > `2147483648`].name"},
    )
    assert [t["name"] for t in out["targets"]] == ["db"]
    assert sorted(x["name"] for x in out["luns"]) == ["data", "logs"]
    assert out["query_result"] == ["data"]
    assert "connections" not in out
    assert "TargetSecret1" not in str(out)
    contains = run_module(zbs_info, {"gather_subset": ["luns"], "name_contains": "log"})
    assert [x["name"] for x in contains["luns"]] == ["logs"]


@pytest.mark.parametrize("subset", [["everything"], ["!bogus"]])
def test_unknown_subset_is_refused_by_argument_validation(fake, run_module, subset):
    out = run_module(zbs_info, {"gather_subset": subset})
    assert out["failed"] and "gather_subset" in out["msg"]


def test_bad_query_fails_clearly(fake, run_module):
    out = run_module(zbs_info, {"query": "luns[?"})
    assert out["failed"] and "query" in out["msg"] and "JMESPath" in out["msg"]


def test_resolve_subsets():
    assert zbs_info.resolve_subsets(["all"]) == ["cluster", "targets", "luns", "snapshots", "connections", "initiators"]
    assert zbs_info.resolve_subsets(["!luns"]) == ["cluster", "targets", "snapshots", "connections", "initiators"]
    assert zbs_info.resolve_subsets(["minimal", "luns"]) == ["minimal", "luns"]


NODE1 = "iqn.2004-10.com.example:node1"
NODE10 = "iqn.2004-10.com.example:node10"


def test_access_is_reported_as_lists_so_contains_matches_whole_names(fake, run_module):
    fake.add_target("db", iqn_whitelist=f"{NODE10},{NODE1}")
    fake.add_lun("db", "one", allowed_initiators=NODE1)
    fake.add_lun("db", "ten", allowed_initiators=NODE10)
    fake.add_lun("db", "open")
    fake.add_lun("db", "closed", allowed_initiators="")
    out = run_module(
        zbs_info,
        {"gather_subset": ["luns", "targets"], "query": f"luns[?contains(allowed_initiators, '{NODE1}')].name"},
    )
    assert out["query_result"] == ["one"], "node1 does not match node10"
    by_name = {x["name"]: x["allowed_initiators"] for x in out["luns"]}
    assert by_name == {"one": [NODE1], "ten": [NODE10], "open": ["*"], "closed": []}
    assert out["targets"][0]["iqn_whitelist"] == [NODE1, NODE10] and out["targets"][0]["ip_whitelist"] == ["*"]


def test_initiators_subset_says_which_luns_a_node_sees_and_why(fake, run_module):
    fake.add_target("db")
    fake.add_target("locked", iqn_whitelist=NODE10)
    fake.add_lun("db", "data", allowed_initiators=NODE1)
    fake.add_lun("db", "scratch")  # open to everybody
    fake.add_lun("db", "other", allowed_initiators=NODE10)
    fake.add_lun("locked", "secret", allowed_initiators=NODE1)  # listed, but the target keeps node1 out
    fake.add_connection("db", NODE1, "10.0.0.1")
    out = run_module(zbs_info, {"gather_subset": ["initiators"]})
    assert [r["iqn"] for r in out["initiators"]] == [NODE1, NODE10]
    node1 = out["initiators"][0]
    assert [(x["name"], x["lun_access"], x["target_access"]) for x in node1["luns"]] == [
        ("data", "listed", "open"),
        ("scratch", "open", "open"),
    ]
    assert node1["blocked"] == [{"target": "locked", "name": "secret", "lun_id": 1}]
    assert node1["sessions"] == [{"target": "db", "initiator_ip": "10.0.0.1"}]
    stranger = run_module(zbs_info, {"gather_subset": ["initiators"], "initiator": "iqn.2004-10.com.example:new"})
    assert [x["name"] for x in stranger["initiators"][0]["luns"]] == ["scratch"]


def test_an_unknown_target_is_an_error_not_an_empty_list(fake, run_module):
    out = run_module(zbs_info, {"gather_subset": ["luns"], "target": "nope"})
    assert out["failed"] and out["field"] == "target" and "no target 'nope'" in out["msg"]


def test_fields_trim_every_record(fake, run_module):
    fake.add_target("db")
    fake.add_lun("db", "data")
    out = run_module(zbs_info, {"gather_subset": ["luns", "targets", "cluster"], "fields": ["name", "assigned_size"]})
    assert out["luns"] == [{"name": "data", "assigned_size": 1 << 30}]
    assert out["targets"] == [{"name": "db"}]
    assert out["cluster"] == {"name": "unit"}


def test_capacity_comes_from_the_cluster_record(fake, run_module):
    fake.cluster.update(
        total_data_capacity=100 << 30, used_data_space=25 << 30, valid_data_space=100 << 30, failure_data_space=0
    )
    fake.add_target("db")
    fake.add_lun("db", "data", size=40 << 30)
    out = run_module(zbs_info, {"gather_subset": ["cluster", "luns"]})
    assert out["capacity"] == {
        "total": 100 << 30,
        "used": 25 << 30,
        "free": 75 << 30,
        "used_percent": 25.0,
        "provisioned": 40 << 30,
    }
    assert "provisioned" not in run_module(zbs_info, {})["capacity"]
