"""HTTP(S) front of the API: ``POST /v2/api/<operation>`` with JSON, token auth, ErrorBody.

Any failure becomes a JSON ErrorBody; a bug is logged with its traceback server-side and
answered with a plain 500 message, never a traceback.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from zbs_lite.api import Api
from zbs_lite.errors import ApiError

log = logging.getLogger(__name__)

PREFIX = "/v2/api/"
MAX_BODY = 16 * 2**20


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

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        started = getattr(self, "_started", None)
        if started is not None and log.isEnabledFor(logging.DEBUG):
            took = (time.perf_counter() - started) * 1000
            log.debug("%s %s -> %d (%d bytes, %.1f ms)", self.address_string(), self.path, status, len(data), took)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: ApiError, path: str) -> None:
        self._send(err.status, err.body(path))

    def do_GET(self) -> None:
        self._drain()
        self._error(ApiError(404 if not self.path.startswith(PREFIX) else 405, "use POST with a JSON body"), self.path)

    do_PUT = do_DELETE = do_PATCH = do_GET

    def _drain(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:
        self._started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        raw = self._drain()
        if raw is None:
            self._error(ApiError(400, f"body: missing, invalid or larger than {MAX_BODY} bytes"), path)
            return
        if not path.startswith(PREFIX):
            self._error(ApiError(404, f"no such path {path}; the API lives under {PREFIX}"), path)
            return
        op = path[len(PREFIX) :]
        api = self.server.api
        handler = api.ops.get(op)
        if op != "login" and handler is None:
            self._error(ApiError(404, f"unknown operation {op!r}"), path)
            return
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError) as exc:
            self._error(ApiError(400, f"body: malformed JSON ({exc})"), path)
            return
        except RecursionError:
            self._error(ApiError(400, "body: malformed JSON (nested too deeply)"), path)
            return
        try:
            if op == "login":
                self._send(200, api.login(body))
                return
            if not api.tokens.valid(self.headers.get("Authorization")):
                self._error(ApiError(401, "missing, unknown or expired token; log in again"), path)
                return
            assert handler is not None
            self._send(200, handler(body))
        except ApiError as err:
            self._error(err, path)
        except RecursionError:
            self._error(ApiError(400, "body: nested too deeply"), path)
        except Exception:
            log.exception("internal error in %s", op)
            self._error(ApiError(500, f"{op}: internal error in zbs-lite (see its log)"), path)


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
