"""Recovery after a kill between a LUN's create and a later change to it, before its file exists.

A LUN resized or deleted before its create task ran has no file yet: that is not a loss, so
recovery must not report it, and the LUN must not appear on the data plane (not even as
NOT READY) until its data exists.
"""

from __future__ import annotations

import time
from pathlib import Path

from initiator import Initiator
from zl_helpers import Api, uid

from zbs_lite.testing import ZbsLiteProcess

IQN = "iqn.2020-01.io.zbs-test:recovery"
MiB = 1 << 20


def wait_idle(zl: ZbsLiteProcess) -> None:
    deadline = time.monotonic() + 60
    while not zl.status()["tasks_idle"]:
        assert time.monotonic() < deadline, "the resumed tasks did not finish within 60 s"
        time.sleep(0.05)


def test_kill_between_create_and_resize_or_delete(tmp_path: Path) -> None:
    zl = ZbsLiteProcess(tmp_path / "zl", task_delay=0.01)
    zl.start()
    try:
        api = Api(zl)
        t = api.target(uid("rec"))
        zl.stop()
        zl.opts["task_delay"] = 3600  # from now on tasks wait: the LUNs get rows, not files
        zl.start()
        resized = api.ok("create-iscsi-lun", [{"name": "resized", "iscsi_target_id": t["id"],
                                               "assigned_size": 4 * MiB, "replica_num": 2}])[0]["data"]  # fmt: skip
        api.ok("update-iscsi-lun", {"where": {"id": resized["id"]}, "data": {"assigned_size": 8 * MiB}})
        deleted = api.ok("create-iscsi-lun", [{"name": "deleted", "iscsi_target_id": t["id"],
                                               "assigned_size": 4 * MiB, "replica_num": 2}])[0]["data"]  # fmt: skip
        api.ok("delete-iscsi-lun", {"where": {"id": deleted["id"]}})
        assert not (zl.pool_path / "luns" / resized["local_id"]).exists()

        ini = Initiator(*zl.chunks[0], IQN)
        ini.login(t["iqn_name"])
        assert ini.report_luns() == [], "a LUN without data is not on the data plane"
        assert ini.tur(resized["lun_id"]).asc == (0x25, 0x00), "not even as NOT READY"
        ini.close()

        zl.kill()
        zl.opts["task_delay"] = 0.01
        zl.start()
        assert zl.state["recovered"] == {"orphans_removed": 0, "missing_files": 0}, "no loss to report"
        wait_idle(zl)
        (lun,) = api.ok("get-iscsi-luns", {"where": {"iscsi_target": {"id": t["id"]}}})
        assert lun["id"] == resized["id"] and lun["assigned_size"] == 8 * MiB
        assert (zl.pool_path / "luns" / lun["local_id"]).stat().st_size == 8 * MiB
        assert not (zl.pool_path / "luns" / deleted["local_id"]).exists()
        ini = Initiator(*zl.chunks[1], IQN)
        ini.login(t["iqn_name"])
        assert ini.report_luns() == [lun["lun_id"]]
        assert ini.tur(lun["lun_id"]).status == 0
        ini.logout()
    finally:
        zl.stop()
