"""Random bodies for every operation: zbs-lite answers 200 or a 4xx ErrorBody, never a 500.

Bodies mix valid field names with wrong types, huge and negative numbers, odd strings and
deep nesting, seeded so a failure can be replayed (ZBS_LITE_FUZZ_SEED).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from zl_helpers import Api

from zbs_lite.testing import ZbsLiteProcess

OPS = [
    "get-clusters", "get-iscsi-targets", "get-iscsi-targets-connection", "get-iscsi-luns", "get-iscsi-luns-connection",
    "get-iscsi-lun-snapshots", "get-iscsi-lun-snapshots-connection", "get-iscsi-connections",
    "get-iscsi-connections-connection", "get-tasks", "get-tasks-connection", "create-iscsi-target",
    "update-iscsi-target", "delete-iscsi-target", "create-iscsi-lun", "update-iscsi-lun", "delete-iscsi-lun",
    "clone-iscsi-lun-from-snapshot", "copy-iscsi-lun", "rollback-iscsi-lun-from-snapshot",
    "create-iscsi-lun-snapshot", "delete-iscsi-lun-snapshot", "update-cluster-enable-iscsi-setting",
]  # fmt: skip
KEYS = [
    "where", "data", "name", "name_in", "name_contains", "id", "id_in", "lun_id", "lun_id_gt", "assigned_size",
    "assigned_size_unit", "replica_num", "stripe_num", "stripe_size", "thin_provision", "cluster_id",
    "iscsi_target_id", "iscsi_target", "iscsi_lun_id", "snapshot_id", "src_lun_id", "allowed_initiators",
    "chap_enabled", "chap_name", "chap_secret", "initiator_chaps", "ip_whitelist", "iqn_whitelist", "first", "skip",
    "after", "orderBy", "AND", "OR", "NOT", "remove_snapshot", "enable_iscsi", "iops", "bps", "bps_unit", "luns_some",
]  # fmt: skip
SCALARS: list[Any] = [
    None, True, False, 0, -1, 1, 255, 256, 2**31, 2**63, -(2**63), 2**64, 1.5, float("1e308"), "", "x",
    "../../etc/passwd", "\u00e9t\u00e9", "\x00", "*/*", "iqn.2020-01.io.test:n1", "name_ASC", "GB", "a" * 5000, "%",
    "*", "'; DROP TABLE luns; --",
]  # fmt: skip


def value(rng: random.Random, scalars: list[Any], depth: int) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.55:
        return rng.choice(scalars)
    if r < 0.8:
        return {rng.choice(KEYS): value(rng, scalars, depth + 1) for _ in range(rng.randint(0, 4))}
    return [value(rng, scalars, depth + 1) for _ in range(rng.randint(0, 3))]


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZbsLiteProcess]:
    """A server of its own: a fuzzed `delete-iscsi-lun {where: {}}` would hit every test's LUNs."""
    with ZbsLiteProcess(tmp_path_factory.mktemp("fuzz"), task_delay=0.01) as zl:
        yield zl


def test_no_body_makes_a_500(own: ZbsLiteProcess) -> None:
    api = Api(own)
    seed = int(os.environ.get("ZBS_LITE_FUZZ_SEED", str(random.randrange(1 << 30))))
    print(f"fuzz seed {seed}")
    rng = random.Random(seed)
    t = api.target()
    lun = api.lun(t["id"])
    snap = api.snapshot(lun)
    scalars = [*SCALARS, t["id"], lun["id"], snap["id"], api.cluster_id()]
    seen: dict[int, int] = {}
    for _ in range(400):
        op = rng.choice(OPS)
        if rng.random() < 0.3:
            body = value(rng, scalars, 0)
        else:
            body = {k: value(rng, scalars, 1) for k in rng.sample(KEYS, rng.randint(1, 4))}
        if op.startswith(("create", "clone", "copy", "rollback")) and rng.random() < 0.5:
            body = [body]
        status, data = api.call(op, body)
        seen[status] = seen.get(status, 0) + 1
        assert status in (200, 400, 404), (seed, op, body, status, data)
        if status != 200:
            assert isinstance(data, dict) and data["status"] == status and data["message"], (op, body, data)
    assert seen.get(400, 0) > 100, seen
    # the server still works and the objects the fuzzer could reach are consistent
    assert api.ok("get-iscsi-targets", {"where": {"id": t["id"]}})
