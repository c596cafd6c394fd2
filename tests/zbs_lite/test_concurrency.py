"""Many clients at once: same-name races have exactly one winner, distinct creates all land."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from zl_helpers import Api, uid

from zbs_lite.testing import ZbsLiteProcess


def race(n: int, fn) -> list[tuple[int, object]]:  # type: ignore[no-untyped-def]
    barrier = threading.Barrier(n)

    def go(i: int) -> tuple[int, object]:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_same_target_name_race_has_one_winner(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    name, cid = uid("race"), api.cluster_id()
    token = zbs_lite.login()
    body = [{"name": name, "cluster_id": cid, "replica_num": 2, "thin_provision": True}]
    results = race(8, lambda i: zbs_lite.call("create-iscsi-target", body, token=token))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [400] * 7, results
    assert all("already exists" in d["message"] for s, d in results if s == 400)  # type: ignore[index]
    assert len(api.ok("get-iscsi-targets", {"where": {"name": name}})) == 1


def test_same_lun_name_race_has_one_winner(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    t = api.target()
    token = zbs_lite.login()
    body = [{"name": "same", "iscsi_target_id": t["id"], "assigned_size": 4096, "replica_num": 2}]
    results = race(8, lambda i: zbs_lite.call("create-iscsi-lun", body, token=token))
    assert sorted(s for s, _ in results) == [200] + [400] * 7
    luns = api.ok("get-iscsi-luns", {"where": {"iscsi_target": {"id": t["id"]}}})
    assert [lun["name"] for lun in luns] == ["same"] and luns[0]["lun_id"] == 1


def test_parallel_distinct_creates_all_succeed_with_unique_lun_ids(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    t = api.target()
    token = zbs_lite.login()

    def create(i: int) -> tuple[int, object]:
        body = [{"name": f"p{i}", "iscsi_target_id": t["id"], "assigned_size": 4096, "replica_num": 2}]
        return zbs_lite.call("create-iscsi-lun", body, token=token)

    results = race(16, create)
    assert all(s == 200 for s, _ in results), results
    zbs_lite.wait_tasks([d[0]["task_id"] for _, d in results])  # type: ignore[index]
    luns = api.ok("get-iscsi-luns", {"where": {"iscsi_target": {"id": t["id"]}}, "orderBy": "lun_id_ASC"})
    assert [lun["lun_id"] for lun in luns] == list(range(1, 17))
    assert all(lun["entityAsyncStatus"] is None for lun in luns)
