"""Token auth and the task life cycle, on a server with a short token TTL and a slow task queue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from zl_helpers import Api, uid

from zbs_lite.testing import ZbsLiteProcess


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZbsLiteProcess]:
    with ZbsLiteProcess(tmp_path_factory.mktemp("slow"), token_ttl=2, task_delay=1.0, http_port=0) as zl:
        yield zl


def post(zl: ZbsLiteProcess, op: str, body: object, token: str | None = None) -> requests.Response:
    headers = {"Authorization": token} if token is not None else {}
    return requests.post(f"{zl.api_url}/v2/api/{op}", json=body, headers=headers, verify=zl.ca_path, timeout=30)


def test_every_endpoint_but_login_needs_a_valid_token(slow: ZbsLiteProcess) -> None:
    for op in ("get-clusters", "get-iscsi-targets", "create-iscsi-target", "delete-iscsi-lun", "get-tasks"):
        for token in (None, "", "not-a-token"):
            r = post(slow, op, {}, token)
            assert r.status_code == 401, (op, token)
            assert r.json()["status"] == 401 and r.json()["path"] == f"/v2/api/{op}"


def test_login_rejects_wrong_credentials_without_echoing_them(slow: ZbsLiteProcess) -> None:
    r = post(slow, "login", {"username": "admin", "password": "wrong-password-123"})
    assert r.status_code == 401 and "wrong-password-123" not in r.text
    r = post(slow, "login", {"username": slow.username})
    assert r.status_code == 400 and "password" in r.json()["message"]
    r = post(slow, "login", {"username": slow.username, "password": slow.password, "source": "LOCAL"})
    assert r.status_code == 200 and r.json()["task_id"] is None


def test_tokens_expire_after_the_ttl(slow: ZbsLiteProcess) -> None:
    token = slow.login()
    assert post(slow, "get-clusters", {}, token).status_code == 200
    time.sleep(2.5)
    r = post(slow, "get-clusters", {}, token)
    assert r.status_code == 401 and "expired" in r.json()["message"]
    assert post(slow, "get-clusters", {}, slow.login()).status_code == 200


def test_plain_http_port_serves_the_same_api(slow: ZbsLiteProcess) -> None:
    assert slow.http_url
    token = slow.login()
    r = requests.post(f"{slow.http_url}/v2/api/get-clusters", json={}, headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200 and r.json()[0]["id"] == slow.cluster_id()


def test_tasks_run_asynchronously_and_resources_show_their_state(slow: ZbsLiteProcess) -> None:
    api = Api(slow)
    name = uid("t")
    out = api.ok(
        "create-iscsi-target",
        [{"name": name, "cluster_id": slow.cluster_id(), "replica_num": 2, "thin_provision": True}],
    )
    assert out[0]["data"]["entityAsyncStatus"] == "CREATING"
    task_id = out[0]["task_id"]
    task = api.ok("get-tasks", {"where": {"id": task_id}})[0]
    assert task["status"] in ("PENDING", "EXECUTING") and task["resource_id"] == out[0]["data"]["id"]
    (done,) = slow.wait_tasks([task_id])
    assert done["status"] == "SUCCESSED" and done["progress"] == 1 and done["finished_at"]
    t = api.ok("get-iscsi-targets", {"where": {"name": name}})[0]
    assert t["entityAsyncStatus"] is None

    lun = api.ok(
        "create-iscsi-lun", [{"name": "l1", "iscsi_target_id": t["id"], "assigned_size": 1 << 20, "replica_num": 2}]
    )
    assert lun[0]["data"]["entityAsyncStatus"] == "CREATING"
    upd = api.ok("update-iscsi-lun", {"where": {"id": lun[0]["data"]["id"]}, "data": {"assigned_size": 2 << 20}})
    assert upd[0]["data"]["entityAsyncStatus"] == "UPDATING" and upd[0]["data"]["assigned_size"] == 2 << 20
    slow.wait_tasks([lun[0]["task_id"], upd[0]["task_id"]])
    row = api.get_lun(lun[0]["data"]["id"])
    assert row["entityAsyncStatus"] is None
    assert (slow.pool_path / "luns" / row["local_id"]).stat().st_size == 2 << 20
    dele = api.ok("delete-iscsi-lun", {"where": {"id": row["id"]}})
    assert dele == [{"task_id": dele[0]["task_id"], "data": {"id": row["id"]}}]
    assert api.get_lun(row["id"])["entityAsyncStatus"] == "DELETING"
    again = api.ok("delete-iscsi-lun", {"where": {"id": row["id"]}})
    assert again[0]["task_id"] == dele[0]["task_id"], "a repeated delete joins the pending one"
    slow.wait_tasks([dele[0]["task_id"]])
    assert api.ok("get-iscsi-luns", {"where": {"id": row["id"]}}) == []
    assert not (slow.pool_path / "luns" / row["local_id"]).exists()


def test_a_failing_task_is_reported_and_rolled_back(zbs_lite: ZbsLiteProcess) -> None:
    api = Api(zbs_lite)
    t = api.target()
    # A thick 60 TiB LUN cannot be allocated here (ext4 caps files at 16 TiB; a pool has far less space).
    out = api.ok(
        "create-iscsi-lun",
        [{"name": "huge", "iscsi_target_id": t["id"], "assigned_size": 60, "assigned_size_unit": "TB",
          "replica_num": 2, "thin_provision": False}],
    )  # fmt: skip
    (task,) = zbs_lite.wait_tasks([out[0]["task_id"]])
    assert task["status"] == "FAILED" and task["error_code"].startswith("ZBS_") and "huge" in task["error_message"]
    assert api.ok("get-iscsi-luns", {"where": {"id": out[0]["data"]["id"]}}) == []
    assert list(Path(zbs_lite.pool_path, "tmp").iterdir()) == []
    failed = api.ok("get-tasks", {"where": {"AND": [{"id": task["id"]}, {"status": "FAILED"}]}})
    assert len(failed) == 1
