"""The unit tests' FakeZbs filters exactly as zbs-lite does.

ansible-test units runs the modules against FakeZbs (tests/unit/plugins/modules/fake_zbs.py) on a
copy of the collection that has no zbs_lite, so the fake carries its own rendering of the
CloudTower ``where`` language. This test keeps the two from drifting: the same targets, LUNs
and snapshots are created in a real zbs-lite (through the client) and in the fake, then a
corpus of filters (every operator on every kind of field, null operands, relations, AND/OR/NOT
and seeded random combinations) must select the same objects in both.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient
from ansible_collections.smartx.zbs.tests.unit.plugins.modules.fake_zbs import FakeZbs

MiB = 1 << 20
NODE_A = "iqn.2004-10.com.example:parity-a"
NODE_B = "iqn.2004-10.com.example:parity-b"
STR_OPS = ("", "_not", "_in", "_not_in", "_contains", "_not_contains", "_starts_with", "_not_starts_with",
           "_ends_with", "_not_ends_with", "_lt", "_gte")  # fmt: skip
NUM_OPS = ("", "_not", "_in", "_not_in", "_lt", "_lte", "_gt", "_gte")
BOOL_OPS = ("", "_not", "_in", "_not_in")


def _targets(prefix: str) -> list[dict[str, Any]]:
    return [
        {"name": f"{prefix}-a", "replica_num": 2, "stripe_num": 8, "stripe_size": 256 << 10, "thin_provision": True,
         "description": "alpha one"},
        {"name": f"{prefix}-b", "replica_num": 3, "stripe_num": 4, "stripe_size": 64 << 10, "thin_provision": False,
         "description": ""},
        {"name": f"{prefix}-c", "replica_num": 2, "stripe_num": 1, "stripe_size": 4 << 10, "thin_provision": True,
         "description": "gamma"},
    ]  # fmt: skip


def _luns(prefix: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{prefix}-a", {"name": "data-1", "lun_id": 1, "assigned_size": 16 * MiB, "thin_provision": True,
                         "allowed_initiators": "*/*", "replica_num": 2}),
        (f"{prefix}-a", {"name": "data-2", "lun_id": 7, "assigned_size": 32 * MiB, "thin_provision": False,
                         "allowed_initiators": NODE_A, "replica_num": 2}),
        (f"{prefix}-a", {"name": "logs", "lun_id": 3, "assigned_size": 8 * MiB, "thin_provision": True,
                         "allowed_initiators": "", "replica_num": 2}),
        (f"{prefix}-b", {"name": "data-1", "lun_id": 1, "assigned_size": 64 * MiB, "thin_provision": True,
                         "allowed_initiators": f"{NODE_A},{NODE_B}", "replica_num": 3}),
        (f"{prefix}-b", {"name": "Data-Upper", "lun_id": 2, "assigned_size": 8 * MiB, "thin_provision": False,
                         "allowed_initiators": NODE_B, "replica_num": 3}),
    ]  # fmt: skip


SNAPSHOTS = [("data-1", "a", "snap-1"), ("data-1", "b", "snap-1"), ("logs", "a", "nightly")]


@pytest.fixture(scope="module")
def worlds(zbs_lite):
    """(client, fake, prefix): the same objects in zbs-lite and in FakeZbs."""
    prefix = f"p{uuid.uuid4().hex[:8]}"
    fake = FakeZbs()
    client = ZbsClient(zbs_lite.api_url, zbs_lite.username, zbs_lite.password, ca_path=zbs_lite.ca_path)
    made: dict[str, dict[str, Any]] = {}
    for t in _targets(prefix):
        fields = {k: v for k, v in t.items() if k != "name"}
        made[t["name"]] = client.targets.create(t["name"], **fields)
        fake.add_target(t["name"], **fields)
    luns: dict[tuple[str, str], dict[str, Any]] = {}
    for target, lun in _luns(prefix):
        fields = {k: v for k, v in lun.items() if k not in ("name", "assigned_size")}
        luns[(target, lun["name"])] = client.luns.create(
            lun["name"], made[target]["id"], lun["assigned_size"], **fields
        )
        fake.add_lun(target, lun["name"], lun["assigned_size"], **fields)
    for lun_name, t, snap in SNAPSHOTS:
        target = f"{prefix}-{t}"
        client.snapshots.create(luns[(target, lun_name)]["id"], made[target]["id"], snap)
        fake.add_snapshot(target, lun_name, snap)
    yield client, fake, prefix
    for snap in client.snapshots.list({"iscsi_target": {"name_starts_with": prefix}}):
        client.snapshots.delete(snap["id"])
    for lun in client.luns.list({"iscsi_target": {"name_starts_with": prefix}}):
        client.luns.delete(lun["id"])
    for target in made.values():
        client.targets.delete(target["id"])
    client.close()


def _key(resource: str, obj: dict[str, Any]) -> tuple[str, ...]:
    if resource == "iscsi-targets":
        return (obj["name"],)
    if resource == "iscsi-luns":
        return (obj["iscsi_target"]["name"], obj["name"])
    return (obj["iscsi_target"]["name"], obj["iscsi_lun"]["name"], obj["name"])


def _select(worlds, resource: str, where: dict[str, Any]) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    client, fake, prefix = worlds
    scope = (
        {"name_starts_with": prefix} if resource == "iscsi-targets" else {"iscsi_target": {"name_starts_with": prefix}}
    )
    body = {"AND": [scope, where]}
    real = {_key(resource, o) for o in client.query(f"get-{resource}", body)}
    fake_objs = fake._query(resource, {"where": body})
    return real, {_key(resource, o) for o in fake_objs}


def _field_filters(prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every operator on every kind of field, with values present, absent and null."""
    strings = {
        "iscsi-targets": {"name": [f"{prefix}-a", f"{prefix}-b", "zz"], "description": ["alpha", "", "gamma", "a"]},
        "iscsi-luns": {"name": ["data-1", "data", "Data", "-1", "logs", "x"],
                       "allowed_initiators": ["*/*", "", NODE_A, "parity-b", "iqn."]},
        "iscsi-lun-snapshots": {"name": ["snap-1", "snap", "nightly", "-1"]},
    }  # fmt: skip
    numbers = {
        "iscsi-targets": {"replica_num": [2, 3], "stripe_num": [1, 4, 8], "stripe_size": [4096, 65536]},
        "iscsi-luns": {"lun_id": [1, 3, 7], "assigned_size": [8 * MiB, 32 * MiB], "replica_num": [2, 3]},
        "iscsi-lun-snapshots": {},
    }
    bools = {"iscsi-targets": ["thin_provision"], "iscsi-luns": ["thin_provision"], "iscsi-lun-snapshots": []}
    out: dict[str, list[dict[str, Any]]] = {}
    for resource in strings:
        filters: list[dict[str, Any]] = []
        for field, values in strings[resource].items():
            for op in STR_OPS:
                if op.endswith("in"):
                    filters += [{field + op: values[:2]}, {field + op: []}]
                else:
                    filters += [{field + op: v} for v in values]
                filters.append({field + op: None})
        for field, nums in numbers[resource].items():
            for op in NUM_OPS:
                filters += [{field + op: nums}] if op.endswith("in") else [{field + op: n} for n in nums]
                filters.append({field + op: None})
        for field in bools[resource]:
            for op in BOOL_OPS:
                filters += [{field + op: [True]}] if op.endswith("in") else [{field + op: True}, {field + op: False}]
        filters += [
            {"entityAsyncStatus": None},
            {"entityAsyncStatus_not": None},
            {"entityAsyncStatus_in": ["CREATING"]},
        ]
        out[resource] = filters
    out["iscsi-luns"] += [
        {"iscsi_target": {"name": f"{prefix}-b"}},
        {"iscsi_target": {"replica_num": 3}},
        {"iscsi_target": {"description_contains": "alpha"}},
        {"iscsi_target": {"thin_provision": False, "name_ends_with": "-b"}},
        {"iscsi_target": None},
    ]
    out["iscsi-lun-snapshots"] += [
        {"iscsi_lun": {"name": "data-1"}},
        {"iscsi_lun": {"lun_id_gt": 2}},
        {"iscsi_lun": {"name": "logs"}, "iscsi_target": {"name": f"{prefix}-a"}},
        {"iscsi_target": {"stripe_num_lt": 8}},
    ]
    out["iscsi-targets"] += [
        {"luns_some": {"name": "logs"}},
        {"luns_none": {"thin_provision": False}},
        {"luns_every": {"replica_num": 3}},
        {"luns_some": {"allowed_initiators_contains": "parity-b"}},
    ]
    return out


@pytest.mark.parametrize("resource", ["iscsi-targets", "iscsi-luns", "iscsi-lun-snapshots"])
def test_every_operator_selects_the_same_objects(worlds, resource):
    filters = _field_filters(worlds[2])[resource]
    differ = []
    for where in filters:
        real, fake = _select(worlds, resource, where)
        if real != fake:
            differ.append(f"{where}: zbs-lite {sorted(real)} fake {sorted(fake)}")
    assert differ == [], f"{len(differ)} of {len(filters)} filters differ:\n" + "\n".join(differ[:20])


@pytest.mark.parametrize("resource", ["iscsi-targets", "iscsi-luns", "iscsi-lun-snapshots"])
def test_combined_filters_select_the_same_objects(worlds, resource):
    """AND/OR/NOT over lists, single objects and empty lists, in seeded random trees."""
    leaves = _field_filters(worlds[2])[resource]
    rng = random.Random(20261201)

    def tree(depth: int) -> dict[str, Any]:
        if depth == 0 or rng.random() < 0.3:
            return dict(rng.choice(leaves))
        op = rng.choice(["AND", "OR", "NOT"])
        n = rng.choice([0, 1, 2, 3])
        if n == 1 and rng.random() < 0.5:
            return {op: tree(depth - 1)}  # a single filter instead of a list
        return {op: [tree(depth - 1) for _ in range(n)]}

    differ = []
    for _ in range(150):
        where = tree(3)
        real, fake = _select(worlds, resource, where)
        if real != fake:
            differ.append(f"{where}: zbs-lite {sorted(real)} fake {sorted(fake)}")
    assert differ == [], f"{len(differ)} of 150 combined filters differ:\n" + "\n".join(differ[:10])
