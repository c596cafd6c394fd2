"""The lookups clients make on every call use indexes, not a scan of every row.

Asserted on SQLite's own query plan for the exact SQL the API builds (no timing), with
ANALYZE statistics from a populated database (3,000 LUNs), the case the planner must get
right as installations grow.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from zbs_lite.api import Api
from zbs_lite.db import Database
from zbs_lite.errors import ApiError
from zbs_lite.model import LUN, SNAPSHOT, TARGET, TASK, Resource
from zbs_lite.queries import select_sql
from zbs_lite.settings import Settings
from zbs_lite.storage import Pool


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    tmp: Path = tmp_path_factory.mktemp("plans")
    pool = Pool(tmp, "dir")
    pool.open()
    db = Database(tmp / "meta.db")
    api = Api(db, pool, Settings(username="a", password="b", task_delay=3600))  # tasks never run: metadata only
    targets = [
        api.call(
            "create-iscsi-target",
            [{"name": f"t{i}", "cluster_id": api.cluster_id, "replica_num": 2, "thin_provision": True}],
        )[0]["data"]["id"]
        for i in range(12)
    ]
    for start in range(0, 3000, 250):
        api.call(
            "create-iscsi-lun",
            [{"name": f"vol-{i:05d}", "iscsi_target_id": targets[i % 12], "assigned_size": 1 << 30, "replica_num": 2}
             for i in range(start, start + 250)]
        )  # fmt: skip
    with db.write() as conn:
        conn.execute("ANALYZE")
    return api


def plan(api: Api, res: Resource, body: dict[str, Any]) -> str:
    with api.db.read() as conn:
        sql, params = select_sql(conn, res, {**body, "first": 100})
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return "\n".join(str(tuple(r)[-1]) for r in rows)


@pytest.mark.parametrize(
    ("res", "where"),
    [
        (LUN, {"name": "vol-01234"}),
        (LUN, {"id": "cabc"}),
        (LUN, {"local_id": "0b0e-uuid"}),
        (LUN, {"zbs_volume_id": "0b0e-uuid"}),
        (LUN, {"id_in": ["ca", "cb"]}),
        (LUN, {"name": "vol-00001", "iscsi_target": {"id": "t"}}),
        (LUN, {"iscsi_target": {"name": "t3"}}),
        (LUN, {"iscsi_target": {"id": "t"}, "lun_id": 3}),
        (TARGET, {"name": "t3"}),
        (TARGET, {"iqn_name": "iqn.2016-02.com.smartx:system:t3"}),
        (TARGET, {"local_id": "u"}),
        (SNAPSHOT, {"local_id": "u"}),
        (SNAPSHOT, {"iscsi_target": {"id": "t"}}),
        (TASK, {"id_in": ["a", "b", "c"]}),
    ],
)
def test_lookups_use_an_index(api: Api, res: Resource, where: dict[str, Any]) -> None:
    text = plan(api, res, {"where": where})
    assert f"SCAN {res.table}" not in text, text
    assert "USING" in text, text


def test_the_data_set_is_big(api: Api) -> None:
    assert api.queries.count(LUN, {})["aggregate"]["count"] == 3000
    assert isinstance(api.db, Database) and isinstance(sqlite3.sqlite_version, str)


def test_paging_through_everything_walks_the_primary_key(api: Api) -> None:
    first = api.queries.get(LUN, {"first": 100})
    assert len(first) == 100
    text = plan(api, LUN, {"after": first[-1]["id"]})
    assert "SEARCH luns USING INDEX sqlite_autoindex_luns_1 (id>?)" in text and "TEMP B-TREE" not in text, text


def test_a_cluster_holds_at_most_4096_targets(tmp_path: Path) -> None:
    pool = Pool(tmp_path, "dir")
    pool.open()
    db = Database(tmp_path / "meta.db")
    api = Api(db, pool, Settings(username="a", password="b", task_delay=3600))
    for start in range(0, 4096, 1000):
        api.call(
            "create-iscsi-target",
            [{"name": f"n{i}", "cluster_id": api.cluster_id, "replica_num": 2, "thin_provision": True}
             for i in range(start, min(start + 1000, 4096))]
        )  # fmt: skip
    with pytest.raises(ApiError) as err:
        api.call(
            "create-iscsi-target",
            [{"name": "one-more", "cluster_id": api.cluster_id, "replica_num": 2, "thin_provision": True}],
        )
    assert err.value.status == 400 and "4096" in err.value.message
    assert api.queries.count(TARGET, {})["aggregate"]["count"] == 4096
    db.close()
