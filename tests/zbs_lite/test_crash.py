"""kill -9 after a seeded number of acknowledged mutations, restart: nothing acknowledged is
lost, nothing half-applied.

Each round runs a seeded mix of mutations against a target of its own and kills the server
once ``kill_after`` of them were acknowledged, while the next one is in flight and the tasks
of the last ones may still be running. After each restart the server resumes its persisted
tasks; once they are done, metadata and files must agree exactly: every LUN and snapshot row
has its file at its size, no file lacks a row, no temporary file remains, and every change the
API acknowledged is visible.

The seed is printed; ``ZBS_LITE_CRASH_SEED=<seed>`` replays the same operations and the same
kill points (where inside the in-flight request the signal lands is the one thing left to the
scheduler, and every outcome of that request is accepted).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from zbs_lite.testing import ZbsLiteProcess

MiB = 1 << 20
SEED_ENV = "ZBS_LITE_CRASH_SEED"
ROUNDS = 5
KILL_AFTER = (20, 120)  # acknowledged operations per round before the kill, drawn from the seed
LUNS_PER_TARGET = 255  # ZBS's cap: a create beyond it is (rightly) refused
NEAR_FULL = LUNS_PER_TARGET - 15  # from here on a round deletes instead of creating


class Burst:
    """Seeded mutations on one target; records what the API acknowledged.

    After ``kill_after`` acknowledged operations it sets ``kill_now`` just before sending the
    next one, which is its last, and the test kills the server at once.
    """

    def __init__(self, zl: ZbsLiteProcess, rng: random.Random, round_no: int, kill_after: int) -> None:
        self.zl, self.rng, self.round, self.kill_after = zl, rng, round_no, kill_after
        self.luns: dict[str, int] = {}  # acknowledged LUN id -> acknowledged size
        self.deleted: set[str] = set()
        self.maybe_deleted: set[str] = set()  # a delete in flight when the server died: either outcome is fine
        self.error: BaseException | None = None
        self.snaps: dict[str, str] = {}  # acknowledged snapshot id -> its LUN id
        self.acked = 0
        self.kill_now = threading.Event()
        self.token = zl.login()
        self.target_id = ""

    def call(self, op: str, body: Any) -> Any | None:
        if self.acked >= self.kill_after:
            self.kill_now.set()  # the kill lands while this request is in flight
        try:
            status, data = self.zl.call(op, body, token=self.token, timeout=10)
        except (requests.RequestException, ValueError):
            return None  # the server died mid-request: not acknowledged
        assert status == 200, (op, status, data)
        self.acked += 1
        return data

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.kill_now.set()

    def _run(self) -> None:
        cid = self.zl.cluster_id()
        out = self.call(
            "create-iscsi-target",
            [{"name": f"crash-{self.round}", "cluster_id": cid, "replica_num": 2, "thin_provision": True}],
        )
        if out is None:
            return
        self.target_id = out[0]["data"]["id"]
        i = 0
        while not self.kill_now.is_set():  # set by the request sent as the kill was ordered: the last one
            i += 1
            live = [lid for lid in self.luns if lid not in self.deleted]
            choice = self.rng.random()
            if len(live) >= NEAR_FULL:
                choice = 1.0  # a delete keeps the target under ZBS's LUN cap
            if choice < 0.45 or not live:
                size = self.rng.choice([1, 2, 4]) * MiB
                body = [{"name": f"l{i}", "iscsi_target_id": self.target_id, "assigned_size": size, "replica_num": 2,
                         "thin_provision": self.rng.random() < 0.8}]  # fmt: skip
                out = self.call("create-iscsi-lun", body)
                if out is None:
                    return
                self.luns[out[0]["data"]["id"]] = size
            elif choice < 0.6:
                lid = self.rng.choice(live)
                size = self.luns[lid] + MiB
                if self.call("update-iscsi-lun", {"where": {"id": lid}, "data": {"assigned_size": size}}) is None:
                    return
                self.luns[lid] = size
            elif choice < 0.75:
                lid = self.rng.choice(live)
                body = [{"iscsi_lun_id": lid, "iscsi_target_id": self.target_id, "name": f"s{i}"}]
                out = self.call("create-iscsi-lun-snapshot", body)
                if out is None:
                    return
                self.snaps[out[0]["data"]["id"]] = lid
            elif choice < 0.85:
                lid = self.rng.choice(live)
                out = self.call("copy-iscsi-lun", [{"src_lun_id": lid, "name": f"c{i}"}])
                if out is None:
                    return
                self.luns[out[0]["data"]["id"]] = self.luns[lid]
            else:
                lid = self.rng.choice(live)
                if self.call("delete-iscsi-lun", {"where": {"id": lid}, "data": {"remove_snapshot": True}}) is None:
                    self.maybe_deleted.add(lid)
                    return
                self.deleted.add(lid)


def wait_idle(zl: ZbsLiteProcess) -> None:
    deadline = time.monotonic() + 60
    while True:
        _, n = zl.call("get-tasks-connection", {"where": {"status_in": ["PENDING", "EXECUTING"]}})
        if n["aggregate"]["count"] == 0:
            return
        assert time.monotonic() < deadline, "tasks still pending 60 s after restart"
        time.sleep(0.05)


def check_consistent(zl: ZbsLiteProcess, bursts: list[Burst]) -> None:
    _, luns = zl.call("get-iscsi-luns", {})
    _, snaps = zl.call("get-iscsi-lun-snapshots", {})
    _, failed = zl.call("get-tasks", {"where": {"status": "FAILED"}})
    assert failed == [], failed
    pool = zl.pool_path
    by_id = {lun["id"]: lun for lun in luns}
    assert all(lun["entityAsyncStatus"] is None for lun in luns), "no half-applied change after recovery"
    for lun in luns:
        f = pool / "luns" / lun["local_id"]
        assert f.exists(), f"LUN {lun['name']} has no data file"
        assert f.stat().st_size == lun["assigned_size"], lun["name"]
    assert {p.name for p in (pool / "luns").iterdir()} == {lun["local_id"] for lun in luns}, "orphan LUN files"
    assert {p.name for p in (pool / "snaps").iterdir()} == {s["local_id"] for s in snaps}, "orphan snapshot files"
    assert os.listdir(pool / "tmp") == []
    for b in bursts:
        for lid, size in b.luns.items():
            if lid in b.deleted:
                assert lid not in by_id, "an acknowledged delete came back"
            elif lid not in b.maybe_deleted:
                assert lid in by_id, "an acknowledged LUN is lost"
                assert by_id[lid]["assigned_size"] >= size
        live_snaps = {s["id"] for s in snaps}
        for sid, lid in b.snaps.items():
            if lid in b.maybe_deleted:
                assert (sid in live_snaps) == (lid in by_id), "a snapshot outlived its LUN or was lost without it"
            else:
                assert (sid in live_snaps) == (lid not in b.deleted), (
                    "an acknowledged snapshot is lost or outlived its LUN"
                )


@pytest.mark.timeout(600)
def test_kill_dash_nine_after_seeded_numbers_of_operations(tmp_path: Path) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.randrange(1 << 30))
    kill_points = random.Random(seed)
    print(f"crash test seed {seed}: {SEED_ENV}={seed} replays its operations and kill points")
    zl = ZbsLiteProcess(tmp_path / "crash", task_delay=0)
    zl.start()
    bursts: list[Burst] = []
    try:
        for round_no in range(ROUNDS):
            # Each round draws from its own stream: whether the in-flight request was answered
            # before the kill must not shift what later rounds do.
            burst = Burst(zl, random.Random(f"{seed}/{round_no}"), round_no, kill_points.randint(*KILL_AFTER))
            worker = threading.Thread(target=burst.run, daemon=True)
            worker.start()
            assert burst.kill_now.wait(120), f"seed {seed}: round {round_no} never reached {burst.kill_after} acks"
            zl.kill()
            worker.join(30)
            assert not worker.is_alive()
            assert burst.error is None, f"seed {seed}: the burst failed: {burst.error!r}"
            assert burst.acked >= burst.kill_after, f"seed {seed}: killed after {burst.acked} acks"
            bursts.append(burst)
            zl.start()
            wait_idle(zl)
            check_consistent(zl, bursts)
        acked = sum(len(b.luns) + len(b.snaps) + len(b.deleted) for b in bursts)
        print([(b.kill_after, len(b.luns), len(b.snaps), len(b.deleted)) for b in bursts])
        print(f"crash test: {acked} acknowledged creates/deletes over {len(bursts)} kills")
        assert acked > 10, "the bursts acknowledged too little to mean anything"
    finally:
        zl.stop()
