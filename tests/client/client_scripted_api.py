"""A scripted HTTP endpoint for transport faults zbs-lite never produces on purpose.

zbs-lite is the real counterpart for everything the API does; this server exists only to
inject what a healthy server does not do on demand — 5xx answers, hung requests, ignored
paging cursors, tasks that fail or never end — so retry, idempotency and secret-scrubbing
rules can be checked against a real socket. It listens on 127.0.0.1 port 0.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[dict[str, Any], dict[str, str]], tuple[int, Any]]


@dataclass
class Seen:
    op: str
    body: Any
    headers: dict[str, str]


@dataclass
class ScriptedApi:
    """Routes ``POST /v2/api/<op>`` to ``handlers[op]``; records every request."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    token: str = "tok-0123456789abcdef"
    password: str = "s3cret-Passw0rd"

    def __post_init__(self) -> None:
        self.handlers.setdefault("login", self._login)
        api = self

        class _H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                op = self.path.rsplit("/", 1)[-1]
                headers = dict(self.headers.items())
                api.seen.append(Seen(op, body, headers))
                handler = api.handlers.get(op)
                if handler is None:
                    status, payload = 404, {"message": f"no route {op}", "status": 404, "path": self.path}
                else:
                    status, payload = handler(body, headers)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class _Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that time out on purpose drop their connection

        self.server = _Server(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ops(self) -> list[str]:
        return [s.op for s in self.seen]

    def _login(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        if body.get("username") == "admin" and body.get("password") == self.password:
            return 200, {"task_id": None, "data": {"token": self.token}}
        return 401, {"message": "invalid username or password", "status": 401, "path": "/login"}

    def authed(self, headers: dict[str, str]) -> bool:
        return headers.get("Authorization") == self.token
