"""--pool xfs: zbs-lite makes and loop-mounts its own XFS image, copies by reflink, unmounts on stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from zl_helpers import Api

from zbs_lite.storage import xfs_possible
from zbs_lite.testing import ZbsLiteProcess

pytestmark = pytest.mark.skipif(not xfs_possible(), reason="needs root and mkfs.xfs to loop-mount an XFS pool")


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return any(line.split()[4] == str(path) for line in fh)


def test_xfs_pool_reflinks_and_survives_a_crash(tmp_path: Path) -> None:
    zl = ZbsLiteProcess(tmp_path / "x", pool="xfs", pool_size="1G")
    zl.start()
    try:
        assert zl.state["pool"] == "xfs" and zl.clone_mode == "reflink" and mounted(zl.pool_path)
        api = Api(zl)
        t = api.target()
        lun = api.lun(t["id"], size=512 << 20)
        path = zl.pool_path / "luns" / lun["local_id"]
        with open(path, "r+b") as fh:
            fh.write(b"\xab" * (64 << 20))
        st = os.statvfs(zl.pool_path)
        free_before = st.f_bfree * st.f_frsize
        snap = api.snapshot(lun)
        clone = api.mutate(
            "clone-iscsi-lun-from-snapshot", [{"snapshot_id": snap["id"], "iscsi_target_id": t["id"], "name": "c"}]
        )[0]["data"]
        with open(zl.pool_path / "luns" / clone["local_id"], "rb") as fh:
            assert fh.read(4) == b"\xab" * 4
        st = os.statvfs(zl.pool_path)
        used = free_before - st.f_bfree * st.f_frsize
        assert used < 16 << 20, f"snapshot + clone of 64 MiB of data used {used} bytes: not reflinked"
        zl.kill()
        assert mounted(zl.pool_path), "a crash leaves the pool mounted"
        zl.start()
        assert zl.clone_mode == "reflink"
        assert Api(zl).get_lun(clone["id"])["assigned_size"] == 512 << 20
    finally:
        zl.stop()
    assert not mounted(zl.pool_path), "stop unmounts the pool"
    assert (tmp_path / "x" / "pool.img").exists()
