"""Tasks that are due together run as one batch, with the outcome of running them one by one.

An in-process zbs-lite whose task runner is swapped for one started only once every mutation
is in, so all their tasks are due together and run as one batch: creates, a resize and a
snapshot of a LUN made in the same batch, a rollback that fails (its snapshot's file is gone),
a delete, and a resize after the failure. Each task must end as it would alone, in submission
order, and the data plane's catalog must be re-read a few times for the batch, not once per task.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from zbs_lite.api import Api
from zbs_lite.db import Database
from zbs_lite.settings import Settings
from zbs_lite.storage import Pool
from zbs_lite.tasks import TaskExecutor, TaskRunner

MiB = 1 << 20


def _one(api: Api, op: str, body: Any) -> dict[str, Any]:
    return api.call(op, body)[0]


def _lun(api: Api, rid: str) -> dict[str, Any] | None:
    found = api.call("get-iscsi-luns", {"where": {"id": rid}})
    return found[0] if found else None


def _drain(runner: TaskRunner) -> None:
    deadline = time.monotonic() + 30
    while not runner.idle():
        assert time.monotonic() < deadline, "tasks still running after 30 s"
        time.sleep(0.01)
    runner.stop()


def test_a_batch_ends_as_its_tasks_would_one_by_one(tmp_path: Path) -> None:
    pool = Pool(tmp_path, "dir")
    pool.open()
    db = Database(tmp_path / "meta.db")
    api = Api(db, pool, Settings(username="a", password="b", task_delay=0))
    api.runner.start()
    target = _one(
        api,
        "create-iscsi-target",
        [{"name": "t", "cluster_id": api.cluster_id, "replica_num": 1, "thin_provision": True}],
    )
    other = _one(
        api,
        "create-iscsi-lun",
        [{"name": "other", "iscsi_target_id": target["data"]["id"], "assigned_size": MiB, "replica_num": 1}],
    )["data"]
    lost = _one(
        api,
        "create-iscsi-lun-snapshot",
        [{"iscsi_lun_id": other["id"], "iscsi_target_id": target["data"]["id"], "name": "lost"}],
    )["data"]
    _drain(api.runner)
    pool.snapshot_path(lost["local_id"]).unlink()  # the rollback below fails on it

    held = TaskRunner(TaskExecutor(db, pool).run)
    api._mutations.runner = held  # the seam that holds tasks back until every mutation is in
    made = api.call(
        "create-iscsi-lun",
        [
            {"name": f"v{i}", "iscsi_target_id": target["data"]["id"], "assigned_size": 4 * MiB, "replica_num": 1}
            for i in range(3)
        ],
    )
    keep, gone, last = (m["data"]["id"] for m in made)
    submitted = [
        *(m["task_id"] for m in made),
        _one(api, "update-iscsi-lun", {"where": {"id": keep}, "data": {"assigned_size": 8 * MiB}})["task_id"],
        (
            snap := _one(
                api,
                "create-iscsi-lun-snapshot",
                [{"iscsi_lun_id": keep, "iscsi_target_id": target["data"]["id"], "name": "s"}],
            )
        )["task_id"],
        _one(api, "rollback-iscsi-lun-from-snapshot", [{"lun_id": other["id"], "snapshot_id": lost["id"]}])["task_id"],
        _one(api, "delete-iscsi-lun", {"where": {"id": gone}})["task_id"],
        _one(api, "update-iscsi-lun", {"where": {"id": last}, "data": {"assigned_size": 12 * MiB}})["task_id"],
    ]
    commits: list[frozenset[str]] = []
    db.on_commit.append(commits.append)
    held.start()
    _drain(held)

    status = {t["id"]: t["status"] for t in api.call("get-tasks", {"where": {"id_in": submitted}})}
    assert [status[t] for t in submitted] == ["SUCCESSED"] * 5 + ["FAILED"] + ["SUCCESSED"] * 2
    kept = _lun(api, keep)
    assert kept is not None and kept["entityAsyncStatus"] is None and kept["assigned_size"] == 8 * MiB
    assert pool.lun_path(kept["local_id"]).stat().st_size == 8 * MiB
    assert pool.snapshot_path(snap["data"]["local_id"]).exists()
    rolled = _lun(api, other["id"])
    assert rolled is not None and rolled["entityAsyncStatus"] is None
    assert _lun(api, gone) is None
    grown = _lun(api, last)
    assert grown is not None and grown["entityAsyncStatus"] is None and grown["assigned_size"] == 12 * MiB
    # one commit for the five before the failure, one for the failure, one for the rest
    assert len(commits) <= 3, f"the catalog was re-read {len(commits)} times for one batch of 8 tasks"
