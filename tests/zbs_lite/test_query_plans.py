"""The lookups clients make on every call use indexes, not a scan of every row.

Asserted on SQLite's own query plan for the exact SQL the API builds (no timing): with
ANALYZE statistics from a populated database (3,000 LUNs), and at SmartX's documented
scale (100,000 LUNs in 393 targets, 20,000 snapshots) without statistics, as zbs-lite runs.
There the pages the driver and the modules read are also measured in SQLite's own unit of
work (virtual machine steps, counted by a progress handler): a page deep into the list
costs what the first one does, a small fraction of reading every row.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from zbs_lite.api import Api
from zbs_lite.db import Database, new_id
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


# ------------------------------------------------------------------ 100,000 LUNs

BIG_LUNS, PER_TARGET, BIG_SNAPSHOTS = 100_000, 255, 20_000


def _bulk_copy(conn: sqlite3.Connection, table: str, template: sqlite3.Row, rows: list[dict[str, Any]]) -> None:
    """Rows like ``template`` (made by the API) with the given columns changed, in one statement."""
    cols = list(template.keys())
    sql = f"INSERT INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"
    conn.executemany(sql, ([row.get(c, template[c]) for c in cols] for row in rows))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Api:
    """The driver's layout at 100k: targets ``drv-k8s.NNNN`` of 255 LUNs ``k8s.pvc-N``, and snapshots.

    One LUN and one snapshot are made through the API; the rest are copies of their rows
    (metadata only: the plans depend on rows and indexes, not on how they were made).
    """
    tmp: Path = tmp_path_factory.mktemp("plans-100k")
    pool = Pool(tmp, "dir")
    pool.open()
    api = Api(Database(tmp / "meta.db"), pool, Settings(username="a", password="b", task_delay=3600))
    n_targets = -(-BIG_LUNS // PER_TARGET)
    targets = [
        t["data"]["id"]
        for t in api.call(
            "create-iscsi-target",
            [{"name": f"drv-k8s.{i:04d}", "cluster_id": api.cluster_id, "replica_num": 2, "thin_provision": True}
             for i in range(n_targets)],
        )
    ]  # fmt: skip
    lun = api.call(
        "create-iscsi-lun",
        [{"name": "k8s.pvc-0", "iscsi_target_id": targets[0], "assigned_size": 1 << 30, "replica_num": 2}],
    )
    lun_id = lun[0]["data"]["id"]
    with api.db.write() as conn:
        conn.execute("UPDATE luns SET entity_async_status = NULL WHERE id = ?", (lun_id,))
    snap = {"iscsi_lun_id": lun_id, "iscsi_target_id": targets[0], "name": "k8s.snap-0"}
    api.call("create-iscsi-lun-snapshot", [snap])
    with api.db.write() as conn:
        lun_row = conn.execute("SELECT * FROM luns").fetchone()
        snap_row = conn.execute("SELECT * FROM snapshots").fetchone()
        rows = [
            {"id": new_id(), "target_id": targets[i // PER_TARGET], "local_id": str(uuid.uuid4()),
             "name": f"k8s.pvc-{i}", "lun_id": i % PER_TARGET + 1}
            for i in range(1, BIG_LUNS)
        ]  # fmt: skip
        _bulk_copy(conn, "luns", lun_row, rows)
        _bulk_copy(
            conn,
            "snapshots",
            snap_row,
            [{"id": new_id(), "lun_id": r["id"], "target_id": r["target_id"], "local_id": str(uuid.uuid4()),
              "name": f"k8s.snap-{i}"} for i, r in enumerate(rows[:BIG_SNAPSHOTS - 1], 1)],
        )  # fmt: skip
    return api


def steps(api: Api, res: Resource, body: dict[str, Any]) -> tuple[int, int]:
    """Rows a get-* body returns and the SQLite VM steps (thousands) its SELECT took."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    with api.db.read() as conn:
        sql, params = select_sql(conn, res, body)
        conn.set_progress_handler(tick, 1000)
        try:
            n = len(conn.execute(sql, params).fetchall())
        finally:
            conn.set_progress_handler(None, 0)
    return n, count[0]


def big_plan(api: Api, res: Resource, body: dict[str, Any]) -> str:
    with api.db.read() as conn:
        sql, params = select_sql(conn, res, body)
        return "\n".join(str(tuple(r)[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def _ids(api: Api, sql: str, *params: Any) -> list[str]:
    with api.db.read() as conn:
        return [r[0] for r in conn.execute(sql, params)]


def test_the_big_data_set_has_smartx_scale(big: Api) -> None:
    assert big.queries.count(LUN, {})["aggregate"]["count"] == BIG_LUNS
    assert big.queries.count(TARGET, {})["aggregate"]["count"] == 393
    assert big.queries.count(SNAPSHOT, {})["aggregate"]["count"] == BIG_SNAPSHOTS
    with big.db.read() as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone() is None


def test_the_driver_reads_a_target_page_by_page_through_its_index(big: Api) -> None:
    """ListVolumes: one target's LUNs in id order after a cursor, exactly the page read."""
    target = _ids(big, "SELECT id FROM targets ORDER BY id LIMIT 1 OFFSET 200")[0]
    cursor = _ids(big, "SELECT id FROM luns WHERE target_id = ? ORDER BY id LIMIT 1 OFFSET 100", target)[0]
    first = {"where": {"iscsi_target": {"id": target}}, "orderBy": "id_ASC", "first": 101}
    after = {"where": {"AND": [{"iscsi_target": {"id": target}}, {"id_gt": cursor}]}, "orderBy": "id_ASC", "first": 101}
    assert "SEARCH luns USING INDEX luns_target (target_id=?)" in big_plan(big, LUN, first)
    text = big_plan(big, LUN, after)
    assert "SEARCH luns USING INDEX luns_target (target_id=? AND id>?)" in text and "TEMP B-TREE" not in text, text
    assert steps(big, LUN, after)[0] == 101


def test_the_driver_pages_its_targets_and_snapshots_without_reading_them_all(big: Api) -> None:
    """The driver's target walk (name prefix, id order both ways) and ListSnapshots (name prefix)."""
    newest_first = {"where": {"name_starts_with": "drv-k8s."}, "orderBy": "id_DESC", "first": 8}
    assert steps(big, TARGET, newest_first)[0] == 8 and "SCAN targets" not in big_plan(big, TARGET, newest_first)
    mid = _ids(big, "SELECT id FROM snapshots ORDER BY id LIMIT 1 OFFSET 10000")[0]
    for body in (
        {"where": {"name_starts_with": "k8s."}, "orderBy": "id_ASC", "first": 101},
        {"where": {"AND": [{"name_starts_with": "k8s."}, {"id_gt": mid}]}, "orderBy": "id_ASC", "first": 101},
    ):
        text = big_plan(big, SNAPSHOT, body)
        assert "TEMP B-TREE" not in text and "USING INDEX sqlite_autoindex_snapshots_1" in text, text
        assert steps(big, SNAPSHOT, body)[0] == 101
    text = big_plan(big, SNAPSHOT, {"where": {"name": "k8s.snap-77"}, "first": 2})
    assert "SEARCH snapshots USING INDEX snapshots_name_only (name=?)" in text, text  # CreateSnapshot's lookup


@pytest.mark.parametrize(
    "where",
    [
        {"iscsi_target": {"name_starts_with": "drv-k8s."}},  # every LUN of the driver's targets
        {"name_starts_with": "k8s."},  # every LUN named with the cluster id
        None,  # every LUN (the client's list-all)
    ],
)
def test_paging_through_many_matches_walks_the_table_in_id_order(big: Api, where: dict[str, Any] | None) -> None:
    """Matches of most rows: a page walks the primary key from its cursor and stops when full,
    so a page at the middle costs what the first costs (reading all matches and sorting them
    made a full pass quadratic: 100k rows read for every page)."""
    mid = _ids(big, "SELECT id FROM luns ORDER BY id LIMIT 1 OFFSET 50000")[0]
    first = {"first": 100, **({"where": where} if where else {})}
    deep = {**first, "after": mid}
    text = big_plan(big, LUN, deep)
    assert "TEMP B-TREE" not in text and "sqlite_autoindex_luns_1 (id>?)" in text, text
    (n1, w1), (n2, w2) = steps(big, LUN, first), steps(big, LUN, deep)
    assert n1 == n2 == 100
    every = steps(big, LUN, {**first, "first": BIG_LUNS})[1]
    assert w2 <= 2 * w1 + 5 and w2 * 100 < every, (w1, w2, every)


def test_the_modules_read_one_target_through_its_index(big: Api) -> None:
    """zbs_info/zbs_lun: the LUNs of a target named by the user, and one LUN by name in it."""
    text = big_plan(big, LUN, {"where": {"iscsi_target": {"name": "drv-k8s.0300"}}, "first": 100})
    assert "SEARCH luns USING INDEX luns_target (target_id=?)" in text and "SCAN" not in text, text
    text = big_plan(big, LUN, {"where": {"iscsi_target": {"name": "drv-k8s.0300"}, "name": "k8s.pvc-76600"}})
    assert "SCAN luns" not in text and "USING INDEX" in text, text
    few = {"where": {"iscsi_target": {"name_in": ["drv-k8s.0001", "drv-k8s.0002"]}}, "first": 100}
    text = big_plan(big, LUN, few)
    assert "SEARCH luns USING INDEX" in text and "SCAN luns" not in text, text
    assert steps(big, LUN, few)[0] == 100
