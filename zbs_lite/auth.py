"""Login: the one API user's credentials checked in constant time, and the bearer tokens it gets."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from typing import Any

from zbs_lite import validate
from zbs_lite.errors import ApiError, bad
from zbs_lite.settings import Settings
from zbs_lite.throttle import LoginThrottle, Throttled, source_of

LOGIN_KEYS = ("username", "password", "source", "auth_config_id", "mfa_type")
UNKNOWN_USER = "?"  # every wrong user name from one source shares one back-off key


class Tokens:
    """Tokens live in memory only: after a restart clients log in again (the shared client does so on a 401)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.ttl
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            exp = self._tokens.get(token)
        return exp is not None and exp > time.monotonic()


def check_credentials(body: Any, settings: Settings, throttle: LoginThrottle, peer: str) -> None:
    """Raise a 401 unless the body names the configured user and password (both compared in full).

    Failures back off per source (``throttle``); while ``peer``'s source waits, its attempts
    get a 429 with Retry-After and are not checked at all.
    """
    validate.check_keys(body, "", LOGIN_KEYS, ("username", "password"))
    user, password = body["username"], body["password"]
    if not isinstance(user, str) or not isinstance(password, str):
        raise bad("username", "username and password must be strings")

    def verify() -> bool:
        user_ok = hmac.compare_digest(user.encode(), settings.username.encode())
        password_ok = hmac.compare_digest(password.encode(), settings.password.encode())
        return user_ok and password_ok

    source = source_of(peer)
    key = ("api", source, user if user == settings.username else UNKNOWN_USER)
    try:
        ok = throttle.attempt(key, verify)
    except Throttled as wait:
        raise ApiError(
            429,
            f"login: too many failed logins from {source}; try again in {wait.seconds} s",
            headers={"Retry-After": str(wait.seconds)},
        ) from None
    if not ok:
        raise ApiError(401, "login: invalid username or password")
