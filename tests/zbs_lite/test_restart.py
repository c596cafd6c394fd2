"""A graceful restart keeps every object and its data, resumes queued tasks, and invalidates old tokens."""

from __future__ import annotations

from pathlib import Path

from zl_helpers import Api

from zbs_lite.testing import ZbsLiteProcess


def test_restart_resumes_queued_tasks_and_keeps_data(tmp_path: Path) -> None:
    zl = ZbsLiteProcess(tmp_path / "r", task_delay=30)  # tasks stay queued until after the restart
    zl.start()
    try:
        api = Api(zl)
        url, ca = zl.api_url, Path(zl.ca_path).read_bytes()
        out = api.ok("create-iscsi-target", [{"name": "keep", "cluster_id": zl.cluster_id(), "replica_num": 2,
                                              "thin_provision": True}])  # fmt: skip
        tid = out[0]["data"]["id"]
        lun = api.ok(
            "create-iscsi-lun", [{"name": "l", "iscsi_target_id": tid, "assigned_size": 1 << 20, "replica_num": 2}]
        )
        tasks = [out[0]["task_id"], lun[0]["task_id"]]
        assert {t["status"] for t in api.ok("get-tasks", {"where": {"id_in": tasks}})} == {"PENDING"}
        old_token = zl.login()

        zl.opts["task_delay"] = 0.01
        zl.restart()
        assert zl.api_url == url and Path(zl.ca_path).read_bytes() == ca, "same port, same CA after a restart"
        assert zl.call("get-clusters", {}, token=old_token)[0] == 401, "tokens do not survive a restart"
        done = zl.wait_tasks(tasks)
        assert [t["status"] for t in done] == ["SUCCESSED", "SUCCESSED"]
        row = api.get_lun(lun[0]["data"]["id"])
        assert row["entityAsyncStatus"] is None
        path = zl.pool_path / "luns" / row["local_id"]
        with open(path, "r+b") as fh:
            fh.write(b"persist")

        zl.restart()
        assert api.get_lun(row["id"])["name"] == "l"
        assert path.read_bytes()[:7] == b"persist"
        assert zl.state["recovered"] == {"orphans_removed": 0, "missing_files": 0}
    finally:
        zl.stop()


def test_a_start_removes_orphan_files_and_reports_missing_ones_among_many(tmp_path: Path) -> None:
    """More LUN files than one batch of recovery's checks: only the orphans go, every LUN's file stays."""
    zl = ZbsLiteProcess(tmp_path / "o", task_delay=0)
    zl.start()
    try:
        api = Api(zl)
        luns = []
        for t in range(3):
            out = api.ok("create-iscsi-target", [{"name": f"orph{t}", "cluster_id": zl.cluster_id(), "replica_num": 2,
                                                  "thin_provision": True}])  # fmt: skip
            made = api.ok(
                "create-iscsi-lun",
                [{"name": f"l{i}", "iscsi_target_id": out[0]["data"]["id"], "assigned_size": 1 << 20, "replica_num": 2}
                 for i in range(230)],
            )  # fmt: skip
            luns += made
        zl.wait_tasks([m["task_id"] for m in luns])
        lun_ids = [api.get_lun(m["data"]["id"])["local_id"] for m in luns]
        zl.stop()
        pool = zl.pool_path
        for orphan in (pool / "luns" / "not-a-lun", pool / "snaps" / "not-a-snapshot", pool / "luns" / "x.tmp"):
            orphan.write_bytes(b"left behind")
        (pool / "luns" / lun_ids[400]).unlink()  # a LUN whose file is gone

        zl.start()
        assert zl.state["recovered"] == {"orphans_removed": 3, "missing_files": 1}
        assert {p.name for p in (pool / "luns").iterdir()} == set(lun_ids) - {lun_ids[400]}
        assert not any((pool / "snaps").iterdir())
    finally:
        zl.stop()
