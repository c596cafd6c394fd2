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
    assert zbs_info.resolve_subsets(["all"]) == ["cluster", "targets", "luns", "snapshots", "connections"]
    assert zbs_info.resolve_subsets(["!luns"]) == ["cluster", "targets", "snapshots", "connections"]
    assert zbs_info.resolve_subsets(["minimal", "luns"]) == ["minimal", "luns"]
