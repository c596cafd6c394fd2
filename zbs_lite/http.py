"""HTTP(S) front of the API: ``POST /v2/api/<operation>`` with JSON, token auth, ErrorBody.

Every response, whatever went wrong (a bad request line, another method, a truncated body),
is JSON with an ``x-tower-request-id`` that the request's log line repeats. A bug is logged
with its traceback server-side and answered with a plain 500 message, never a traceback.
Nothing runs unless the whole body announced by Content-Length arrived.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from zbs_lite.api import Api
from zbs_lite.errors import ApiError, ErrorCode

log = logging.getLogger(__name__)

PREFIX = "/v2/api/"
MAX_BODY = 16 * 2**20
BODY_TIMEOUT = 30.0  # a body that has not fully arrived by then is refused
REQUEST_ID_HEADER = "x-tower-request-id"  # CloudTower's CommonHeader; also in the log line of the request


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], api: Api, tls: ssl.SSLContext | None) -> None:
        self.api = api
        self.tls = tls
        super().__init__(addr, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in the accept loop.
        if self.tls is not None:
            request.settimeout(30)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake from %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes; Nagle would add ~40 ms
    server: _Server
    server_version = "zbs-lite"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this
    request_id = ""
    _started = 0.0
    _op = ""

    def handle_one_request(self) -> None:
        self.request_id = str(uuid.uuid4())
        self._started = time.perf_counter()
        self._op = ""
        super().handle_one_request()

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Replaced by the one line per request that :meth:`_respond` writes."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _respond(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header(REQUEST_ID_HEADER, self.request_id)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            self._log(status)

    def _log(self, status: int) -> None:
        """Errors and changes at INFO, successful reads at DEBUG; the request id is the one the client got."""
        level = logging.DEBUG if status < 400 and self._op.startswith("get-") else logging.INFO
        if log.isEnabledFor(level):
            took = (time.perf_counter() - self._started) * 1000
            path = getattr(self, "path", "-")
            log.log(
                level, "%s %s %s -> %d in %.1f ms [request %s]", self.client_address[0], self.command, path, status,
                took, self.request_id,
            )  # fmt: skip

    def _error(self, err: ApiError, path: str) -> None:
        self._respond(err.status, err.body(path), err.headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What the base class refuses itself (a bad request line, any method but POST) answers JSON too."""
        self.close_connection = True
        self.request_version = self.protocol_version  # an unreadable request line left HTTP/0.9: no status line
        path = getattr(self, "path", "")
        if code == HTTPStatus.NOT_IMPLEMENTED:  # no do_<METHOD>: only POST exists
            if not path.split("?", 1)[0].startswith(PREFIX):
                err = ApiError(
                    404, f"no such path {path}; the API lives under {PREFIX}", code=ErrorCode.OPERATION_NOT_FOUND
                )
            else:
                err = ApiError(405, f"{self.command}: use POST with a JSON body", headers={"Allow": "POST"})
        else:
            err = ApiError(code, f"HTTP: {message or HTTPStatus(code).phrase}", code=ErrorCode.MALFORMED_REQUEST)
        self._error(err, path)

    def _read_body(self) -> bytes:
        """The whole body (Content-Length or chunked); anything less is refused and nothing is executed."""
        chunked = self.headers.get("Transfer-Encoding", "").strip().lower()
        if chunked and chunked != "chunked":
            self.close_connection = True
            raise ApiError(
                501,
                f"Transfer-Encoding {chunked!r}: send chunked or a Content-Length",
                code=ErrorCode.MALFORMED_REQUEST,
            )
        lengths = set(self.headers.get_all("Content-Length") or ["0"])
        text = lengths.pop().strip() if len(lengths) == 1 else ""
        if not chunked and not text.isdigit():
            self.close_connection = True
            raise ApiError(400, "Content-Length: expected one number of bytes", code=ErrorCode.MALFORMED_REQUEST)
        self.connection.settimeout(BODY_TIMEOUT)
        try:
            return self._read_chunks() if chunked else self._read_exactly(int(text), "Content-Length")
        except (TimeoutError, ValueError) as exc:
            self.close_connection = True
            log.warning(
                "%s: body of %s incomplete (%s); nothing executed [request %s]",
                self.client_address[0], self.path, exc, self.request_id,
            )  # fmt: skip
            raise ApiError(
                400, f"body: incomplete ({exc}); nothing was executed", code=ErrorCode.MALFORMED_REQUEST
            ) from None
        finally:
            self.connection.settimeout(self.timeout)

    def _read_exactly(self, length: int, what: str) -> bytes:
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"body: larger than {MAX_BODY} bytes")
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise ValueError(f"{len(data)} of the {length} bytes of {what} arrived")
        return data

    def _read_chunks(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise ValueError(f"the body ended after {len(body)} bytes, in a chunk header")
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                raise ValueError(f"a chunk size {size_text[:20]!r} is not hexadecimal")
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > MAX_BODY:
                self.close_connection = True
                raise ApiError(413, f"body: larger than {MAX_BODY} bytes")
            body += self._read_exactly(size, "a chunk")
            if self.rfile.read(2) != b"\r\n":
                raise ValueError(f"a chunk after {len(body)} bytes does not end with CRLF")
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers carry nothing we use
        return bytes(body)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            self._post(path)
        except ApiError as err:
            self._error(err, path)
        except RecursionError:
            self._error(ApiError(400, "body: nested too deeply", code=ErrorCode.MALFORMED_REQUEST), path)
        except Exception:
            log.exception("internal error in %s [request %s]", self._op or path, self.request_id)
            self._error(ApiError(500, f"{self._op}: internal error in zbs-lite (see its log)"), path)

    def _post(self, path: str) -> None:
        raw = self._read_body()
        if not path.startswith(PREFIX):
            raise ApiError(
                404, f"no such path {path}; the API lives under {PREFIX}", code=ErrorCode.OPERATION_NOT_FOUND
            )
        op = self._op = path[len(PREFIX) :]
        api = self.server.api
        handler = api.ops.get(op)
        if op != "login":
            if handler is None:
                raise ApiError(404, f"unknown operation {op!r}", code=ErrorCode.OPERATION_NOT_FOUND)
            if not api.tokens.valid(self.headers.get("Authorization")):
                raise ApiError(401, "missing, unknown or expired token; log in again")
        body = parse_body(raw)
        if handler is None:
            self._respond(200, api.login(body, self.client_address[0]))
        else:
            self._respond(200, handler(body))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(raw: bytes) -> Any:
    """The request's JSON: an object or an array, never absent or null (the spec requires a body)."""
    if not raw.strip():
        raise ApiError(
            400, "body: required (a JSON object; an array for create-like operations)", code=ErrorCode.MALFORMED_REQUEST
        )
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body: malformed JSON ({exc})", code=ErrorCode.MALFORMED_REQUEST) from None
    except RecursionError:
        raise ApiError(400, "body: malformed JSON (nested too deeply)", code=ErrorCode.MALFORMED_REQUEST) from None
    if not isinstance(body, (dict, list)):
        raise ApiError(
            400, f"body: expected a JSON object or array, got {type(body).__name__}", code=ErrorCode.MALFORMED_REQUEST
        )
    return body


class HttpFront:
    """One listening socket (HTTPS or HTTP) served from its own thread."""

    def __init__(self, host: str, port: int, api: Api, tls: ssl.SSLContext | None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        _Server.address_family = family
        self.server = _Server((host, port), api, tls)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"http-{self.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx
