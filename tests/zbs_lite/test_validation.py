"""Every rule of zbs-api.md and every kind of malformed input: a 400 naming the field, never a 500."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import requests
from zl_helpers import Api, uid

from zbs_lite.testing import ZbsLiteProcess


@pytest.fixture(scope="module")
def objs(zbs_lite: ZbsLiteProcess) -> dict[str, Any]:
    api = Api(zbs_lite)
    t = api.target()
    lun = api.lun(t["id"], size=8 << 20)
    snap = api.snapshot(lun)
    return {"cluster": api.cluster_id(), "target": t, "lun": lun, "snap": snap}


def target_body(objs: dict[str, Any], **over: Any) -> list[dict[str, Any]]:
    body = {"name": uid("t"), "cluster_id": objs["cluster"], "replica_num": 2, "thin_provision": True, **over}
    return [{k: v for k, v in body.items() if v is not ...}]


def lun_body(objs: dict[str, Any], **over: Any) -> list[dict[str, Any]]:
    body = {
        "name": uid("l"),
        "iscsi_target_id": objs["target"]["id"],
        "assigned_size": 1 << 20,
        "replica_num": 2,
        **over,
    }
    return [{k: v for k, v in body.items() if v is not ...}]


TARGET_CASES = [
    ({"name": "bad name"}, "name"),
    ({"name": "../etc"}, "name"),
    ({"name": "-lead"}, "name"),
    ({"name": "x" * 200}, "name"),
    ({"name": "na\u00efve"}, "name"),
    ({"name": 5}, "name"),
    ({"name": ...}, "name"),
    ({"replica_num": 4}, "replica_num"),
    ({"replica_num": "2"}, "replica_num"),
    ({"replica_num": True}, "replica_num"),
    ({"stripe_num": 3}, "stripe_num"),
    ({"stripe_size": 3000}, "stripe_size"),
    ({"stripe_size": 512, "stripe_size_unit": "KB"}, "stripe_size"),
    ({"stripe_size": 1, "stripe_size_unit": "XB"}, "stripe_size_unit"),
    ({"chap_enabled": True}, "chap_name"),
    ({"chap_enabled": True, "chap_name": "user", "chap_secret": "short"}, "chap_secret"),
    ({"chap_enabled": True, "chap_name": "user", "chap_secret": "a" * 17}, "chap_secret"),
    ({"chap_enabled": True, "chap_name": "bad name!", "chap_secret": "abcdefghijkl"}, "chap_name"),
    ({"chap_enabled": True, "chap_name": "u" * 224, "chap_secret": "abcdefghijkl"}, "chap_name"),
    (
        {"initiator_chaps": [{"initiator_iqn": "nope", "chap_name": "a", "chap_secret": "abcdefghijkl"}]},
        "initiator_iqn",
    ),
    (
        {"initiator_chaps": [{"initiator_iqn": "iqn.2020-01.io.x:a", "chap_name": "a", "chap_secret": "x" * 11}]},
        "chap_secret",
    ),
    ({"initiator_chaps": "x"}, "initiator_chaps"),
    ({"ip_whitelist": "10.0.0.0/33"}, "ip_whitelist"),
    ({"iqn_whitelist": "iqn.bad"}, "iqn_whitelist"),
    ({"iops": -1}, "iops"),
    ({"bps": 2**63}, "bps"),
    ({"bps": 2**62, "bps_unit": "TBps"}, "bps"),
    ({"cluster_id": "nope"}, "cluster_id"),
    ({"surprise": 1}, "surprise"),
    ({"thin_provision": "yes"}, "thin_provision"),
]


@pytest.mark.parametrize(("over", "field"), TARGET_CASES)
def test_create_target_rules(api: Api, objs: dict[str, Any], over: dict[str, Any], field: str) -> None:
    status = 404 if field == "cluster_id" else 400
    msg = api.err("create-iscsi-target", target_body(objs, **over), status)
    assert field in msg


LUN_CASES = [
    ({"name": "a/b"}, "name"),
    ({"name": ".."}, "name"),
    ({"name": " lead"}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"name": "\u4e2d\u6587"}, "name"),
    ({"assigned_size": 0}, "assigned_size"),
    ({"assigned_size": -5}, "assigned_size"),
    ({"assigned_size": 65, "assigned_size_unit": "TB"}, "assigned_size"),
    ({"assigned_size": 2**70}, "assigned_size"),
    ({"assigned_size": 1.5}, "assigned_size"),
    ({"assigned_size": 1, "assigned_size_unit": "GiB"}, "assigned_size_unit"),
    ({"lun_id": 0}, "lun_id"),
    ({"lun_id": 256}, "lun_id"),
    ({"replica_num": 0}, "replica_num"),
    ({"allowed_initiators": "iqn.bad"}, "allowed_initiators"),
    ({"allowed_initiators": "iqn.2020-01.io.x:a,iqn.2020-01.io.x:a"}, "allowed_initiators"),
    ({"thin_provision": 1}, "thin_provision"),
    ({"stripe_num": 4}, "stripe_num"),
    ({"iscsi_target_id": 7}, "iscsi_target_id"),
]


@pytest.mark.parametrize(("over", "field"), LUN_CASES)
def test_create_lun_rules(api: Api, objs: dict[str, Any], over: dict[str, Any], field: str) -> None:
    assert field in api.err("create-iscsi-lun", lun_body(objs, **over))


@pytest.mark.parametrize("size", [1, 100, 511, 513, 1000, (1 << 20) + 1])
def test_lun_sizes_are_whole_512_byte_blocks(api: Api, objs: dict[str, Any], size: int) -> None:
    """Finding 6: a 1-511 byte LUN has no block to report; READ CAPACITY broke and sessions looped."""
    assert "whole number of 512-byte blocks" in api.err("create-iscsi-lun", lun_body(objs, assigned_size=size))
    update = {"where": {"id": objs["lun"]["id"]}, "data": {"assigned_size": objs["lun"]["assigned_size"] + size}}
    assert "whole number of 512-byte blocks" in api.err("update-iscsi-lun", update)


def test_the_smallest_lun_is_one_block_and_serves_it(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    if shutil.which("iscsi-readcapacity16") is None:
        pytest.skip("needs libiscsi-bin (scripts/setup.sh installs it)")
    t = api.target()
    lun = api.lun(t["id"], size=512)
    assert api.lun(t["id"], size=1, assigned_size_unit="KB")["assigned_size"] == 1024
    host, port = zbs_lite.vip
    url = f"iscsi://{host}:{port}/{t['iqn_name']}/{lun['lun_id']}"
    r = subprocess.run(
        ["iscsi-readcapacity16", "-i", "iqn.2020-01.io.test:tiny", url], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"^RETURNED LOGICAL BLOCK ADDRESS:0$", r.stdout, re.MULTILINE), r.stdout
    assert re.search(r"^Total size:512$", r.stdout, re.MULTILINE), r.stdout


def test_unknown_target_is_404(api: Api, objs: dict[str, Any]) -> None:
    assert "not found" in api.err("create-iscsi-lun", lun_body(objs, iscsi_target_id="cnothere"), 404)


def test_lun_names_and_ids_are_unique_per_target(api: Api, objs: dict[str, Any]) -> None:
    lun = objs["lun"]
    assert "name" in api.err("create-iscsi-lun", lun_body(objs, name=lun["name"]))
    assert "lun_id" in api.err("create-iscsi-lun", lun_body(objs, lun_id=lun["lun_id"]))
    assert "target" in api.err("create-iscsi-target", target_body(objs, name=objs["target"]["name"].upper()))


def test_a_batch_is_all_or_nothing(api: Api, objs: dict[str, Any]) -> None:
    good, bad = lun_body(objs)[0], lun_body(objs, lun_id=999)[0]
    assert "[1].lun_id" in api.err("create-iscsi-lun", [good, bad])
    assert api.ok("get-iscsi-luns", {"where": {"name": good["name"]}}) == []


def test_luns_only_grow_and_replicas_only_go_up(api: Api, objs: dict[str, Any]) -> None:
    lun = objs["lun"]
    where = {"id": lun["id"]}
    assert "grow" in api.err("update-iscsi-lun", {"where": where, "data": {"assigned_size": 1 << 20}})
    t = api.target(replica_num=3)
    assert "replica_num" in api.err("update-iscsi-target", {"where": {"id": t["id"]}, "data": {"replica_num": 2}})
    assert "unknown field" in api.err("update-iscsi-lun", {"where": where, "data": {"lun_id": 9}})
    assert "where" in api.err("update-iscsi-lun", {"data": {"assigned_size": 1 << 30}})


def test_deletes_refuse_what_would_lose_data(api: Api, objs: dict[str, Any]) -> None:
    msg = api.err("delete-iscsi-target", {"where": {"id": objs["target"]["id"]}})
    assert "LUN" in msg and objs["target"]["name"] in msg
    msg = api.err("delete-iscsi-lun", {"where": {"id": objs["lun"]["id"]}, "data": {"remove_snapshot": False}})
    assert "remove_snapshot" in msg
    assert "remove_snapshot" in api.err("delete-iscsi-lun", {"where": {"id": objs["lun"]["id"]}})
    assert api.get_lun(objs["lun"]["id"])["entityAsyncStatus"] is None


def test_limit_of_255_luns_per_target(api: Api, objs: dict[str, Any]) -> None:
    t = api.target()
    body = [{"name": f"l{i}", "iscsi_target_id": t["id"], "assigned_size": 4096, "replica_num": 2} for i in range(255)]
    api.mutate("create-iscsi-lun", body)
    msg = api.err("create-iscsi-lun", lun_body({**objs, "target": t}))
    assert "255" in msg
    assert api.ok("get-iscsi-luns-connection", {"where": {"iscsi_target": {"id": t["id"]}}}) == {
        "aggregate": {"count": 255}
    }
    api.mutate("delete-iscsi-lun", {"where": {"iscsi_target": {"id": t["id"]}}})
    api.mutate("delete-iscsi-target", {"where": {"id": t["id"]}})


def test_snapshot_rules(api: Api, objs: dict[str, Any]) -> None:
    lun, t = objs["lun"], objs["target"]
    other = api.target()
    body = {"iscsi_lun_id": lun["id"], "iscsi_target_id": other["id"], "name": "s"}
    assert "iscsi_target_id" in api.err("create-iscsi-lun-snapshot", [body])
    body = {"iscsi_lun_id": lun["id"], "iscsi_target_id": t["id"], "name": objs["snap"]["name"]}
    assert "name" in api.err("create-iscsi-lun-snapshot", [body])
    assert "name" in api.err(
        "clone-iscsi-lun-from-snapshot",
        [{"snapshot_id": objs["snap"]["id"], "iscsi_target_id": t["id"], "name": lun["name"]}],
    )
    assert "not found" in api.err(
        "rollback-iscsi-lun-from-snapshot", [{"lun_id": lun["id"], "snapshot_id": "cnope"}], 404
    )


RAW_CASES = [
    (b"{not json", "malformed JSON"),
    (b"[" * 100000 + b"]" * 100000, ""),
    (b'"a string"', "object"),
    (b"\xff\xfe", "malformed"),
    (b'{"where": {"name_regex": "x"}}', "name_regex"),
    (b'{"where": {"name_in": "x"}}', "name_in"),
    (b'{"where": {"lun_id_gt": "x"}}', "lun_id_gt"),
    (b'{"where": {"thin_provision_lt": true}}', "thin_provision_lt"),
    (b'{"where": {"OR": 5}}', "OR"),
    (b'{"first": -1}', "first"),
    (b'{"first": 99999999999}', "first"),
    (b'{"orderBy": "secret_ASC"}', "orderBy"),
    (b'{"orderBy": 3}', "orderBy"),
    (b'{"after": "cnosuchid"}', "after"),
    (b'{"last": 3}', "last"),
    (b'{"bogus": 1}', "bogus"),
]


@pytest.mark.parametrize(("raw", "needle"), RAW_CASES)
def test_malformed_queries_are_400(zbs_lite: ZbsLiteProcess, raw: bytes, needle: str) -> None:
    token = zbs_lite.login()
    r = requests.post(
        f"{zbs_lite.api_url}/v2/api/get-iscsi-luns", data=raw, headers={"Authorization": token},
        verify=zbs_lite.ca_path, timeout=60,
    )  # fmt: skip
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == 400 and needle in body["message"] and "Traceback" not in r.text


def test_mutation_bodies_of_the_wrong_shape(api: Api) -> None:
    for op in ("create-iscsi-target", "create-iscsi-lun", "copy-iscsi-lun", "create-iscsi-lun-snapshot"):
        for body in (None, {}, [1], "x", [{"name": None}]):
            status, data = api.call(op, body)
            assert status == 400, (op, body, data)
    for op in ("delete-iscsi-target", "update-iscsi-lun", "delete-iscsi-lun-snapshot"):
        for body in (None, [], {"where": 1}, {"where": {"nope": 1}, "data": {}}):
            status, data = api.call(op, body)
            assert status == 400, (op, body, data)
