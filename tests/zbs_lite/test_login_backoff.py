"""Issue #11 finding 9 for the API: failed logins back off per source, without locking the real user out.

Two "hosts" are two loopback source addresses (127.0.0.2 guesses, 127.0.0.3 is the real user)
talking HTTPS to a zbs-lite of this module's own (the session's server must not inherit a
penalty). The CHAP side is tests/zbs_lite/iscsi/test_chap_backoff.py.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from zbs_lite.testing import ZbsLiteProcess
from zbs_lite.throttle import BackoffPolicy

ATTACKER, USER = "127.0.0.2", "127.0.0.3"
FREE = BackoffPolicy().free_failures


@pytest.fixture(scope="module")
def zl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZbsLiteProcess]:
    with ZbsLiteProcess(tmp_path_factory.mktemp("backoff")) as server:
        yield server


class Client:
    """One keep-alive HTTPS connection from a chosen source address."""

    def __init__(self, zl: ZbsLiteProcess, source: str) -> None:
        url = urlsplit(zl.api_url)
        ctx = ssl.create_default_context(cafile=zl.ca_path)
        self.conn = http.client.HTTPSConnection(
            str(url.hostname), url.port, context=ctx, source_address=(source, 0), timeout=30
        )
        self.zl = zl

    def login(self, password: str, username: str | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
        body = json.dumps({"username": username or self.zl.username, "password": password, "source": "LOCAL"})
        self.conn.request("POST", "/v2/api/login", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read()), dict(resp.headers)

    def close(self) -> None:
        self.conn.close()


def test_guesses_from_one_source_wait_and_the_real_user_elsewhere_never_does(zl: ZbsLiteProcess) -> None:
    attacker, user = Client(zl, ATTACKER), Client(zl, USER)
    try:
        for _ in range(FREE + 1):
            assert attacker.login("wrong-password")[0] == 401
        status, body, headers = attacker.login(zl.password)
        assert status == 429 and body["code"] == "LoginThrottled", (
            "while it waits, even the right password is unchecked"
        )
        assert int(headers["Retry-After"]) >= 1 and ATTACKER in body["message"]
        assert user.login(zl.password)[0] == 200, "another source is not slowed"
        for _ in range(FREE):
            assert user.login("my-typo")[0] == 401, "and has its own free failures"
        assert user.login(zl.password)[0] == 200
        time.sleep(int(headers["Retry-After"]))
        assert attacker.login(zl.password)[0] == 200, "after the wait the right password works and forgives"
        for i in range(FREE + 1):
            assert attacker.login("x", username=f"nobody{i}")[0] == 401
        assert attacker.login("x", username="nobody-else")[0] == 429, "unknown user names share one back-off"
        assert attacker.login(zl.password)[0] == 200, "the real user name is a credential of its own"
    finally:
        attacker.close()
        user.close()


def test_guessing_speed_drops_to_a_few_checks_while_the_user_logs_in_freely(zl: ZbsLiteProcess) -> None:
    """The measured figure of docs/zbs-lite.md: password checks per second for a guessing source."""
    attacker, user = Client(zl, "127.0.0.4"), Client(zl, "127.0.0.5")
    counts = {"checked": 0, "throttled": 0, "user_ok": 0, "user_other": 0}
    stop = threading.Event()

    def honest() -> None:
        while not stop.is_set():
            counts["user_ok" if user.login(zl.password)[0] == 200 else "user_other"] += 1
            time.sleep(0.2)

    thread = threading.Thread(target=honest)
    thread.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < 4:
            status = attacker.login("guess")[0]
            counts["checked" if status == 401 else "throttled"] += 1
    finally:
        stop.set()
        thread.join()
        attacker.close()
        user.close()
    elapsed = time.monotonic() - started
    print(
        f"guessing source: {counts['checked'] / elapsed:.1f} checked/s, {counts['throttled'] / elapsed:.0f} refused/s"
    )
    assert counts["checked"] <= FREE + 3, counts  # free failures, then 1 s, 2 s: at most 3 more in 4 s
    assert counts["throttled"] > 0 and counts["user_other"] == 0 and counts["user_ok"] >= 5, counts
