"""The control socket (``DIR/run/control.sock``): one JSON request per line, one JSON answer.

Unix socket paths are limited to ~107 bytes and pytest's temporary directories are often
longer, so both ends reach the socket through ``/proc/self/fd/<dirfd>/control.sock`` when
the real path is too long.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_MAX_PATH = 100


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    if len(str(path)) <= _MAX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    def __init__(self, path: Path, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path = path
        self.handler = handler
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _short_path(path) as p:
            self.sock.bind(p)
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self._thread = threading.Thread(target=self._loop, name="control", daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as fh:
            conn.settimeout(60)
            for line in fh:
                try:
                    req = json.loads(line)
                    resp = self.handler(req) if isinstance(req, dict) else {"ok": False, "error": "expected an object"}
                except ValueError:
                    resp = {"ok": False, "error": "malformed JSON"}
                except Exception as exc:
                    log.exception("control request failed")
                    resp = {"ok": False, "error": str(exc) or type(exc).__name__}
                fh.write(json.dumps(resp).encode() + b"\n")
                fh.flush()

    def stop(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.path.unlink(missing_ok=True)


def request(path: Path, req: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        with _short_path(path) as p:
            sock.connect(p)
        with sock.makefile("rwb") as fh:
            fh.write(json.dumps(req).encode() + b"\n")
            fh.flush()
            line = fh.readline()
    if not line:
        raise ConnectionError("zbs-lite closed the control socket without answering")
    resp = json.loads(line)
    if not isinstance(resp, dict):
        raise ConnectionError("unexpected answer on the control socket")
    return resp
