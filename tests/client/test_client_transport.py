"""Transport rules: host forms, token use, retry only what is safe, typed errors, no secrets.

Runs against :mod:`client_scripted_api` (a real local HTTP socket with scripted answers) because
zbs-lite cannot be asked to fail with a 503 or hang on purpose; everything the real API does
is tested against zbs-lite in test_client_live.py.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import Secret, ZbsClient, base_url
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import (
    ZbsApiError,
    ZbsAuthError,
    ZbsConnectionError,
    ZbsNotFound,
    ZbsTaskFailed,
    ZbsTaskTimeout,
    ZbsValidationError,
)
from client_scripted_api import ScriptedApi

CHAP = "ChapSecret1234"


@pytest.fixture
def api():
    server = ScriptedApi()
    yield server
    server.close()


def make_client(api: ScriptedApi, **kw) -> ZbsClient:
    kw.setdefault("retries", 2)
    return ZbsClient(api.url, "admin", api.password, **kw)


def ok_list(items):
    return lambda body, headers: (200, items)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("tower", "https://tower/v2/api"),
        ("tower:8443", "https://tower:8443/v2/api"),
        ("https://tower:8443", "https://tower:8443/v2/api"),
        ("https://tower:8443/", "https://tower:8443/v2/api"),
        ("http://127.0.0.1:80/v2/api", "http://127.0.0.1:80/v2/api"),
        ("[::1]:8443", "https://[::1]:8443/v2/api"),
        ("10.0.0.5", "https://10.0.0.5/v2/api"),
    ],
)
def test_host_forms(host, url):
    assert base_url(host) == url


@pytest.mark.parametrize("host", ["", "ftp://x", "https://u:p@x", "x:notaport", "https://x/?q=1", "https://"])
def test_bad_hosts_are_refused_without_echoing_credentials(host):
    with pytest.raises(ZbsValidationError) as err:
        ZbsClient(host, "admin", "pw")
    assert err.value.field == "host"
    assert "u:p" not in str(err.value)


def test_token_sent_as_is_and_login_once(api):
    api.handlers["get-clusters"] = lambda b, h: (200, [{"id": "c1", "name": "c"}]) if api.authed(h) else (401, {})
    client = make_client(api)
    assert client.clusters.list() == [{"id": "c1", "name": "c"}]
    assert client.clusters.list() == [{"id": "c1", "name": "c"}]
    assert api.ops() == ["login", "get-clusters", "get-clusters"]
    login = api.seen[0]
    assert login.body == {"username": "admin", "password": api.password, "source": "LOCAL"}
    assert api.seen[1].headers["Authorization"] == api.token  # no "Bearer"
    assert api.seen[1].body == {"first": 100}
    assert client.stats["get-clusters"] == 2 and client.stats.total == 3


def test_expired_token_relogs_in_once(api):
    issued = iter(["tok-old-aaaaaaaaaaaa", "tok-new-bbbbbbbbbbbb"])

    def login(body, headers):
        api.token = next(issued)
        return 200, {"task_id": None, "data": {"token": api.token}}

    def clusters(body, headers):
        if api.authed(headers):
            return 200, []
        return 401, {"message": "token expired", "status": 401, "path": "/get-clusters"}

    api.handlers.update({"login": login, "get-clusters": clusters})
    client = make_client(api)
    assert client.clusters.list() == []
    api.token = "revoked"  # the server forgets the first token, as after its TTL
    assert client.clusters.list() == []
    assert api.ops() == ["login", "get-clusters", "get-clusters", "login", "get-clusters"]
    assert api.seen[-1].headers["Authorization"] == "tok-new-bbbbbbbbbbbb"


def test_token_refused_after_fresh_login_raises_auth_error_without_looping(api):
    api.handlers["get-clusters"] = lambda b, h: (401, {"message": "token refused", "status": 401, "path": "/x"})
    client = make_client(api)
    with pytest.raises(ZbsAuthError) as err:
        client.clusters.list()
    assert err.value.status == 401
    assert api.ops() == ["login", "get-clusters", "login", "get-clusters"]


def test_wrong_password_is_an_auth_error_without_the_password(api, caplog):
    caplog.set_level(logging.DEBUG)
    client = ZbsClient(api.url, "admin", "Wr0ngPassw0rdValue")
    with pytest.raises(ZbsAuthError) as err:
        client.login()
    assert str(err.value) == "login user 'admin': invalid username or password (HTTP 401)"
    for text in (str(err.value), repr(err.value), repr(client), caplog.text):
        assert "Wr0ngPassw0rdValue" not in text
    assert api.ops() == ["login"]  # a refused login is never retried


def test_reads_are_retried_on_5xx_mutations_are_not(api):
    calls = {"get": 0}

    def flaky_get(body, headers):
        calls["get"] += 1
        if calls["get"] < 3:
            return 503, {"message": "busy", "status": 503, "path": "/get-iscsi-targets"}
        return 200, []

    api.handlers["get-iscsi-targets"] = flaky_get
    api.handlers["create-iscsi-lun"] = lambda b, h: (500, {"message": "internal", "status": 500, "path": "/x"})
    client = make_client(api)
    assert client.targets.list() == []
    assert calls["get"] == 3
    with pytest.raises(ZbsApiError) as err:
        client.mutate("create-iscsi-lun", [{"name": "v"}], what="lun 'v'")
    assert err.value.status == 500
    assert api.ops().count("create-iscsi-lun") == 1


def test_reads_give_up_after_the_retry_budget(api):
    api.handlers["get-iscsi-luns"] = lambda b, h: (502, b"<html>bad gateway</html>")
    client = make_client(api, retries=2)
    with pytest.raises(ZbsApiError) as err:
        client.luns.list()
    assert err.value.status == 502 and "bad gateway" in err.value.message
    assert api.ops().count("get-iscsi-luns") == 3


def test_a_mutation_whose_answer_never_came_is_not_resent(api):
    """A timed-out create may have happened: re-sending it could create a second LUN."""
    release = threading.Event()

    def hang(body, headers):
        release.wait(5)
        return 200, []

    api.handlers["create-iscsi-lun"] = hang
    client = make_client(api, timeout=0.3, retries=2)
    try:
        with pytest.raises(ZbsConnectionError) as err:
            client.mutate("create-iscsi-lun", [{"name": "v"}], what="lun 'v'")
        assert "may or may not have been applied" in str(err.value) or "no answer within" in str(err.value)
        assert api.ops().count("create-iscsi-lun") == 1
    finally:
        release.set()


class SilentServer:
    """Accepts TCP connections and never answers: the API that costs a user minutes per task."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.mark.parametrize("op", ["get-iscsi-luns", "create-iscsi-lun"])
def test_an_api_that_accepts_and_never_answers_is_given_up_after_one_read_timeout(op):
    """Retrying a hung API only multiplies the wait (it used to be 4 x 30 s per task)."""
    server = SilentServer()
    try:
        client = ZbsClient(f"http://127.0.0.1:{server.port}", "admin", "pw", retries=3, timeout=0.3)
        client._token = Secret("tok-already-logged-in")
        with pytest.raises(ZbsConnectionError) as err:
            client.request(op, {})
        assert "sent no answer within 0.3s (timeout)" in str(err.value)
        assert "not retried" in str(err.value)
        assert client.stats[op] == 1 and len(server.accepted) == 1
    finally:
        server.close()


def test_a_host_name_that_does_not_resolve_is_not_retried():
    client = ZbsClient("https://zbs-api.does-not-exist.invalid", "admin", "pw", retries=3)
    with pytest.raises(ZbsConnectionError) as err:
        client.clusters.list()
    assert "'zbs-api.does-not-exist.invalid'" in str(err.value) and "does not resolve" in str(err.value)
    assert client.stats["login"] == 1


def test_connect_and_read_timeouts_are_separate_and_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("ZBS_HOST", "zbs.example.com")
    monkeypatch.setenv("ZBS_USERNAME", "admin")
    monkeypatch.setenv("ZBS_PASSWORD", "pw")
    monkeypatch.setenv("ZBS_TIMEOUT", "45")
    monkeypatch.setenv("ZBS_CONNECT_TIMEOUT", "3")
    client = ZbsClient.from_env()
    assert (client.connect_timeout, client.timeout) == (3.0, 45.0)
    assert ZbsClient("h", "u", "p").connect_timeout == 10.0
    with pytest.raises(ZbsValidationError) as err:
        ZbsClient("h", "u", "p", connect_timeout=0)
    assert err.value.field == "connect_timeout"


def test_unreachable_api_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ZbsClient(f"http://127.0.0.1:{port}", "admin", "pw", retries=1, timeout=2)
    with pytest.raises(ZbsConnectionError) as err:
        client.clusters.list()
    assert err.value.operation == "login"
    assert client.stats["login"] == 2


def test_a_refused_connection_is_retried_even_for_a_mutation():
    """Nothing reached the server, so sending the create again cannot create twice."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ZbsClient(f"http://127.0.0.1:{port}", "admin", "pw", retries=2, timeout=2)
    client._token = Secret("tok-already-logged-in")
    with pytest.raises(ZbsConnectionError) as err:
        client.mutate("create-iscsi-lun", [{"name": "v"}], what="lun 'v'")
    assert "after 3 attempt(s)" in str(err.value)
    assert client.stats.by_op == {"create-iscsi-lun": 3}


def test_error_body_is_kept_and_typed(api):
    api.handlers["get-iscsi-luns"] = lambda b, h: (
        404,
        {"message": "cluster not found", "status": 404, "path": "/get-iscsi-luns", "code": "ResourceLocked"},
    )
    api.handlers["delete-iscsi-target"] = lambda b, h: (
        400,
        {"message": "target still has 2 LUNs", "status": 400, "path": "/delete-iscsi-target", "props": {"luns": 2}},
    )
    client = make_client(api)
    with pytest.raises(ZbsNotFound) as nf:
        client.luns.list()
    assert (nf.value.status, nf.value.path, nf.value.code) == (404, "/get-iscsi-luns", "ResourceLocked")
    with pytest.raises(ZbsApiError) as err:
        client.targets.delete("tgt1")
    assert str(err.value) == "delete-iscsi-target target id=tgt1: target still has 2 LUNs (HTTP 400)"
    assert err.value.props == {"luns": 2}
    assert err.value.to_dict()["status"] == 400


def test_secrets_never_in_errors_reprs_or_logs(api, caplog):
    """The API echoes what it got (some do): the client must scrub it."""
    caplog.set_level(logging.DEBUG)

    def echo(body, headers):
        return 400, {
            "message": f"bad request {body} auth={headers.get('Authorization')} pw={api.password}",
            "status": 400,
            "path": "/create-iscsi-target",
            "props": {"echo": body},
        }

    api.handlers["create-iscsi-target"] = echo
    api.handlers["get-tasks"] = lambda b, h: (
        200,
        [{"id": "t1", "status": "FAILED", "error_code": "E", "error_message": f"chap {CHAP} rejected"}],
    )
    api.handlers["update-iscsi-target"] = lambda b, h: (200, [{"task_id": "t1", "data": {"id": "tg1"}}])
    client = make_client(api)
    errors = []
    with pytest.raises(ZbsApiError) as err:
        client.targets.create("t1", cluster_id="c1", chap_enabled=True, chap_name="user", chap_secret=CHAP)
    errors.append(err.value)
    with pytest.raises(ZbsTaskFailed) as failed:
        client.targets.update("tg1", chap_secret=CHAP, chap_name="user")
    errors.append(failed.value)
    assert "failed: chap ******** rejected [E]" in str(failed.value)
    for e in errors:
        for text in (str(e), repr(e), repr(e.to_dict()), repr(getattr(e, "props", None))):
            for secret in (api.password, api.token, CHAP):
                assert secret not in text, (secret, text)
    for secret in (api.password, api.token, CHAP):
        assert secret not in caplog.text
        assert secret not in repr(client)
        assert secret not in repr(vars(client))
    assert "********" in str(errors[0])


def test_tasks_are_polled_until_success_and_failures_raise(api):
    polls = {"n": 0}

    def tasks(body, headers):
        polls["n"] += 1
        ids = body["where"]["id_in"]
        status = "SUCCESSED" if polls["n"] >= 3 else "EXECUTING"
        return 200, [{"id": i, "status": status} for i in ids]

    api.handlers["get-tasks"] = tasks
    api.handlers["create-iscsi-lun-snapshot"] = lambda b, h: (
        200,
        [{"task_id": "ta", "data": {"id": "s1"}}, {"task_id": "tb", "data": {"id": "s2"}}],
    )
    client = make_client(api, poll_interval=0.05)
    data = client.mutate("create-iscsi-lun-snapshot", [{}, {}], what="snapshots")
    assert [d["id"] for d in data] == ["s1", "s2"]
    assert polls["n"] == 3
    assert api.seen[-1].body["where"] == {"id_in": ["ta", "tb"]}


def test_task_timeout_names_the_task_and_what_it_was_doing(api):
    api.handlers["get-tasks"] = lambda b, h: (200, [{"id": "task-42", "status": "EXECUTING"}])
    api.handlers["delete-iscsi-lun"] = lambda b, h: (200, [{"task_id": "task-42", "data": {"id": "lun9"}}])
    client = make_client(api, wait_timeout=0.3, poll_interval=0.05)
    with pytest.raises(ZbsTaskTimeout) as err:
        client.luns.delete("lun9")
    assert err.value.task_id == "task-42"
    assert str(err.value) == (
        "delete-iscsi-lun lun id=lun9: task task-42 did not finish after 0.3s (last status EXECUTING)"
    )
    sent = [s.body for s in api.seen if s.op == "delete-iscsi-lun"]
    assert sent == [{"where": {"id": "lun9"}, "data": {"remove_snapshot": False}}]


def test_paging_follows_the_cursor_to_a_short_page(api):
    items = [{"id": f"id{i:03d}"} for i in range(250)]

    def page(body, headers):
        start = 0
        if body.get("after"):
            start = next(i for i, x in enumerate(items) if x["id"] == body["after"]) + 1
        return 200, items[start : start + body["first"]]

    api.handlers["get-iscsi-luns"] = page
    client = make_client(api)
    assert client.luns.list() == items
    assert [s.body.get("after") for s in api.seen if s.op == "get-iscsi-luns"] == [None, "id099", "id199"]
    assert client.query("iscsi-luns", page_size=125) == items  # 125+125 then an empty page
    assert client.stats["get-iscsi-luns"] == 6


def test_a_server_ignoring_the_cursor_cannot_loop_forever(api):
    api.handlers["get-iscsi-luns"] = lambda b, h: (200, [{"id": "same"}] * 10)
    client = make_client(api)
    with pytest.raises(ZbsApiError, match="paging did not advance"):
        client.query("get-iscsi-luns", page_size=10)


def test_mutations_are_not_accepted_as_queries_and_op_names_are_checked(api):
    client = make_client(api)
    with pytest.raises(ZbsValidationError):
        client.mutate("get-iscsi-luns", {}, what="x")
    for bad in ["../login", "get-luns?x=1", "GET", ""]:
        with pytest.raises(ZbsValidationError):
            client.request(bad, {})
    assert api.ops() == []


def test_from_env_reads_the_modules_environment(monkeypatch, api):
    monkeypatch.setenv("ZBS_HOST", api.url)
    monkeypatch.setenv("ZBS_USERNAME", "admin")
    monkeypatch.setenv("ZBS_PASSWORD", api.password)
    monkeypatch.setenv("ZBS_VALIDATE_CERTS", "no")
    monkeypatch.setenv("ZBS_TIMEOUT", "7.5")
    monkeypatch.delenv("ZBS_CA_PATH", raising=False)
    client = ZbsClient.from_env(wait_timeout=9)
    assert (client.base_url, client.validate_certs, client.timeout, client.wait_timeout) == (
        f"{api.url}/v2/api",
        False,
        7.5,
        9.0,
    )
    client.login()
    monkeypatch.delenv("ZBS_PASSWORD")
    with pytest.raises(ZbsValidationError) as err:
        ZbsClient.from_env()
    assert err.value.field == "password"
    monkeypatch.setenv("ZBS_PASSWORD", "x")
    monkeypatch.setenv("ZBS_VALIDATE_CERTS", "maybe")
    with pytest.raises(ZbsValidationError):
        ZbsClient.from_env()


def test_concurrent_threads_share_one_login(api):
    api.handlers["get-clusters"] = lambda b, h: (200, []) if api.authed(h) else (401, {})
    client = make_client(api)
    threads = [threading.Thread(target=client.clusters.list) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert api.ops().count("login") == 1
    assert api.ops().count("get-clusters") == 8


def test_log_records_carry_structured_context(api, caplog):
    caplog.set_level(logging.DEBUG, logger="zbs.client")
    api.handlers["get-iscsi-luns"] = lambda b, h: (200, [])
    make_client(api).luns.list()
    records = [r for r in caplog.records if getattr(r, "zbs_op", None) == "get-iscsi-luns"]
    assert len(records) == 1
    assert (records[0].zbs_object, records[0].zbs_status) == ("lun", 200)
    assert records[0].zbs_seconds >= 0
