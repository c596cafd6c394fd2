"""where operators, nested relation filters, AND/OR/NOT, orderBy, first/after/skip paging, -connection counts."""

from __future__ import annotations

from typing import Any

import pytest
from zl_helpers import Api, uid

from zbs_lite.testing import ZbsLiteProcess


@pytest.fixture(scope="module")
def data(zbs_lite: ZbsLiteProcess) -> dict[str, Any]:
    """Two targets: A with 12 LUNs (sizes 1..12 MiB, names a-00..a-11), B with 3 (b-0..b-2)."""
    api = Api(zbs_lite)
    tag = uid("q")
    a = api.target(f"{tag}-a", description="first")
    b = api.target(f"{tag}-b", description="second")
    body = [
        {"name": f"a-{i:02d}", "iscsi_target_id": a["id"], "assigned_size": (i + 1) << 20, "replica_num": 2,
         "allowed_initiators": "*/*" if i % 2 else "iqn.2020-01.io.test:node1"}
        for i in range(12)
    ] + [
        {"name": f"b-{i}", "iscsi_target_id": b["id"], "assigned_size": 1 << 20, "replica_num": 3,
         "thin_provision": False}
        for i in range(3)
    ]  # fmt: skip
    api.mutate("create-iscsi-lun", body)
    return {"tag": tag, "a": a, "b": b}


def names(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows]


def luns(api: Api, data: dict[str, Any], where: dict[str, Any], **kw: Any) -> list[str]:
    scope = {"iscsi_target": {"name_starts_with": data["tag"]}}
    return names(api.ok("get-iscsi-luns", {"where": {"AND": [scope, where]}, "orderBy": "name_ASC", **kw}))


def test_scalar_operators(api: Api, data: dict[str, Any]) -> None:
    assert luns(api, data, {"name": "a-03"}) == ["a-03"]
    assert len(luns(api, data, {"name_not": "a-03"})) == 14
    assert luns(api, data, {"name_in": ["a-01", "b-2", "zzz"]}) == ["a-01", "b-2"]
    assert len(luns(api, data, {"name_not_in": ["a-01", "b-2"]})) == 13
    assert luns(api, data, {"name_contains": "-1"}) == ["a-10", "a-11", "b-1"]
    assert luns(api, data, {"name_starts_with": "b-"}) == ["b-0", "b-1", "b-2"]
    assert luns(api, data, {"name_ends_with": "2"}) == ["a-02", "b-2"]
    assert luns(api, data, {"name_contains": "A-"}) == [], "text filters are case-sensitive"
    assert luns(api, data, {"name_contains": "%"}) == [] and luns(api, data, {"name_contains": "*"}) == []
    assert luns(api, data, {"assigned_size_gt": 10 << 20}) == ["a-10", "a-11"]
    assert luns(api, data, {"assigned_size_gte": 10 << 20, "assigned_size_lt": 12 << 20}) == ["a-09", "a-10"]
    assert len(luns(api, data, {"assigned_size_lte": 1 << 20})) == 4
    assert luns(api, data, {"thin_provision": False}) == ["b-0", "b-1", "b-2"]
    assert len(luns(api, data, {"thin_provision_not": False})) == 12
    assert luns(api, data, {"replica_num_in": [3]}) == ["b-0", "b-1", "b-2"]
    assert len(luns(api, data, {"allowed_initiators_contains": "node1"})) == 6
    assert len(luns(api, data, {"entityAsyncStatus": None})) == 15


def test_logical_and_relation_filters(api: Api, data: dict[str, Any]) -> None:
    assert luns(api, data, {"OR": [{"name": "a-00"}, {"name": "b-0"}]}) == ["a-00", "b-0"]
    assert len(luns(api, data, {"NOT": [{"name_starts_with": "a-"}]})) == 3
    assert luns(api, data, {"AND": [{"name_starts_with": "a-"}, {"lun_id_gte": 12}]}) == ["a-11"]
    assert len(luns(api, data, {"iscsi_target": {"id": data["b"]["id"]}})) == 3
    assert len(luns(api, data, {"iscsi_target": {"description": "first"}})) == 12
    targets = api.ok("get-iscsi-targets", {"where": {"luns_some": {"name": "b-1"}, "name_starts_with": data["tag"]}})
    assert names(targets) == [data["b"]["name"]]
    targets = api.ok(
        "get-iscsi-targets", {"where": {"luns_every": {"replica_num": 3}, "name_starts_with": data["tag"]}}
    )
    assert names(targets) == [data["b"]["name"]]
    targets = api.ok("get-iscsi-targets", {"where": {"luns_none": {"replica_num": 3}, "name_starts_with": data["tag"]}})
    assert names(targets) == [data["a"]["name"]]
    cluster = api.ok("get-clusters", {})[0]
    assert (
        len(api.ok("get-iscsi-targets", {"where": {"cluster": {"id": cluster["id"]}, "name_starts_with": data["tag"]}}))
        == 2
    )
    assert api.ok("get-iscsi-targets", {"where": {"cluster": {"name": "elsewhere"}}}) == []


def test_order_and_pages(api: Api, data: dict[str, Any]) -> None:
    every = luns(api, data, {})
    assert every == sorted(every)
    desc = names(
        api.ok("get-iscsi-luns", {"where": {"iscsi_target": {"id": data["a"]["id"]}}, "orderBy": "assigned_size_DESC"})
    )
    assert desc == [f"a-{i:02d}" for i in reversed(range(12))]
    by_id = api.ok("get-iscsi-luns", {"where": {"iscsi_target": {"name_starts_with": data["tag"]}}})
    ids = [r["id"] for r in by_id]
    assert ids == sorted(ids), "the default order is by id (creation order)"
    pages, after = [], None
    while True:
        body: dict[str, Any] = {"where": {"iscsi_target": {"name_starts_with": data["tag"]}}, "first": 4}
        if after:
            body["after"] = after
        page = api.ok("get-iscsi-luns", body)
        pages.append(page)
        if len(page) < 4:
            break
        after = page[-1]["id"]
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    assert [r["id"] for p in pages for r in p] == ids
    # cursor paging also follows a non-id order, ties broken by id
    size_pages: list[str] = []
    cursor = None
    while True:
        body = {
            "where": {"iscsi_target": {"name_starts_with": data["tag"]}},
            "orderBy": "assigned_size_DESC",
            "first": 5,
        }
        if cursor:
            body["after"] = cursor
        page = api.ok("get-iscsi-luns", body)
        size_pages += names(page)
        if len(page) < 5:
            break
        cursor = page[-1]["id"]
    assert len(size_pages) == 15 and len(set(size_pages)) == 15 and size_pages[:2] == ["a-11", "a-10"]
    assert luns(api, data, {}, first=2, skip=3) == every[3:5]
    assert luns(api, data, {}, first=0) == []


def test_connection_counts(api: Api, data: dict[str, Any]) -> None:
    where = {"iscsi_target": {"name_starts_with": data["tag"]}}
    assert api.ok("get-iscsi-luns-connection", {"where": where}) == {"aggregate": {"count": 15}}
    assert api.ok("get-iscsi-targets-connection", {"where": {"name_starts_with": data["tag"]}}) == {
        "aggregate": {"count": 2}
    }
    assert (
        api.ok("get-iscsi-lun-snapshots-connection", {"where": {"iscsi_target": {"id": data["a"]["id"]}}})["aggregate"][
            "count"
        ]
        == 0
    )
    assert api.ok("get-tasks-connection", {"where": {"status": "SUCCESSED"}})["aggregate"]["count"] >= 17
    assert api.ok("get-iscsi-connections-connection", {})["aggregate"]["count"] >= 0
