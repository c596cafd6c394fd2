"""The data plane's catalog over the real SQLite store (in-process, no HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zbs_lite.api import Api
from zbs_lite.catalog import ConnectionInfo
from zbs_lite.db import Database
from zbs_lite.dbcatalog import DbCatalog
from zbs_lite.settings import Settings
from zbs_lite.storage import Pool


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[Api, DbCatalog]]:
    pool = Pool(tmp_path, "dir")
    pool.open()
    db = Database(tmp_path / "meta.db")
    api = Api(db, pool, Settings(username="admin", password="pw", task_delay=0, chunk_ips=("127.0.9.1",)))
    catalog = DbCatalog(db, pool, api.cluster_id)
    catalog.set_chunk_ips({1: "127.0.9.1"})
    api.runner.start()
    yield api, catalog
    api.runner.stop()
    db.close()


def settle(api: Api) -> None:
    deadline = time.monotonic() + 30
    while not (api.runner.idle() and not api.pending_tasks()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_catalog_follows_commits(plane: tuple[Api, DbCatalog]) -> None:
    api, cat = plane
    g0 = cat.snapshot().generation
    t = api.call(
        "create-iscsi-target", [{"name": "cat", "cluster_id": api.cluster_id, "replica_num": 2, "thin_provision": True}]
    )
    settle(api)
    tid = t[0]["data"]["id"]
    view = cat.snapshot().target_by_iqn("iqn.2016-02.com.smartx:system:cat")
    assert view is not None and view.id == tid and cat.snapshot().generation > g0
    api.call(
        "update-iscsi-target",
        {"where": {"id": tid}, "data": {"chap_enabled": True, "chap_name": "u", "chap_secret": "abcdefghijkl"}},
    )
    settle(api)
    view = cat.snapshot().target_by_iqn("iqn.2016-02.com.smartx:system:cat")
    assert view is not None and view.chap_enabled and view.chap_secret == "abcdefghijkl"
    assert "abcdefghijkl" not in repr(view)

    lun = api.call(
        "create-iscsi-lun",
        [{"name": "l", "iscsi_target_id": tid, "assigned_size": 1 << 20, "replica_num": 2, "allowed_initiators": ""}],
    )
    settle(api)
    (lv,) = cat.snapshot().luns(tid)
    assert lv.size == 1 << 20 and lv.lun_id == 1 and lv.allowed_initiators == ""
    assert Path(lv.path).stat().st_size == 1 << 20
    ino = Path(lv.path).stat().st_ino
    g1 = cat.snapshot().generation
    api.call("update-iscsi-lun", {"where": {"id": lun[0]["data"]["id"]}, "data": {"assigned_size": 2 << 20}})
    settle(api)
    (lv2,) = cat.snapshot().luns(tid)
    assert cat.snapshot().generation > g1 and lv2.size == 2 << 20 and Path(lv2.path).stat().st_ino == ino

    api.call("delete-iscsi-lun", {"where": {"id": lun[0]["data"]["id"]}})
    settle(api)
    assert cat.snapshot().luns(tid) == () and not Path(lv.path).exists()


def test_connections_registry_backs_get_iscsi_connections(plane: tuple[Api, DbCatalog]) -> None:
    api, cat = plane
    t = api.call(
        "create-iscsi-target",
        [{"name": "conn", "cluster_id": api.cluster_id, "replica_num": 2, "thin_provision": True}],
    )
    tid = t[0]["data"]["id"]
    info = ConnectionInfo("s1", tid, "iqn.2020-01.io.test:n1", "127.0.0.5", 40000, 1)
    api.queries.sync_connections = cat.flush_connections
    cat.connection_opened(info)
    rows = api.call("get-iscsi-connections", {"where": {"iscsi_target": {"id": tid}}})
    assert len(rows) == 1
    row = rows[0]
    assert row["initiator_iqn"] == "iqn.2020-01.io.test:n1" and row["client_port"] == 40000
    assert row["iscsi_target"] == {"id": tid, "name": "conn"} and row["type"] == "ISCSI" and row["tr_type"] == "TCP"
    assert row["host"]["management_ip"] == "127.0.9.1"
    cat.connection_closed("s1")
    assert api.call("get-iscsi-connections", {}) == []
