"""Filters within documented limits and CloudTower's body shapes (issue #11: finding 4 and fidelity).

An over-large ``where`` is a 400 naming the limit, never SQLite's "Expression tree is too
large" as a 500; ``*-connection`` validates what the list validates; ``null`` combinators and
empty arrays are what the spec allows.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from zl_helpers import Api, uid

from zbs_lite.where import MAX_DEPTH, MAX_IN_VALUES, MAX_PATTERN, MAX_TERMS

LIST_AND_COUNT = ("get-iscsi-luns", "get-iscsi-luns-connection")


def ors(n: int) -> dict[str, Any]:
    return {"OR": [{"name": f"n{i}"} for i in range(n)]}


@pytest.mark.parametrize("op", [*LIST_AND_COUNT, "update-iscsi-lun", "delete-iscsi-lun"])
def test_a_filter_of_999_terms_is_a_400_naming_the_limit(api: Api, op: str) -> None:
    for where in (ors(999), {"AND": [{"name": f"n{i}"} for i in range(999)]}, {"AND": [ors(200), ors(200)]}):
        body: dict[str, Any] = {"where": where}
        if op.startswith("update"):
            body["data"] = {"name": "x"}
        status, data = api.call(op, body)
        assert status == 400, (op, data)
        assert data["code"] == "LimitExceeded" and f"more than {MAX_TERMS} terms" in data["message"]


def test_filters_at_the_limits_work(api: Api) -> None:
    t = api.target()
    luns = [api.lun(t["id"], name=uid("lim")) for _ in range(3)]
    names = [lun["name"] for lun in luns]
    where = {"OR": [{"name": n} for n in names] + [{"name": f"absent{i}"} for i in range(MAX_TERMS - 1 - len(names))]}
    assert sorted(r["name"] for r in api.ok("get-iscsi-luns", {"where": where})) == sorted(names)
    assert api.ok("get-iscsi-luns-connection", {"where": where}) == {"aggregate": {"count": 3}}
    many = {"name_in": names + [f"absent{i}" for i in range(MAX_IN_VALUES - len(names))]}
    assert len(api.ok("get-iscsi-luns", {"where": many})) == 3
    assert api.ok("get-iscsi-luns", {"where": {"name_contains": "*" * MAX_PATTERN}}) == []


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ({"name_in": [f"n{i}" for i in range(MAX_IN_VALUES + 1)]}, f"more than {MAX_IN_VALUES} values"),
        ({"OR": [{"id_not_in": ["x"] * 6000}, {"name_in": ["y"] * 6000}]}, f"more than {MAX_IN_VALUES} values"),
        ({"name_contains": "x" * (MAX_PATTERN + 1)}, f"longer than {MAX_PATTERN} characters"),
        ({"name_not_ends_with": "[" * 20000}, f"longer than {MAX_PATTERN} characters"),
    ],
)
def test_values_and_patterns_have_limits(api: Api, where: dict[str, Any], needle: str) -> None:
    for op in LIST_AND_COUNT:
        status, data = api.call(op, {"where": where})
        assert status == 400 and data["code"] == "LimitExceeded" and needle in data["message"], data


def test_nesting_has_a_limit(api: Api) -> None:
    deep: dict[str, Any] = {"name": "x"}
    for _ in range(MAX_DEPTH + 1):
        deep = {"AND": [deep]}
    status, data = api.call("get-iscsi-luns", {"where": deep})
    assert status == 400 and data["code"] == "LimitExceeded" and "deeply" in data["message"]
    deep = {"name": "x"}
    for _ in range(MAX_DEPTH):
        deep = {"AND": [deep]}
    assert api.ok("get-iscsi-luns", {"where": deep}) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [({"orderBy": "bogus_ASC"}, "orderBy"), ({"first": -5}, "first"), ({"after": "nonexistent"}, "after"),
     ({"last": 2}, "last"), ({"surprise": 1}, "surprise")],
)  # fmt: skip
def test_connection_operations_validate_like_the_lists(api: Api, body: dict[str, Any], field: str) -> None:
    for op in ("get-iscsi-targets", "get-iscsi-luns", "get-iscsi-lun-snapshots", "get-iscsi-connections", "get-tasks"):
        for variant in (op, f"{op}-connection"):
            status, data = api.call(variant, body)
            assert status == 400 and field in data["message"], (variant, data)


def test_connection_counts_the_page_the_list_returns(api: Api) -> None:
    t = api.target()
    for _ in range(5):
        api.lun(t["id"])
    where = {"iscsi_target": {"id": t["id"]}}
    listed = api.ok("get-iscsi-luns", {"where": where, "orderBy": "name_ASC"})
    page = {"where": where, "orderBy": "name_ASC", "first": 3, "after": listed[0]["id"]}
    assert len(api.ok("get-iscsi-luns", page)) == 3
    assert api.ok("get-iscsi-luns-connection", page) == {"aggregate": {"count": 3}}
    assert api.ok("get-iscsi-luns-connection", {**page, "first": None}) == {"aggregate": {"count": 4}}
    assert api.ok("get-iscsi-luns-connection", {"where": where}) == {"aggregate": {"count": 5}}


def test_null_combinators_mean_no_condition(api: Api) -> None:
    t = api.target()
    api.lun(t["id"])
    where = {"iscsi_target": {"id": t["id"]}}
    everything = api.ok("get-iscsi-luns", {"where": where})
    for key in ("AND", "OR", "NOT"):
        assert api.ok("get-iscsi-luns", {"where": {**where, key: None}}) == everything
        assert api.ok("get-iscsi-luns-connection", {"where": {**where, key: None}}) == {"aggregate": {"count": 1}}


ARRAY_OPERATIONS = (
    "create-iscsi-target", "create-iscsi-lun", "clone-iscsi-lun-from-snapshot", "copy-iscsi-lun",
    "rollback-iscsi-lun-from-snapshot", "create-iscsi-lun-snapshot",
)  # fmt: skip


@pytest.mark.parametrize("op", ARRAY_OPERATIONS)
def test_an_empty_array_is_a_no_op(api: Api, op: str) -> None:
    before = api.ok("get-tasks-connection", {})
    assert api.ok(op, []) == []
    assert api.ok("get-tasks-connection", {}) == before


def test_random_large_filters_are_answered_never_with_a_500(api: Api) -> None:
    """Trees of up to 1,500 terms, mixed combinators, relations, lists, long patterns: 200 or 400."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)

    def tree(budget: int, depth: int) -> dict[str, Any]:
        if budget <= 1 or depth > 10 or rng.random() < 0.2:
            leaves = [{"name": "x"}, {"lun_id_gt": 3}, {"name_in": ["a"] * rng.randint(0, 3000)},
                      {"iscsi_target": {"name_starts_with": "t"}}, {"name_contains": "*" * 20000}]  # fmt: skip
            return rng.choice(leaves)
        n = rng.randint(2, min(budget, 1200))
        return {rng.choice(["AND", "OR", "NOT"]): [tree(budget // n, depth + 1) for _ in range(n)]}

    for _ in range(30):
        where = tree(rng.randint(1, 1500), 0)
        status, data = api.call(rng.choice(LIST_AND_COUNT), {"where": where})
        assert status in (200, 400), (seed, data)
