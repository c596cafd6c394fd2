"""The HTTPS front against sloppy and hostile clients (issue #11, findings 5 and the fidelity items).

Nothing runs from half a body; every answer, whatever went wrong, is a JSON ErrorBody with a
stable ``code`` and an ``x-tower-request-id`` that the request's log line repeats.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from zl_helpers import Api, uid

from zbs_lite.testing import ZbsLiteProcess

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _connect(zl: ZbsLiteProcess, *, plain: bool = False) -> socket.socket:
    url = urlsplit(zl.http_url if plain else zl.api_url)
    assert url.hostname and url.port
    sock = socket.create_connection((url.hostname, url.port), 30)
    if plain:
        return sock
    ctx = ssl.create_default_context(cafile=zl.ca_path)
    return ctx.wrap_socket(sock, server_hostname=url.hostname)


def raw(zl: ZbsLiteProcess, data: bytes, *, plain: bool = False) -> tuple[int, http.client.HTTPMessage, Any]:
    """Send ``data`` as-is and read one answer; over plain HTTP our sending side is closed after it
    (TLS has no half-close: a client that stops sending there is gone)."""
    sock = _connect(zl, plain=plain)
    try:
        sock.sendall(data)
        if plain:
            sock.shutdown(socket.SHUT_WR)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        return resp.status, resp.headers, json.loads(body) if body else None
    finally:
        sock.close()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZbsLiteProcess]:
    """A server with its plain-HTTP port too: only there can a client stop sending and still read."""
    with ZbsLiteProcess(tmp_path_factory.mktemp("plain"), http_port=0, task_delay=0.01) as zl:
        yield zl


def post_head(op: str, token: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST /v2/api/{op} HTTP/1.1\r\nHost: zbs\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def lun_request(target_id: str, name: str) -> bytes:
    return json.dumps(
        [{"name": name, "iscsi_target_id": target_id, "assigned_size": 1 << 20, "replica_num": 2}]
    ).encode()


def test_a_body_shorter_than_its_content_length_is_never_executed(plain: ZbsLiteProcess) -> None:
    """Finding 5: complete JSON or cut JSON, the client told why, or gone: no LUN either way."""
    api = Api(plain)
    t = api.target()
    token = plain.login()
    names = [uid("trunc") for _ in range(5)]
    whole = lun_request(t["id"], names[0])
    status, headers, body = raw(plain, post_head("create-iscsi-lun", token, len(whole) + 1) + whole, plain=True)
    assert status == 400 and body["code"] == "MalformedRequest", body
    assert "nothing was executed" in body["message"] and UUID.fullmatch(headers["x-tower-request-id"])
    whole = lun_request(t["id"], names[1])
    status, _, body = raw(plain, post_head("create-iscsi-lun", token, len(whole) + 4096) + whole, plain=True)
    assert status == 400 and f"{len(whole)} of the {len(whole) + 4096} bytes" in body["message"]
    cut = lun_request(t["id"], names[2])
    status, _, body = raw(plain, post_head("create-iscsi-lun", token, len(cut)) + cut[: len(cut) // 2], plain=True)
    assert status == 400 and body["code"] == "MalformedRequest"
    for name, use_tls in ((names[3], True), (names[4], False)):  # the client sends and vanishes
        whole = lun_request(t["id"], name)
        gone = _connect(plain, plain=not use_tls)
        gone.sendall(post_head("create-iscsi-lun", token, len(whole) + 1) + whole)
        gone.close()
    time.sleep(1.0)  # the server saw each EOF long before this; a LUN would exist by now
    for name in names:
        assert api.ok("get-iscsi-luns", {"where": {"name": name}}) == [], f"{name} was created from a truncated body"
    whole = lun_request(t["id"], uid("whole"))
    status, _, body = raw(plain, post_head("create-iscsi-lun", token, len(whole)) + whole)
    assert status == 200 and body[0]["data"]["entityAsyncStatus"] == "CREATING", "the same request, complete, runs"


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"", "required"),
        (b"  \n", "required"),
        (b"null", "got NoneType"),
        (b"5", "got int"),
        (b'{"first": NaN}', "NaN"),
    ],
)
def test_a_body_is_required_and_is_an_object_or_array(zbs_lite: ZbsLiteProcess, payload: bytes, needle: str) -> None:
    token = zbs_lite.login()
    status, _, body = raw(zbs_lite, post_head("get-iscsi-luns", token, len(payload)) + payload)
    assert status == 400 and body["code"] == "MalformedRequest" and needle in body["message"], body


def test_chunked_bodies_are_read_whole_or_not_run(plain: ZbsLiteProcess) -> None:
    api = Api(plain)
    t = api.target()
    token = plain.login()
    name = uid("chunked")
    body = lun_request(t["id"], name)
    r = requests.post(
        f"{plain.api_url}/v2/api/create-iscsi-lun", data=(body[i : i + 7] for i in range(0, len(body), 7)),
        headers={"Authorization": token}, verify=plain.ca_path, timeout=30,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()[0]["data"]["name"] == name
    head = post_head("create-iscsi-lun", token, 0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    cut = uid("cut")
    body = lun_request(t["id"], cut)
    status, _, answer = raw(plain, head + b"%x\r\n" % len(body) + body + b"\r\n", plain=True)  # no last chunk
    assert status == 400 and "nothing was executed" in answer["message"]
    assert api.ok("get-iscsi-luns", {"where": {"name": cut}}) == []
    head = head.replace(b"chunked", b"gzip, chunked")
    status, _, answer = raw(plain, head + b"0\r\n\r\n", plain=True)
    assert status == 501 and answer["code"] == "MalformedRequest"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_every_other_method_gets_a_json_405_with_allow(zbs_lite: ZbsLiteProcess, method: str) -> None:
    r = requests.request(method, f"{zbs_lite.api_url}/v2/api/get-iscsi-luns", verify=zbs_lite.ca_path, timeout=30)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert r.headers["Content-Type"] == "application/json" and UUID.fullmatch(r.headers["x-tower-request-id"])
    body = r.json()
    assert body["code"] == "MethodNotAllowed" and body["status"] == 405 and body["path"] == "/v2/api/get-iscsi-luns"
    outside = requests.request(method, f"{zbs_lite.api_url}/index.html", verify=zbs_lite.ca_path, timeout=30)
    assert outside.status_code == 404 and outside.json()["code"] == "OperationNotFound"


def test_head_gets_the_headers_of_a_405_and_no_body(zbs_lite: ZbsLiteProcess) -> None:
    r = requests.head(f"{zbs_lite.api_url}/v2/api/get-iscsi-luns", verify=zbs_lite.ca_path, timeout=30)
    assert r.status_code == 405 and r.headers["Allow"] == "POST" and r.content == b""


@pytest.mark.parametrize(
    ("request_line", "status"), [(b"NONSENSE\r\n\r\n", 400), (b"POST /v2/api/login HTTP/2.0\r\n\r\n", 505)]
)
def test_a_broken_request_line_gets_json_too(zbs_lite: ZbsLiteProcess, request_line: bytes, status: int) -> None:
    got, headers, body = raw(zbs_lite, request_line)
    assert got == status and body["code"] == "MalformedRequest" and "x-tower-request-id" in headers


def test_error_codes_are_stable_per_kind(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    t = api.target()
    cases: list[tuple[str, Any, int, str]] = [
        ("get-iscsi-luns", {"where": {"size": 1}}, 400, "InvalidInput"),
        ("get-iscsi-luns", {"where": {"OR": [{"name": str(i)} for i in range(300)]}}, 400, "LimitExceeded"),
        ("create-iscsi-lun", [{}] * 1001, 400, "LimitExceeded"),
        ("create-iscsi-target", [{"name": t["name"], "cluster_id": api.cluster_id(), "replica_num": 2,
                                  "thin_provision": True}], 400, "AlreadyExists"),
        ("rollback-iscsi-lun-from-snapshot", [{"lun_id": "cnope", "snapshot_id": "cnope"}], 404, "ResourceNotFound"),
        ("get-volumes", {}, 404, "OperationNotFound"),
    ]  # fmt: skip
    for op, body, status, code in cases:
        got, data = api.call(op, body)
        assert (got, data.get("code")) == (status, code), (op, data)
    got, data = api.call("get-iscsi-luns", {}, token="not-a-token")
    assert (got, data["code"]) == (401, "Unauthenticated")


def test_the_request_id_is_in_the_log_line_of_its_request(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    """A user holding an answer finds its line in zbs-lite's log (errors and changes log at INFO)."""
    r1 = requests.post(
        f"{zbs_lite.api_url}/v2/api/get-iscsi-luns", json={"where": {"bogus": 1}},
        headers={"Authorization": zbs_lite.login()}, verify=zbs_lite.ca_path, timeout=30,
    )  # fmt: skip
    r2 = requests.post(f"{zbs_lite.api_url}/v2/api/get-tasks", json={}, verify=zbs_lite.ca_path, timeout=30)
    ids = [r1.headers["x-tower-request-id"], r2.headers["x-tower-request-id"]]
    assert all(UUID.fullmatch(i) for i in ids) and len(set(ids)) == 2
    deadline = time.monotonic() + 10
    while not all(i in zbs_lite.log_tail(200_000) for i in ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in zbs_lite.log_tail(200_000).splitlines() if any(i in line for i in ids)]
    assert len(lines) == 2, lines
    assert "get-iscsi-luns -> 400" in lines[0] and "get-tasks -> 401" in lines[1]
