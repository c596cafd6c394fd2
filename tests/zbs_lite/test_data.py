"""LUN data files: sparse/thick, grow, snapshot, clone, copy and rollback keep the bytes users wrote."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zl_helpers import Api

from zbs_lite.testing import ZbsLiteProcess

MiB = 1 << 20


def lun_file(zl: ZbsLiteProcess, lun: dict[str, Any]) -> Path:
    return zl.pool_path / "luns" / lun["local_id"]


def write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def read(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(n)


def test_thin_is_sparse_thick_is_allocated(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    t = api.target()
    thin = api.lun(t["id"], size=64 * MiB)
    thick = api.lun(t["id"], size=8 * MiB, thin_provision=False)
    assert thin["thin_provision"] and not thick["thin_provision"]
    st = lun_file(zbs_lite, thin).stat()
    assert st.st_size == 64 * MiB and st.st_blocks * 512 < MiB
    st = lun_file(zbs_lite, thick).stat()
    assert st.st_size == 8 * MiB and st.st_blocks * 512 >= 8 * MiB
    assert api.get_lun(thick["id"])["unique_size"] >= 8 * MiB
    files = {p.name for p in (zbs_lite.pool_path / "luns").iterdir()}
    assert {thin["local_id"], thick["local_id"]} <= files, "files are named by the LUN's UUID, not its name"


def test_grow_keeps_inode_and_data(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    t = api.target()
    lun = api.lun(t["id"], size=4 * MiB)
    path = lun_file(zbs_lite, lun)
    write(path, 4 * MiB - 5, b"tail!")
    ino = path.stat().st_ino
    api.mutate(
        "update-iscsi-lun", {"where": {"id": lun["id"]}, "data": {"assigned_size": 1, "assigned_size_unit": "GB"}}
    )
    assert path.stat().st_ino == ino and path.stat().st_size == 1 << 30
    assert read(path, 4 * MiB - 5, 5) == b"tail!"
    assert api.get_lun(lun["id"])["assigned_size"] == 1 << 30


def test_snapshot_clone_copy_rollback(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    t1, t2 = api.target(), api.target()
    lun = api.lun(t1["id"], size=16 * MiB)
    path = lun_file(zbs_lite, lun)
    write(path, 0, b"version-1")
    write(path, 9 * MiB, b"far")
    snap = api.snapshot(lun, "v1")
    assert api.get_lun(lun["id"])["snapshot_num"] == 1
    write(path, 0, b"version-2")
    ino = path.stat().st_ino

    clone = api.mutate(
        "clone-iscsi-lun-from-snapshot", [{"snapshot_id": snap["id"], "iscsi_target_id": t2["id"], "name": "clone"}]
    )[0]["data"]
    copy = api.mutate("copy-iscsi-lun", [{"src_lun_id": lun["id"], "name": "copy"}])[0]["data"]
    assert clone["iscsi_target"]["id"] == t2["id"] and clone["assigned_size"] == 16 * MiB
    assert copy["iscsi_target"]["id"] == t1["id"] and copy["lun_id"] == 2
    assert read(lun_file(zbs_lite, clone), 0, 9) == b"version-1"
    assert read(lun_file(zbs_lite, clone), 9 * MiB, 3) == b"far"
    assert read(lun_file(zbs_lite, copy), 0, 9) == b"version-2"
    if zbs_lite.clone_mode == "copy":
        assert lun_file(zbs_lite, copy).stat().st_blocks * 512 < 4 * MiB, "copies keep holes"

    api.mutate("update-iscsi-lun", {"where": {"id": lun["id"]}, "data": {"assigned_size": 32 * MiB}})
    rolled = api.mutate("rollback-iscsi-lun-from-snapshot", [{"lun_id": lun["id"], "snapshot_id": snap["id"]}])
    assert rolled[0]["data"]["id"] == lun["id"]
    assert read(path, 0, 9) == b"version-1" and path.stat().st_ino == ino
    assert api.get_lun(lun["id"])["assigned_size"] == 16 * MiB == path.stat().st_size

    # a snapshot of another LUN can be rolled onto this one
    other = api.lun(t1["id"], size=16 * MiB)
    api.mutate("rollback-iscsi-lun-from-snapshot", [{"lun_id": other["id"], "snapshot_id": snap["id"]}])
    assert read(lun_file(zbs_lite, other), 0, 9) == b"version-1"

    snap_file = zbs_lite.pool_path / "snaps" / snap["local_id"]
    assert snap_file.exists()
    api.mutate("delete-iscsi-lun-snapshot", {"where": {"id": snap["id"]}})
    assert not snap_file.exists() and api.get_lun(lun["id"])["snapshot_num"] == 0
    api.mutate("delete-iscsi-lun", {"where": {"iscsi_target": {"id": t1["id"]}}, "data": {"remove_snapshot": True}})
    assert not path.exists() and api.ok("get-iscsi-luns", {"where": {"iscsi_target": {"id": t1["id"]}}}) == []


def test_delete_with_snapshots_removes_them(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    t = api.target()
    lun = api.lun(t["id"], size=MiB)
    snaps = [api.snapshot(lun) for _ in range(2)]
    api.mutate("delete-iscsi-lun", {"where": {"id": lun["id"]}, "data": {"remove_snapshot": True}})
    assert api.ok("get-iscsi-lun-snapshots", {"where": {"id_in": [s["id"] for s in snaps]}}) == []
    assert not any((zbs_lite.pool_path / "snaps" / s["local_id"]).exists() for s in snaps)


def test_target_settings_round_trip(api: Api) -> None:
    chaps = [{"initiator_iqn": "iqn.2020-01.io.test:n1", "chap_name": "n1", "chap_secret": "n1secretvalue123"}]
    t = api.target(
        chap_enabled=True, chap_name="tgt", chap_secret="abcdefghijkl", initiator_chaps=chaps,
        ip_whitelist="127.0.0.0/8", iqn_whitelist="iqn.2020-01.io.test:n1", description="\u6d4b\u8bd5",
        iops=1000, bps=10, bps_unit="MBps",
    )  # fmt: skip
    assert t["iqn_name"] == f"iqn.2016-02.com.smartx:system:{t['name']}"
    assert t["chap_enabled"] and t["chap_name"] == "tgt" and t["initiator_chaps"] == chaps
    assert t["iops"] == 1000 and t["bps"] == 10 * MiB and t["description"] == "\u6d4b\u8bd5"
    out = api.mutate(
        "update-iscsi-target", {"where": {"id": t["id"]}, "data": {"chap_enabled": False, "iqn_whitelist": "*/*"}}
    )
    assert out[0]["data"]["chap_enabled"] is False and out[0]["data"]["iqn_whitelist"] == "*/*"
    lun = api.lun(t["id"], allowed_initiators="")
    assert lun["allowed_initiators"] == ""
    done = api.mutate(
        "update-iscsi-lun", {"where": {"id": lun["id"]}, "data": {"allowed_initiators": "iqn.2020-01.io.test:n1"}}
    )
    assert done[0]["data"]["allowed_initiators"] == "iqn.2020-01.io.test:n1"
    got = api.ok("get-iscsi-targets", {"where": {"id": t["id"]}})[0]
    assert got["luns"] == [{"id": lun["id"], "name": lun["name"]}]
    settings = api.mutate(
        "update-cluster-enable-iscsi-setting", {"where": {"id": api.cluster_id()}, "enable_iscsi": True}
    )
    assert settings[0]["data"]["enabled_iscsi"] is True


def test_no_temp_files_left(zbs_lite: ZbsLiteProcess) -> None:
    assert os.listdir(zbs_lite.pool_path / "tmp") == []
