# Copyright: (c) 2026, SmartX
# Simplified BSD License (see https://opensource.org/licenses/BSD-2-Clause)
"""Client of the ZBS management API (the CloudTower v2 iSCSI subset), shared by the Ansible
modules and the CSI driver.

Imports only the standard library and ``requests`` (never ``ansible.*``) so that both
consumers run the very same code. Usage::

    client = ZbsClient("tower.example.com", "admin", password, ca_path="/etc/zbs/ca.pem")
    target = client.targets.get(name="k8s") or client.targets.create(name="k8s")
    lun = client.luns.create(name="vol1", iscsi_target_id=target["id"], assigned_size="10GiB")

What it guarantees:

* every call is ``POST <host>/v2/api/<op>`` with a JSON body; the token from ``/login`` is
  sent as-is in ``Authorization`` and renewed once when the API answers 401;
* the retry policy: a refused connection is retried (nothing was sent, so even a mutation is
  safe to send again), and reads (``get-*``, ``login``) are also retried after a dropped
  connection or a 5xx, with exponential backoff; what cannot succeed is never retried - a
  name that does not resolve, a TLS failure, an address that does not answer within
  ``connect_timeout``, a server that accepted the request but did not answer within
  ``timeout``, and every 4xx. A mutation whose request may have reached the server is never
  re-sent, because a blindly re-sent create could create twice;
* a mutation waits for every task it started (``wait_timeout``, ``poll_interval``); a FAILED
  task raises :class:`ZbsTaskFailed` with the task's error, a timeout raises
  :class:`ZbsTaskTimeout` naming the task and what it was doing;
* queries page with ``first``/``after`` until a short page, so lists are always complete;
* resources are plain dicts with the API's field names; creates return the resource after
  its task succeeded;
* the password, the token and any CHAP secret sent never appear in an exception, a repr or
  a log record. Logs go to ``zbs.client`` (or ``logger``) with ``extra`` fields ``zbs_op``,
  ``zbs_object``, ``zbs_status``, ``zbs_seconds``; request bodies are never logged.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import threading
import time
import traceback
import weakref
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set
from urllib.parse import urlsplit

from .zbs_errors import (
    ZbsApiError,
    ZbsAuthError,
    ZbsConnectionError,
    ZbsError,
    ZbsNotFound,
    ZbsTaskFailed,
    ZbsTaskTimeout,
    ZbsValidationError,
)
from .zbs_units import API_BYTE_UNITS, SizeLike
from .zbs_validate import (
    format_allowed_initiators,
    validate_chap_name,
    validate_chap_secret,
    validate_id,
    validate_ip_whitelist,
    validate_iqn,
    validate_lun_id,
    validate_lun_name,
    validate_lun_size,
    validate_replica_num,
    validate_snapshot_name,
    validate_stripe_num,
    validate_stripe_size,
    validate_target_name,
)

try:
    import requests
    import urllib3

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR: Optional[str] = None
except ImportError:  # pragma: no cover - exercised by ansible-test's import sanity test
    requests = None  # type: ignore[assignment]
    urllib3 = None  # type: ignore[assignment]
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

__all__ = [
    "HAS_REQUESTS",
    "REQUESTS_IMPORT_ERROR",
    "ApiStats",
    "ZbsClient",
]

API_PREFIX = "/v2/api"
TASK_DONE = "SUCCESSED"  # sic: the API's spelling
TASK_FAILED = "FAILED"
DEFAULT_STRIPE_NUM = 8
DEFAULT_STRIPE_SIZE = 256 << 10
DEFAULT_REPLICA_NUM = 2
REDACTED = "********"

_OP_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_SECRET_KEYS = ("password", "secret", "token")
_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f")


def _is_idempotent(op: str) -> bool:
    return op == "login" or op.startswith("get-")


def base_url(host: str) -> str:
    """``https://h:port/v2/api`` from ``h``, ``h:port``, ``https://h:port`` or a full base URL."""
    if not isinstance(host, str) or not host.strip():
        raise ZbsValidationError("host", "must be a host name, host:port or URL")
    text = host.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ZbsValidationError("host", f"cannot parse {host!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ZbsValidationError("host", f"{host!r} is not an http(s) host or URL")
    if parts.username is not None or parts.password is not None:
        raise ZbsValidationError("host", "must not carry credentials; use username and password")
    if parts.query or parts.fragment:
        raise ZbsValidationError("host", "must not carry a query or fragment")
    hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{hostname}:{port}" if port else hostname
    path = parts.path.rstrip("/")
    if not path.endswith(API_PREFIX):
        path += API_PREFIX
    return f"{parts.scheme}://{netloc}{path}"


def parse_bool(value: Any, field: str) -> bool:
    """A boolean from an environment-style string (``true/false/yes/no/1/0/on/off``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ZbsValidationError(field, f"expected a boolean, got {value!r}")


def _find_secrets(obj: Any, out: Set[str]) -> Set[str]:
    """Every string value under a key that names a secret (password, chap_secret, token...)."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if isinstance(value, str) and any(k in str(key).lower() for k in _SECRET_KEYS):
                if value:
                    out.add(value)
            else:
                _find_secrets(value, out)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _find_secrets(item, out)
    return out


def _scrub(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every secret replaced, recursively through dicts and lists."""
    ordered = sorted((s for s in secrets if s), key=len, reverse=True)
    if not ordered:
        return value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for s in ordered:
                v = v.replace(s, REDACTED)
            return v
        if isinstance(v, Mapping):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk(value)


def _describe(kind: str, **keys: Any) -> str:
    """``lun 'vol1'`` or ``lun id=abc``: the object part of error messages."""
    for key, value in keys.items():
        if value is not None:
            return f"{kind} {value!r}" if key == "name" else f"{kind} {key}={value}"
    return kind


class Secret:
    """A string that prints as ``********`` (repr, str, vars() of its owner, tracebacks)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__


class _SecretSet(set):
    """The secrets a client has sent, to scrub from answers; prints redacted."""

    def __repr__(self) -> str:
        return "{" + REDACTED + "}"


class ApiStats:
    """API calls made by one client: per operation and in total (retries and re-logins count)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_op: Dict[str, int] = {}

    def record(self, op: str) -> None:
        with self._lock:
            self._by_op[op] = self._by_op.get(op, 0) + 1

    @property
    def by_op(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._by_op)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._by_op.values())

    def __getitem__(self, op: str) -> int:
        with self._lock:
            return self._by_op.get(op, 0)

    def reset(self) -> None:
        with self._lock:
            self._by_op.clear()

    def as_dict(self) -> Dict[str, Any]:
        return {"total": self.total, "by_op": self.by_op}

    def __repr__(self) -> str:
        return f"ApiStats(total={self.total}, by_op={self.by_op})"


class ZbsClient:
    """One authenticated session with a ZBS/CloudTower API endpoint. Thread-safe.

    :param host: ``h``, ``h:port`` or ``https://h:port`` (``/v2/api`` is appended).
    :param validate_certs: verify the server certificate (default on).
    :param ca_path: a PEM CA bundle to verify against instead of the system store.
    :param timeout: seconds to wait for the answer to one HTTP request (read timeout).
    :param connect_timeout: seconds to wait for the TCP (and TLS) connection.
    :param wait_timeout: seconds a mutation waits for its tasks.
    :param poll_interval: longest pause between task polls (polling starts faster).
    :param retries: extra attempts for reads on connection errors and 5xx.
    """

    def __init__(
        self,
        host: str,
        username: str,
        password: str,
        *,
        validate_certs: bool = True,
        ca_path: Optional[str] = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        wait_timeout: float = 300.0,
        poll_interval: float = 0.5,
        retries: int = 3,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        if not HAS_REQUESTS:
            raise ZbsError("the Python library 'requests' is required", operation="connect")
        self.base_url = base_url(host)
        if not isinstance(username, str) or not username:
            raise ZbsValidationError("username", "must not be empty")
        if not isinstance(password, str) or not password:
            raise ZbsValidationError("password", "must not be empty")
        if ca_path:
            _check_ca_bundle(ca_path)
        for field, number in (
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("wait_timeout", wait_timeout),
            ("poll_interval", poll_interval),
        ):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                raise ZbsValidationError(field, f"must be a positive number, got {number!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ZbsValidationError("retries", f"must be a non-negative integer, got {retries!r}")
        self.username = username
        self._password = Secret(password)
        self.validate_certs = bool(validate_certs)
        self.ca_path = ca_path
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.wait_timeout = float(wait_timeout)
        self.poll_interval = float(poll_interval)
        self.retries = retries
        self.log = logger or logging.getLogger("zbs.client")
        self.stats = ApiStats()
        self._token: Optional[Secret] = None
        self._sent_secrets: Set[str] = _SecretSet()
        self._secrets_lock = threading.Lock()
        self._token_lock = threading.Lock()
        # requests.Session is not thread-safe (cookie jar, pool bookkeeping) and the driver
        # calls one client from every gRPC worker thread: each thread gets a session of its own.
        self._local = threading.local()
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._sessions_lock = threading.Lock()
        # Passed on every request: a session-level ``verify`` loses to REQUESTS_CA_BUNDLE.
        self._verify: Any = (ca_path or True) if self.validate_certs else False
        if not self.validate_certs:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            self.log.warning("TLS certificate verification is disabled for %s", self.base_url)
        self.clusters = Clusters(self)
        self.targets = Targets(self)
        self.luns = Luns(self)
        self.snapshots = Snapshots(self)
        self.connections = Connections(self)

    @classmethod
    def from_env(cls, **overrides: Any) -> ZbsClient:
        """A client from ``ZBS_HOST ZBS_USERNAME ZBS_PASSWORD ZBS_VALIDATE_CERTS ZBS_CA_PATH ZBS_TIMEOUT
        ZBS_CONNECT_TIMEOUT``.

        Keyword arguments that are not None win over the environment.
        """
        env = os.environ
        kwargs: Dict[str, Any] = {
            "host": env.get("ZBS_HOST"),
            "username": env.get("ZBS_USERNAME"),
            "password": env.get("ZBS_PASSWORD"),
            "ca_path": env.get("ZBS_CA_PATH") or None,
        }
        if env.get("ZBS_VALIDATE_CERTS"):
            kwargs["validate_certs"] = parse_bool(env["ZBS_VALIDATE_CERTS"], "ZBS_VALIDATE_CERTS")
        for key, var in (("timeout", "ZBS_TIMEOUT"), ("connect_timeout", "ZBS_CONNECT_TIMEOUT")):
            if env.get(var):
                try:
                    kwargs[key] = float(env[var])
                except ValueError as exc:
                    raise ZbsValidationError(var, f"expected seconds, got {env[var]!r}") from exc
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("host", "username", "password"):
            if not kwargs.get(key):
                raise ZbsValidationError(key, f"not given and ZBS_{key.upper()} is not set")
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"ZbsClient(base_url={self.base_url!r}, username={self.username!r})"

    def close(self) -> None:
        """Close every thread's pooled connections (the token stays valid on the server until it expires)."""
        with self._sessions_lock:
            sessions = list(self._sessions)
            self._sessions.clear()
        self._local = threading.local()
        for session in sessions:
            session.close()

    def _http(self) -> Any:
        """This thread's HTTP session (made on its first request)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
            with self._sessions_lock:
                self._sessions.add(session)
            self._local.session = session
        return session

    def __enter__(self) -> ZbsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- transport

    def _secrets(self, extra: Iterable[str] = ()) -> Set[str]:
        """Everything to scrub: password, token, and every secret this client ever sent
        (a task error or a later answer may echo a CHAP secret from an earlier request)."""
        with self._secrets_lock:
            self._sent_secrets.update(extra)
            found = {self._password.value, *self._sent_secrets}
        token = self._token
        if token is not None:
            found.add(token.value)
        return found

    def login(self) -> None:
        """Get a fresh token (done lazily by the first request; call it to check credentials early)."""
        with self._token_lock:
            self._login_locked()

    def _login_locked(self) -> None:
        body = {"username": self.username, "password": self._password.value, "source": "LOCAL"}
        resp = self._call("login", body, what=f"user {self.username!r}", token=None)
        token = resp.get("data", {}).get("token") if isinstance(resp, dict) else None
        if not isinstance(token, str) or not token:
            raise ZbsAuthError(200, "login answered without a token", "/login", operation="login")
        self._token = Secret(token)
        self.log.debug("logged in to %s as %s", self.base_url, self.username)

    def _current_token(self) -> str:
        with self._token_lock:
            if self._token is None:
                self._login_locked()
            token = self._token
        if token is None:
            raise ZbsAuthError(401, "no token after login", "/login", operation="login")
        return token.value

    def _drop_token(self, token: str) -> None:
        with self._token_lock:
            if self._token is not None and self._token.value == token:
                self._token = None

    def request(self, op: str, body: Any = None, *, what: Optional[str] = None) -> Any:
        """POST ``body`` to ``<base>/<op>`` and return the decoded JSON answer.

        Logs in when needed and once more after a 401. Raises :class:`ZbsApiError` (or its
        :class:`ZbsAuthError`/:class:`ZbsNotFound` subclasses) for an error answer and
        :class:`ZbsConnectionError` when the API cannot be reached.
        """
        if not isinstance(op, str) or not _OP_RE.match(op):
            raise ZbsValidationError("op", f"{op!r} is not an API operation name")
        if op == "login":
            return self._call(op, body, what=what, token=None)
        token = self._current_token()
        try:
            return self._call(op, body, what=what, token=token)
        except ZbsAuthError:
            self.log.info("token refused for %s; logging in again", op, extra={"zbs_op": op, "zbs_object": what})
            self._drop_token(token)
        return self._call(op, body, what=what, token=self._current_token())

    def _call(self, op: str, body: Any, *, what: Optional[str], token: Optional[str]) -> Any:
        """One logical call: retries per the idempotency rule, no re-login."""
        url = f"{self.base_url}/{op}"
        headers = {"Authorization": token} if token else {}
        payload = body if body is not None else {}
        secrets = self._secrets(_find_secrets(payload, set()))
        attempt = 0
        while True:
            self.stats.record(op)
            started = time.monotonic()
            try:
                resp = self._http().post(
                    url,
                    json=payload,
                    headers=headers,
                    timeout=(self.connect_timeout, self.timeout),
                    verify=self._verify,
                )
            except requests.exceptions.SSLError as exc:
                raise ZbsConnectionError(
                    _scrub(_tls_failure(exc, self.base_url, self.ca_path), secrets), operation=op, object=what
                ) from None
            except requests.exceptions.RequestException as exc:
                reason = _scrub(f"{type(exc).__name__}: {exc}", secrets)
                verdict = _classify(exc)
                if verdict == FAIL_NOW:
                    raise ZbsConnectionError(_scrub(self._why_not(exc), secrets), operation=op, object=what) from None
                safe = verdict == NOT_SENT or _is_idempotent(op)
                if attempt < self.retries and safe:
                    attempt += 1
                    self._backoff(op, attempt, reason)
                    continue
                if not safe:
                    raise ZbsConnectionError(
                        f"no answer from {self.base_url} ({reason}); the change may or may not have been "
                        "applied: read the object before trying again",
                        operation=op,
                        object=what,
                    ) from None
                raise ZbsConnectionError(
                    f"cannot reach {self.base_url} after {attempt + 1} attempt(s): {reason}", operation=op, object=what
                ) from None
            elapsed = time.monotonic() - started
            self.log.debug(
                "POST %s -> %s in %.3fs",
                op,
                resp.status_code,
                elapsed,
                extra={"zbs_op": op, "zbs_object": what, "zbs_status": resp.status_code, "zbs_seconds": elapsed},
            )
            if resp.status_code >= 500 and _is_idempotent(op) and attempt < self.retries:
                attempt += 1
                self._backoff(op, attempt, f"HTTP {resp.status_code}")
                continue
            if resp.status_code != 200:
                raise self._api_error(resp, op, what, secrets)
            try:
                return resp.json()
            except ValueError:
                raise ZbsApiError(
                    resp.status_code, "the API answered with something that is not JSON", op, operation=op, object=what
                ) from None

    def _why_not(self, exc: Exception) -> str:
        """The message for a failure that no retry can cure, saying what to check."""
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return (
                f"{self.base_url} accepted the connection but sent no answer within {self.timeout:g}s "
                "(timeout); not retried - the API is overloaded or hung, or the address is not a ZBS API"
            )
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return (
                f"no connection to {self.base_url} within {self.connect_timeout:g}s (connect_timeout); not "
                "retried - check the address and that a firewall lets you reach it"
            )
        host = urlsplit(self.base_url).hostname
        return f"the host name {host!r} of {self.base_url} does not resolve (DNS); check host"

    def _backoff(self, op: str, attempt: int, reason: str) -> None:
        delay = min(0.2 * (2 ** (attempt - 1)), 5.0)
        self.log.warning(
            "%s failed (%s); retry %d/%d in %.1fs",
            op,
            reason,
            attempt,
            self.retries,
            delay,
            extra={"zbs_op": op, "zbs_attempt": attempt},
        )
        time.sleep(delay)

    def _api_error(self, resp: Any, op: str, what: Optional[str], secrets: Set[str]) -> ZbsApiError:
        try:
            body = resp.json()
        except ValueError:
            body = None
        path: Optional[str] = f"/{op}"
        code = props = None
        if isinstance(body, dict) and "message" in body:
            message = str(body.get("message"))
            path = body.get("path") or path
            code = body.get("code")
            props = body.get("props")
        else:
            message = (resp.text or "").strip()[:300] or resp.reason or "error"
        message = _scrub(message, secrets)
        props = _scrub(props, secrets)
        kwargs: Dict[str, Any] = {"code": code, "props": props, "operation": op, "object": what}
        kwargs["request_id"] = resp.headers.get("x-tower-request-id")
        if resp.status_code == 401:
            return ZbsAuthError(401, message, path, **kwargs)
        if resp.status_code == 404:
            return ZbsNotFound(404, message, path, **kwargs)
        return ZbsApiError(resp.status_code, message, path, **kwargs)

    # ------------------------------------------------------------ query helpers

    @staticmethod
    def _get_op(op: str) -> str:
        return op if op.startswith("get-") else f"get-{op}"

    def query(
        self,
        op: str,
        where: Optional[Mapping[str, Any]] = None,
        order_by: Optional[str] = None,
        page_size: int = 100,
        *,
        what: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """Every object ``op`` (``get-iscsi-luns`` or ``iscsi-luns``) returns, paging with
        ``first``/``after`` until a short page."""
        op = self._get_op(op)
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
            raise ZbsValidationError("page_size", f"must be 1-1000, got {page_size!r}")
        items: List[Dict[str, Any]] = []
        seen: Set[str] = set()
        after: Optional[str] = None
        while True:
            body: Dict[str, Any] = {"first": page_size}
            if where:
                body["where"] = dict(where)
            if order_by:
                body["orderBy"] = order_by
            if after is not None:
                body["after"] = after
            page = self.request(op, body, what=what)
            if not isinstance(page, list):
                raise ZbsApiError(
                    200, f"expected a list, got {type(page).__name__}", f"/{op}", operation=op, object=what
                )
            items.extend(page)
            if len(page) < page_size:
                return items
            last = page[-1].get("id") if isinstance(page[-1], dict) else None
            if not isinstance(last, str) or last in seen:
                raise ZbsApiError(200, "paging did not advance (cursor ignored)", f"/{op}", operation=op, object=what)
            seen.add(last)
            after = last

    def query_one(self, op: str, where: Mapping[str, Any], *, what: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The single object matching ``where``, None if none; more than one is an error."""
        op = self._get_op(op)
        page = self.request(op, {"where": dict(where), "first": 2}, what=what)
        if not isinstance(page, list):
            raise ZbsApiError(200, f"expected a list, got {type(page).__name__}", f"/{op}", operation=op, object=what)
        if len(page) > 1:
            raise ZbsError(f"{len(page)} or more objects match; be more specific", operation=op, object=what)
        return page[0] if page else None

    def count(self, resource: str, where: Optional[Mapping[str, Any]] = None) -> int:
        """How many ``resource`` (``iscsi-luns``) objects match, via ``get-<resource>-connection``."""
        name = resource[4:] if resource.startswith("get-") else resource
        if name.endswith("-connection"):
            name = name[: -len("-connection")]
        op = f"get-{name}-connection"
        resp = self.request(op, {"where": dict(where)} if where else {})
        try:
            return int(resp["aggregate"]["count"])
        except (KeyError, TypeError, ValueError):
            raise ZbsApiError(200, "answer has no aggregate.count", f"/{op}", operation=op) from None

    # --------------------------------------------------------------- mutations

    def mutate(
        self, op: str, body: Any, *, what: str, wait: bool = True, timeout: Optional[float] = None
    ) -> List[Dict[str, Any]]:
        """Send a mutation; with ``wait`` block until every task it started succeeded.

        Returns the ``data`` of each ``{task_id, data}`` item (the objects as first created;
        re-read them for their final state).
        """
        if _is_idempotent(op):
            raise ZbsValidationError("op", f"{op!r} is a query, not a mutation")
        resp = self.request(op, body, what=what)
        items = resp if isinstance(resp, list) else [resp]
        if wait:
            task_ids = [i["task_id"] for i in items if isinstance(i, dict) and i.get("task_id")]
            if task_ids:
                self.wait_tasks(task_ids, what=what, timeout=timeout, operation=op)
        return [i.get("data") or {} for i in items if isinstance(i, dict)]

    def wait_tasks(
        self,
        ids: Sequence[str],
        *,
        what: str,
        timeout: Optional[float] = None,
        operation: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """Poll ``get-tasks`` until every task in ``ids`` is SUCCESSED; return the tasks.

        First polls after 50 ms and again 50 ms later, then backs off (doubling up to
        ``poll_interval``): most tasks are short, and every poll is a round trip. Raises
        :class:`ZbsTaskFailed` on the first FAILED task and :class:`ZbsTaskTimeout` naming the
        first unfinished one after ``timeout`` seconds (default ``wait_timeout``).
        """
        limit = self.wait_timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + limit
        wanted = list(dict.fromkeys(ids))
        done: Dict[str, Dict[str, Any]] = {}
        last: Dict[str, Optional[str]] = {}
        delay = min(0.05, self.poll_interval)
        if wanted:  # a task just submitted has hardly ever finished: do not poll at once
            time.sleep(min(delay, limit))
        while True:
            pending = [i for i in wanted if i not in done]
            if not pending:
                return [done[i] for i in wanted]
            for task in self.query("get-tasks", {"id_in": pending}, what=what):
                task_id = task.get("id")
                status = task.get("status")
                if task_id not in pending:
                    continue
                last[task_id] = status
                if status == TASK_DONE:
                    done[task_id] = task
                elif status == TASK_FAILED:
                    secrets = self._secrets()
                    raise ZbsTaskFailed(
                        task_id,
                        task.get("error_code"),
                        _scrub(task.get("error_message"), secrets),
                        operation=operation,
                        object=what,
                    )
            if all(i in done for i in pending):
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                first = next(i for i in wanted if i not in done)
                raise ZbsTaskTimeout(first, what, limit, last.get(first), operation=operation)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, self.poll_interval)


#: How a transport failure is handled: never retried, retried even for a mutation (the request
#: never left), or retried for reads only (the request may have reached the server).
FAIL_NOW, NOT_SENT, MAYBE_SENT = "fail", "not-sent", "maybe-sent"


def _reason_chain(exc: BaseException) -> List[BaseException]:
    """``exc`` and what it wraps (requests -> urllib3 MaxRetryError.reason -> socket/ssl errors)."""
    seen: List[BaseException] = []
    todo: List[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend([getattr(item, "reason", None), item.__cause__, item.__context__, *item.args])
    return seen


def _classify(exc: Exception) -> str:
    """FAIL_NOW, NOT_SENT or MAYBE_SENT for a ``requests`` exception (see the retry policy above)."""
    if isinstance(exc, (requests.exceptions.ReadTimeout, requests.exceptions.ConnectTimeout)):
        return FAIL_NOW
    chain = _reason_chain(exc)
    dns = getattr(urllib3.exceptions, "NameResolutionError", None)
    if any((dns is not None and isinstance(e, dns)) or isinstance(e, socket.gaierror) for e in chain):
        return FAIL_NOW
    if isinstance(exc, requests.exceptions.ConnectionError) and any(
        isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain
    ):
        return NOT_SENT
    return MAYBE_SENT


def _check_ca_bundle(path: str) -> None:
    """Refuse a ``ca_path`` that cannot verify anything, before the first request fails obscurely."""
    if not os.path.isfile(path):
        raise ZbsValidationError("ca_path", f"CA bundle {path!r} does not exist")
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError as exc:
        raise ZbsValidationError("ca_path", f"cannot read {path!r}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise ZbsValidationError(
            "ca_path", f"{path} holds no certificate (expected a PEM file with a BEGIN CERTIFICATE block)"
        )


def _tls_failure(exc: Exception, url: str, ca_path: Optional[str]) -> str:
    """Say why the TLS handshake failed and what to change: the CA, the host name, or the protocol."""
    verify = next((e for e in _reason_chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is None:
        return f"TLS handshake with {url} failed: {exc}"
    detail = getattr(verify, "verify_message", None) or str(verify)
    if getattr(verify, "verify_code", None) == 62 or "hostname" in detail.lower():
        return (
            f"the TLS certificate of {url} is not valid for this host name ({detail}); use the name or "
            "address the certificate was issued for"
        )
    if ca_path:
        return f"the TLS certificate of {url} is not signed by the CA in {ca_path} ({detail})"
    return (
        f"the TLS certificate of {url} is not signed by a CA this system trusts ({detail}); give ca_path "
        "(the CA that signed it), or validate_certs=false for a throw-away lab"
    )


# --------------------------------------------------------------------- resources


def _one_key(kind: str, **keys: Any) -> None:
    given = [k for k, v in keys.items() if v is not None]
    if len(given) != 1:
        raise ZbsValidationError(kind, f"give exactly one of {', '.join(keys)} (got {', '.join(given) or 'none'})")


def _size_fields(data: Dict[str, Any], field: str = "assigned_size") -> None:
    """Normalise ``assigned_size`` (+ optional unit, or "10GiB") to bytes with unit ``B``."""
    if data.get(field) is None:
        data.pop(f"{field}_unit", None)
        return
    value: SizeLike = data[field]
    unit = data.pop(f"{field}_unit", None)
    if unit is not None:
        if unit not in API_BYTE_UNITS:
            raise ZbsValidationError(f"{field}_unit", f"must be one of {', '.join(API_BYTE_UNITS)}, got {unit!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ZbsValidationError(field, f"must be an integer when {field}_unit is given")
        value = value * API_BYTE_UNITS[unit]
    data[field] = validate_lun_size(value, field)
    data[f"{field}_unit"] = "B"


def _lun_create_data(data: Dict[str, Any], replica_num: Optional[int], lun_id: Optional[int]) -> Dict[str, Any]:
    """The validated ``create-iscsi-lun`` item for ``data`` (name, iscsi_target_id, assigned_size, ...).

    ``replica_num`` None leaves it for the caller to fill in (from the target).
    """
    data["name"] = validate_lun_name(data.get("name"))
    data["iscsi_target_id"] = validate_id(data.get("iscsi_target_id"), "iscsi_target_id")
    _size_fields(data)
    if data.get("assigned_size") is None:
        raise ZbsValidationError("assigned_size", f"LUN {data['name']!r} needs a size")
    data.pop("replica_num", None)
    if replica_num is not None:
        data["replica_num"] = validate_replica_num(replica_num)
    data.pop("lun_id", None)
    if lun_id is not None:
        data["lun_id"] = validate_lun_id(lun_id)
    _allowed_initiators_field(data)
    return data


def _allowed_initiators_field(data: Dict[str, Any]) -> None:
    if "allowed_initiators" in data and data["allowed_initiators"] is not None:
        data["allowed_initiators"] = format_allowed_initiators(data["allowed_initiators"])


def _whitelist_fields(data: Dict[str, Any]) -> None:
    if data.get("ip_whitelist") is not None:
        data["ip_whitelist"] = validate_ip_whitelist(data["ip_whitelist"])
    iqns = data.get("iqn_whitelist")
    if iqns is not None:
        if isinstance(iqns, str) and iqns.strip() in ("*/*", ""):
            data["iqn_whitelist"] = iqns.strip()
        else:
            items = iqns.split(",") if isinstance(iqns, str) else list(iqns)
            data["iqn_whitelist"] = ",".join(sorted({validate_iqn(i, "iqn_whitelist") for i in items}))


def _chap_fields(data: Dict[str, Any], *, creating: bool) -> None:
    """Check CHAP fields; on update, enabling CHAP may rely on credentials the target already has."""
    if data.get("chap_name") is not None:
        validate_chap_name(data["chap_name"])
    if data.get("chap_secret") is not None:
        validate_chap_secret(data["chap_secret"])
    if creating and data.get("chap_enabled") and not (data.get("chap_name") and data.get("chap_secret")):
        raise ZbsValidationError("chap_enabled", "target CHAP needs chap_name and chap_secret")
    chaps = data.get("initiator_chaps")
    if chaps is not None:
        if not isinstance(chaps, (list, tuple)):
            raise ZbsValidationError("initiator_chaps", "must be a list of {initiator_iqn, chap_name, chap_secret}")
        out = []
        for i, entry in enumerate(chaps):
            if not isinstance(entry, Mapping) or set(entry) != {"initiator_iqn", "chap_name", "chap_secret"}:
                raise ZbsValidationError(f"initiator_chaps[{i}]", "needs exactly initiator_iqn, chap_name, chap_secret")
            out.append(
                {
                    "initiator_iqn": validate_iqn(entry["initiator_iqn"], f"initiator_chaps[{i}].initiator_iqn"),
                    "chap_name": validate_chap_name(
                        entry["chap_name"], initiator=True, field=f"initiator_chaps[{i}].chap_name"
                    ),
                    "chap_secret": validate_chap_secret(
                        entry["chap_secret"], initiator=True, field=f"initiator_chaps[{i}].chap_secret"
                    ),
                }
            )
        data["initiator_chaps"] = out


class _Resource:
    """Shared list/get/count for one API resource (``get-<plural>``)."""

    plural = ""
    kind = ""

    def __init__(self, client: ZbsClient) -> None:
        self._client = client

    def list(self, where: Optional[Mapping[str, Any]] = None, order_by: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every object matching ``where`` (all pages)."""
        return self._client.query(f"get-{self.plural}", where, order_by, what=self.kind)

    def _identity(
        self, id: Optional[str], local_id: Optional[str], name: Optional[str], validate_name: Callable[[str], str]
    ) -> Dict[str, Any]:
        """The ``where`` naming one object by whichever of id, local_id or name is given (validated)."""
        if id is not None:
            return {"id": validate_id(id)}
        if local_id is not None:
            return {"local_id": validate_id(local_id, "local_id")}
        return {"name": validate_name(name or "")}

    def count(self, where: Optional[Mapping[str, Any]] = None) -> int:
        """How many objects match ``where`` (one call, nothing transferred)."""
        return self._client.count(self.plural, where)

    def page(
        self,
        where: Optional[Mapping[str, Any]] = None,
        *,
        first: int,
        after: Optional[str] = None,
        descending: bool = False,
    ) -> List[Dict[str, Any]]:
        """Up to ``first`` objects matching ``where`` whose id comes after ``after``, in id order (one call).

        Keyset paging on the API's id: the cursor is a filter (``id_gt``, ``id_lt`` when
        ``descending``), so it stays valid when the object it names is deleted meanwhile (the
        API's ``after`` needs that object to exist), and a page deep into the list costs what
        the first one does.
        """
        if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= 1000:
            raise ZbsValidationError("first", f"must be 1-1000, got {first!r}")
        cond: Dict[str, Any] = dict(where or {})
        if after is not None:
            cursor = {"id_lt" if descending else "id_gt": validate_id(after, "after")}
            cond = {"AND": [cond, cursor]} if cond else cursor
        body: Dict[str, Any] = {"first": first, "orderBy": "id_DESC" if descending else "id_ASC"}
        if cond:
            body["where"] = cond
        op = f"get-{self.plural}"
        items = self._client.request(op, body, what=self.kind)
        if not isinstance(items, list):
            raise ZbsApiError(
                200, f"expected a list, got {type(items).__name__}", f"/{op}", operation=op, object=self.kind
            )
        return items

    def _get(self, where: Dict[str, Any], what: str) -> Optional[Dict[str, Any]]:
        return self._client.query_one(f"get-{self.plural}", where, what=what)

    def _reread(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """The object after its task: a fresh read (falls back to the mutation's data)."""
        obj_id = data.get("id") if isinstance(data, dict) else None
        if not obj_id:
            return data
        return self._get({"id": obj_id}, _describe(self.kind, id=obj_id)) or data


class Clusters(_Resource):
    """``get-clusters``. zbs-lite has one cluster; CloudTower may manage several."""

    plural = "clusters"
    kind = "cluster"

    def __init__(self, client: ZbsClient) -> None:
        super().__init__(client)
        self._default_id: Optional[str] = None

    def get(
        self, *, id: Optional[str] = None, name: Optional[str] = None, local_id: Optional[str] = None
    ) -> Optional[Dict[str, Any]]:
        _one_key("cluster", id=id, name=name, local_id=local_id)
        where = self._identity(id, local_id, name, str)
        return self._get(where, _describe("cluster", name=name, id=id, local_id=local_id))

    def default(self) -> Dict[str, Any]:
        """The only cluster; with several, callers must name one."""
        clusters = self._client.query("get-clusters", None, page_size=2, what="cluster")
        if len(clusters) != 1:
            raise ZbsValidationError(
                "cluster", f"the API manages {len(clusters)} clusters; name the one to use (cluster_id)"
            )
        return clusters[0]

    def default_id(self) -> str:
        """The only cluster's id, read once per client (clusters do not come and go)."""
        if self._default_id is None:
            self._default_id = str(self.default()["id"])
        return self._default_id


class Targets(_Resource):
    """iSCSI targets (``*-iscsi-target``)."""

    plural = "iscsi-targets"
    kind = "target"

    def get(
        self,
        *,
        id: Optional[str] = None,
        name: Optional[str] = None,
        local_id: Optional[str] = None,
        cluster_id: Optional[str] = None,
    ) -> Optional[Dict[str, Any]]:
        """The target with this id, local_id or (case-insensitive) name, or None."""
        _one_key("target", id=id, name=name, local_id=local_id)
        where = self._identity(id, local_id, name, validate_target_name)
        if cluster_id is not None:
            where["cluster"] = {"id": validate_id(cluster_id, "cluster_id")}
        return self._get(where, _describe("target", name=name, id=id, local_id=local_id))

    def create(
        self,
        name: str,
        cluster_id: Optional[str] = None,
        *,
        replica_num: int = DEFAULT_REPLICA_NUM,
        thin_provision: bool = True,
        stripe_num: int = DEFAULT_STRIPE_NUM,
        stripe_size: SizeLike = DEFAULT_STRIPE_SIZE,
        wait: bool = True,
        **fields: Any,
    ) -> Dict[str, Any]:
        """Create a target (defaults: 2 replicas, thin, 8 x 256 KiB stripes, the only cluster)."""
        data: Dict[str, Any] = dict(fields)
        data["name"] = validate_target_name(name)
        what = _describe("target", name=data["name"])
        data["cluster_id"] = validate_id(cluster_id, "cluster_id") if cluster_id else self._client.clusters.default_id()
        data["replica_num"] = validate_replica_num(replica_num)
        data["thin_provision"] = bool(thin_provision)
        data["stripe_num"] = validate_stripe_num(stripe_num)
        data["stripe_size"] = validate_stripe_size(stripe_size)
        _whitelist_fields(data)
        _chap_fields(data, creating=True)
        created = self._client.mutate("create-iscsi-target", [data], what=what, wait=wait)[0]
        return self._reread(created) if wait else created

    def update(self, id: str, *, wait: bool = True, **data: Any) -> Dict[str, Any]:
        """Change the given fields (description, whitelists, CHAP, QoS) of target ``id``."""
        target_id = validate_id(id)
        what = _describe("target", id=target_id)
        body = dict(data)
        _whitelist_fields(body)
        _chap_fields(body, creating=False)
        if not body:
            raise ZbsValidationError("data", "nothing to update")
        updated = self._client.mutate(
            "update-iscsi-target", {"where": {"id": target_id}, "data": body}, what=what, wait=wait
        )
        if not updated:
            raise ZbsNotFound(
                404,
                f"no target with id {target_id}",
                "/update-iscsi-target",
                operation="update-iscsi-target",
                object=what,
            )
        return self._reread(updated[0]) if wait else updated[0]

    def delete(self, id: str, *, wait: bool = True) -> None:
        """Delete target ``id`` (the API refuses while it has LUNs)."""
        target_id = validate_id(id)
        self._client.mutate(
            "delete-iscsi-target", {"where": {"id": target_id}}, what=_describe("target", id=target_id), wait=wait
        )


class Luns(_Resource):
    """iSCSI LUNs (``*-iscsi-lun``), including clone, copy and rollback."""

    plural = "iscsi-luns"
    kind = "lun"

    def get(
        self,
        *,
        id: Optional[str] = None,
        local_id: Optional[str] = None,
        name: Optional[str] = None,
        target_id: Optional[str] = None,
        lun_id: Optional[int] = None,
        target_name: Optional[str] = None,
    ) -> Optional[Dict[str, Any]]:
        """The LUN with this id, local_id, or name/lun_id within a target, or None.

        The target is given by ``target_id`` or by ``target_name`` (one read either way: the
        API filters on the LUN's target relation).
        """
        _one_key("lun", id=id, local_id=local_id, name=name, lun_id=lun_id)
        if target_id is not None and target_name is not None:
            raise ZbsValidationError("target", "give target_id or target_name, not both")
        if lun_id is None:
            where = self._identity(id, local_id, name, validate_lun_name)
        elif target_id is None and target_name is None:
            raise ZbsValidationError("target_id", "needed to look a LUN up by lun_id")
        else:
            where = {"lun_id": validate_lun_id(lun_id)}
        if target_id is not None:
            where["iscsi_target"] = {"id": validate_id(target_id, "target_id")}
        elif target_name is not None:
            where["iscsi_target"] = {"name": validate_target_name(target_name, "target_name")}
        what = _describe("lun", name=name, id=id, local_id=local_id, lun_id=lun_id)
        if target_name is not None:
            what += f" in target {where['iscsi_target']['name']!r}"
        return self._get(where, what)

    def create(
        self,
        name: str,
        iscsi_target_id: str,
        assigned_size: SizeLike,
        *,
        replica_num: Optional[int] = None,
        lun_id: Optional[int] = None,
        wait: bool = True,
        **fields: Any,
    ) -> Dict[str, Any]:
        """Create a LUN of ``assigned_size`` (bytes or ``"10GiB"``) in target ``iscsi_target_id``.

        ``replica_num`` defaults to the target's (one extra read). ``allowed_initiators`` may be
        the API string or a list of IQNs; absent means every initiator.
        """
        data = _lun_create_data(
            dict(fields, name=name, iscsi_target_id=iscsi_target_id, assigned_size=assigned_size),
            replica_num,
            lun_id,
        )
        what = _describe("lun", name=data["name"])
        if replica_num is None:
            target = self._client.targets.get(id=data["iscsi_target_id"])
            if target is None:
                raise ZbsNotFound(
                    404,
                    f"target {iscsi_target_id} does not exist",
                    "/create-iscsi-lun",
                    operation="create-iscsi-lun",
                    object=what,
                )
            data["replica_num"] = validate_replica_num(int(target.get("replica_num") or DEFAULT_REPLICA_NUM))
        created = self._client.mutate("create-iscsi-lun", [data], what=what, wait=wait)[0]
        return self._reread(created) if wait else created

    def create_many(self, items: Sequence[Mapping[str, Any]], *, wait: bool = True) -> List[Dict[str, Any]]:
        """Create several LUNs in one call (the API takes an array) and wait for all their tasks.

        Each item has the fields of :meth:`create`, ``replica_num`` included. Every item is
        validated before anything is sent. Returns the LUNs as the mutation described them;
        re-read them (one query) for their final state.
        """
        data = []
        for item in items:
            if item.get("replica_num") is None:
                raise ZbsValidationError("replica_num", f"LUN {item.get('name')!r} needs a replica_num")
            data.append(_lun_create_data(dict(item), item["replica_num"], item.get("lun_id")))
        if not data:
            return []
        what = f"{len(data)} LUN(s)"
        return self._client.mutate("create-iscsi-lun", data, what=what, wait=wait)

    def update(self, id: str, *, wait: bool = True, **data: Any) -> Dict[str, Any]:
        """Change name, size (grow only), allowed_initiators or QoS of LUN ``id``."""
        lun = validate_id(id)
        what = _describe("lun", id=lun)
        body = dict(data)
        if "name" in body:
            validate_lun_name(body["name"])
        _size_fields(body)
        _allowed_initiators_field(body)
        if not body:
            raise ZbsValidationError("data", "nothing to update")
        updated = self._client.mutate("update-iscsi-lun", {"where": {"id": lun}, "data": body}, what=what, wait=wait)
        if not updated:
            raise ZbsNotFound(
                404, f"no LUN with id {lun}", "/update-iscsi-lun", operation="update-iscsi-lun", object=what
            )
        return self._reread(updated[0]) if wait else updated[0]

    def update_many(self, ids: Sequence[str], *, wait: bool = True, **data: Any) -> List[Dict[str, Any]]:
        """Give the LUNs ``ids`` the same change in one call (``where: {id_in}``); no renames."""
        lun_ids = [validate_id(i) for i in ids]
        body = dict(data)
        if "name" in body:
            raise ZbsValidationError("name", "several LUNs cannot get one name")
        _size_fields(body)
        _allowed_initiators_field(body)
        if not body or not lun_ids:
            raise ZbsValidationError("data", "nothing to update")
        what = f"{len(lun_ids)} LUN(s)"
        return self._client.mutate(
            "update-iscsi-lun", {"where": {"id_in": lun_ids}, "data": body}, what=what, wait=wait
        )

    def delete(self, id: str, remove_snapshot: bool = False, *, wait: bool = True) -> None:
        """Delete LUN ``id``; with snapshots the API refuses unless ``remove_snapshot``."""
        lun = validate_id(id)
        body = {"where": {"id": lun}, "data": {"remove_snapshot": bool(remove_snapshot)}}
        self._client.mutate("delete-iscsi-lun", body, what=_describe("lun", id=lun), wait=wait)

    def delete_many(self, ids: Sequence[str], remove_snapshot: bool = False, *, wait: bool = True) -> None:
        """Delete the LUNs ``ids`` in one call (``where: {id_in}``)."""
        lun_ids = [validate_id(i) for i in ids]
        if not lun_ids:
            return
        body = {"where": {"id_in": lun_ids}, "data": {"remove_snapshot": bool(remove_snapshot)}}
        self._client.mutate("delete-iscsi-lun", body, what=f"{len(lun_ids)} LUN(s)", wait=wait)

    def clone_from_snapshot(self, snapshot_id: str, target_id: str, name: str, *, wait: bool = True) -> Dict[str, Any]:
        """A new LUN ``name`` in ``target_id`` with the snapshot's content and size."""
        data = {
            "snapshot_id": validate_id(snapshot_id, "snapshot_id"),
            "iscsi_target_id": validate_id(target_id, "target_id"),
            "name": validate_lun_name(name),
        }
        created = self._client.mutate(
            "clone-iscsi-lun-from-snapshot", [data], what=_describe("lun", name=name), wait=wait
        )[0]
        return self._reread(created) if wait else created

    def copy(
        self, src_lun_id: str, name: str, dest_target_id: Optional[str] = None, *, wait: bool = True
    ) -> Dict[str, Any]:
        """A full copy of LUN ``src_lun_id`` named ``name`` (in ``dest_target_id`` or the same target)."""
        data: Dict[str, Any] = {"src_lun_id": validate_id(src_lun_id, "src_lun_id"), "name": validate_lun_name(name)}
        if dest_target_id is not None:
            data["dest_iscsi_target_id"] = validate_id(dest_target_id, "dest_target_id")
        created = self._client.mutate("copy-iscsi-lun", [data], what=_describe("lun", name=name), wait=wait)[0]
        return self._reread(created) if wait else created

    def rollback(self, lun_id: str, snapshot_id: str, *, wait: bool = True) -> Dict[str, Any]:
        """Replace LUN ``lun_id``'s content with the snapshot's."""
        data = {"lun_id": validate_id(lun_id, "lun_id"), "snapshot_id": validate_id(snapshot_id, "snapshot_id")}
        done = self._client.mutate(
            "rollback-iscsi-lun-from-snapshot", [data], what=_describe("lun", id=lun_id), wait=wait
        )[0]
        return self._reread(done) if wait else done


class Snapshots(_Resource):
    """LUN snapshots (``*-iscsi-lun-snapshot``)."""

    plural = "iscsi-lun-snapshots"
    kind = "snapshot"

    def get(
        self,
        *,
        id: Optional[str] = None,
        local_id: Optional[str] = None,
        name: Optional[str] = None,
        lun_id: Optional[str] = None,
    ) -> Optional[Dict[str, Any]]:
        """The snapshot with this id, local_id, or name (within LUN ``lun_id``), or None."""
        _one_key("snapshot", id=id, local_id=local_id, name=name)
        where = self._identity(id, local_id, name, validate_snapshot_name)
        if lun_id is not None:
            where["iscsi_lun"] = {"id": validate_id(lun_id, "lun_id")}
        return self._get(where, _describe("snapshot", name=name, id=id, local_id=local_id))

    def create(self, lun_id: str, target_id: str, name: str, *, wait: bool = True) -> Dict[str, Any]:
        """Snapshot LUN ``lun_id`` (of target ``target_id``) as ``name``."""
        data = {
            "iscsi_lun_id": validate_id(lun_id, "lun_id"),
            "iscsi_target_id": validate_id(target_id, "target_id"),
            "name": validate_snapshot_name(name),
        }
        created = self._client.mutate(
            "create-iscsi-lun-snapshot", [data], what=_describe("snapshot", name=name), wait=wait
        )[0]
        return self._reread(created) if wait else created

    def delete(self, id: str, *, wait: bool = True) -> None:
        """Delete snapshot ``id`` (clones made from it stay)."""
        snap = validate_id(id)
        self._client.mutate(
            "delete-iscsi-lun-snapshot", {"where": {"id": snap}}, what=_describe("snapshot", id=snap), wait=wait
        )


class Connections(_Resource):
    """Live iSCSI sessions (``get-iscsi-connections``), read-only."""

    plural = "iscsi-connections"
    kind = "connection"
