"""The pure parts without a server: input rules and the where-to-SQL translation (run on SQLite)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from zbs_lite import validate as v
from zbs_lite.errors import ApiError
from zbs_lite.model import LUN, SCHEMA, TARGET
from zbs_lite.where import parse_query, translate


def test_iqn_forms() -> None:
    assert v.is_iqn("iqn.2016-02.com.smartx:system:t1")
    assert v.is_iqn("iqn.1993-08.org.debian:01:abcdef")
    assert v.is_iqn("eui.0123456789ABCDEF") and v.is_iqn("naa.60014055f2b5e3b1a8c9d0e1f2a3b4c5")
    for bad in ("iqn.16-02.com.x", "IQN.2016-02.com.x", "iqn.2016-02.com.x:a b", "eui.123", "", "iqn." + "a" * 300):
        assert not v.is_iqn(bad), bad


@pytest.mark.parametrize(
    ("value", "ok"),
    [("*/*", True), ("", True), ("10.0.0.1", True), ("10.0.0.0/8,192.168.1.0/24", True), ("fe80::/10", True),
     ("10.0.0.300", False), ("host.example", False), ("*", False)],
)  # fmt: skip
def test_ip_whitelist(value: str, ok: bool) -> None:
    if ok:
        assert v.ip_list(value, "f") == value.replace(" ", "")
    else:
        with pytest.raises(ApiError, match="f:"):
            v.ip_list(value, "f")


def test_sizes_and_units() -> None:
    assert v.lun_size({"assigned_size": 10, "assigned_size_unit": "GB"}, "p") == 10 << 30
    assert v.lun_size({"assigned_size": 64, "assigned_size_unit": "TB"}, "p") == 64 << 40
    assert v.stripe_size({"stripe_size": 4, "stripe_size_unit": "KB"}, "p") == 4096
    for body in ({"assigned_size": 65, "assigned_size_unit": "TB"}, {"assigned_size": 0}, {"assigned_size": True}):
        with pytest.raises(ApiError, match="assigned_size"):
            v.lun_size(body, "p")
    assert v.qos({"bps": 2, "bps_unit": "MBps", "iops": 5}, "p") == {"bps": 2 << 20, "iops": 5}


def test_chap_rules() -> None:
    assert v.chap_secret("abcdefghijkl", "s", lo=12, hi=16)
    for bad in ("abcdefghijk", "a" * 17, "abcdefghijk!", 12345678901234):
        with pytest.raises(ApiError):
            v.chap_secret(bad, "s", lo=12, hi=16)
    assert v.chap_name("iqn.2020-01.io:x-1", "n", max_len=223)
    with pytest.raises(ApiError, match="1-223"):
        v.chap_name("a b", "n", max_len=223)


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:")
    c.executescript(SCHEMA)
    c.execute(
        "INSERT INTO clusters (id, name, ip, version, type, architecture, connect_state)"
        " VALUES ('c', 'c', '', '', 'SMTX_ZBS', 'X86_64', 'CONNECTED')"
    )
    for i, name in enumerate(("t1", "t2")):
        c.execute(
            "INSERT INTO targets (id, cluster_id, local_id, name, iqn_name, description, replica_num,"
            " thin_provision, stripe_num, stripe_size, ip_whitelist, iqn_whitelist, chap_enabled, external_use,"
            " internal, local_created_at)"
            " VALUES (?, 'c', ?, ?, ?, '', 2, 1, 8, 262144, '*/*', '*/*', 0, 0, 0, '')",
            (name, f"u{i}", name, f"iqn:{name}"),
        )
    qos = ", ".join(q for q in LUN.fields if q.startswith(("iops", "bps")) or q == "io_size")
    zeros = ", ".join("0" for q in LUN.fields if q.startswith(("iops", "bps")) or q == "io_size")
    for i in range(1, 7):
        c.execute(
            "INSERT INTO luns (id, target_id, local_id, name, lun_id, assigned_size, replica_num, thin_provision,"
            " stripe_num, stripe_size, allowed_initiators, shared_size, unique_size, snapshot_num, local_created_at,"
            f" {qos})"
            f" VALUES (?, ?, ?, ?, ?, ?, 2, ?, 8, 262144, '*/*', 0, 0, 0, '', {zeros})",
            (f"l{i}", "t1" if i <= 4 else "t2", f"v{i}", f"vol_{i}%", i, i << 20, i % 2),
        )
    return c


def ids(conn: sqlite3.Connection, where: Any) -> list[str]:
    sql = translate(LUN, where)
    return [r[0] for r in conn.execute(f"SELECT luns.id FROM luns WHERE {sql.text} ORDER BY luns.id", sql.params)]


def test_translate_on_sqlite(conn: sqlite3.Connection) -> None:
    assert ids(conn, {"name_contains": "_1%"}) == ["l1"], "LIKE/GLOB wildcards in the operand are literal"
    assert ids(conn, {"name_starts_with": "vol_"}) == [f"l{i}" for i in range(1, 7)]
    assert ids(conn, {"assigned_size_gte": 5 << 20}) == ["l5", "l6"]
    assert ids(conn, {"thin_provision": True, "iscsi_target": {"name": "t1"}}) == ["l1", "l3"]
    assert ids(conn, {"OR": [{"lun_id": 1}, {"lun_id": 6}], "NOT": [{"lun_id": 6}]}) == ["l1"]
    assert ids(conn, {"lun_id_in": []}) == [] and len(ids(conn, {"lun_id_not_in": []})) == 6
    sql = translate(TARGET, {"luns_every": {"assigned_size_gt": 4 << 20}})
    assert [r[0] for r in conn.execute(f"SELECT id FROM targets WHERE {sql.text}", sql.params)] == ["t2"]


def test_translate_refuses_what_it_does_not_know() -> None:
    for where in (
        {"size": 1},
        {"name_like": "x"},
        {"lun_id_contains": "1"},
        {"iscsi_target": {"nope": 1}},
        {"AND": "x"},
    ):
        with pytest.raises(ApiError) as err:
            translate(LUN, where)
        assert err.value.status == 400
    deep: dict[str, Any] = {"name": "x"}
    for _ in range(20):
        deep = {"AND": [deep]}
    with pytest.raises(ApiError, match="deeply"):
        translate(LUN, deep)
    with pytest.raises(ApiError, match="orderBy"):
        parse_query(LUN, {"orderBy": "name_SIDEWAYS"})
