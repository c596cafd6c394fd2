"""Run a real zbs-lite from tests: ``with ZbsLiteProcess(tmp_path) as zl: ...``.

Defaults keep parallel runs apart: random API/iSCSI ports, chunk portals on a random
``127.x.y.1`` base, ``--pool dir``. The server is a direct child process (not daemonised)
so ``kill()`` really is SIGKILL of the server and ``wait()`` reaps it. After the first start
the bound ports are reused by ``restart()``/``start()``, so URLs stay valid across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from zbs_lite import control
from zbs_lite.service import is_running, read_state, run_dir, split_hostport

log = logging.getLogger(__name__)

_DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1",
    "api_port": 0,
    "vip": "127.0.0.1:0",
    "chunk_port": 0,
    "pool": "dir",
    "chunks": 3,
}


def random_loopback_base() -> str:
    """A ``127.x.y.1`` base for chunk portals that another test run is unlikely to pick."""
    return f"127.{random.randint(2, 254)}.{random.randint(0, 254)}.1"  # noqa: S311 - not security relevant


def free_port(host: str) -> int:
    """A port free on ``host`` now; chunk portals share one port on distinct loopback IPs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ZbsLiteError(RuntimeError):
    pass


class ZbsLiteProcess:
    def __init__(self, data_dir: str | os.PathLike[str], **serve_opts: Any) -> None:
        self.data_dir = Path(data_dir).resolve()
        opts = dict(_DEFAULTS)
        opts["chunk_ip_base"] = random_loopback_base()
        opts.update(serve_opts)
        if opts.get("chunk_port") == 0:
            opts["chunk_port"] = free_port(str(opts["chunk_ip_base"]))
        self.opts = opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {}
        self._token: str | None = None
        self._local = threading.local()

    # ------------------------------------------------------------------ life cycle

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "zbs_lite", "serve", "--data-dir", str(self.data_dir)]
        for key, value in self.opts.items():
            if value is None or value is False:
                continue
            flag = "--" + key.replace("_", "-")
            argv += [flag] if value is True else [flag, str(value)]
        return argv

    @property
    def log_path(self) -> Path:
        return run_dir(self.data_dir) / "serve.log"

    def start(self, timeout: float = 60) -> ZbsLiteProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise ZbsLiteError("already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        run_dir(self.data_dir).mkdir(exist_ok=True)
        env = dict(os.environ)
        env.setdefault("ZBS_LITE_LOG_LEVEL", "INFO")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = read_state(self.data_dir)
            if state and state.get("pid") == self.proc.pid:
                self.state = state
                self._pin_ports()
                self._token = None
                return self
            if self.proc.poll() is not None:
                raise ZbsLiteError(f"zbs-lite exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise ZbsLiteError(f"zbs-lite did not start within {timeout} s:\n{self.log_tail()}")

    def _pin_ports(self) -> None:
        """Reuse what was bound, so a restart keeps its URLs and portals."""
        self.opts["api_port"] = self.state["api_port"]
        if self.state.get("http_port"):
            self.opts["http_port"] = self.state["http_port"]
        self.opts["vip"] = self.state["vip"]

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("zbs-lite did not stop in %s s; killing it", timeout)
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup at all."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def restart(self) -> ZbsLiteProcess:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and is_running(self.data_dir)

    def __enter__(self) -> ZbsLiteProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ where it is

    @property
    def api_url(self) -> str:
        return str(self.state["api_url"])

    @property
    def http_url(self) -> str | None:
        return self.state.get("http_url")

    @property
    def username(self) -> str:
        return str(self.state["username"])

    @property
    def password(self) -> str:
        return Path(self.state["password_file"]).read_text().strip()

    @property
    def ca_path(self) -> str:
        return str(self.state["ca_path"])

    @property
    def vip(self) -> tuple[str, int]:
        return split_hostport(self.state["vip"], "vip")

    @property
    def chunks(self) -> list[tuple[str, int]]:
        return [split_hostport(c["portal"], "chunk") for c in self.state.get("chunks", [])]

    @property
    def pool_path(self) -> Path:
        return Path(self.state["data_path"])

    @property
    def clone_mode(self) -> str:
        return str(self.state["clone_mode"])

    @property
    def env(self) -> dict[str, str]:
        return {
            "ZBS_HOST": self.api_url,
            "ZBS_USERNAME": self.username,
            "ZBS_PASSWORD": self.password,
            "ZBS_CA_PATH": self.ca_path,
            "ZBS_VALIDATE_CERTS": "true",
            "ZBS_ISCSI_PORTAL": self.state["vip"],
            "ZBS_CLUSTER": self.state["cluster"],
        }

    # ------------------------------------------------------------------ control and raw API

    def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        resp = control.request(Path(self.state["control_socket"]), req)
        if not resp.get("ok"):
            raise ZbsLiteError(str(resp.get("error")))
        return resp

    def status(self) -> dict[str, Any]:
        return self._control({"op": "status"})

    def chunk_stop(self, n: int) -> None:
        self._control({"op": "chunk_stop", "n": n})

    def chunk_start(self, n: int) -> None:
        self._control({"op": "chunk_start", "n": n})

    def call(self, op: str, body: Any = None, *, token: str | None = None, timeout: float = 60) -> tuple[int, Any]:
        """One raw API call (logs in on first use): ``(HTTP status, decoded JSON)``.

        ``verify`` is passed per request because requests lets ``REQUESTS_CA_BUNDLE``
        override a session-level CA.
        """
        cached = token is None
        for attempt in range(2):
            if cached:
                if self._token is None or attempt:
                    self._token = self.login()
                token = self._token
            assert token is not None
            r = self._session().post(
                f"{self.api_url}/v2/api/{op}",
                data=json.dumps(body),
                headers={"Authorization": token, "Content-Type": "application/json"},
                verify=self.ca_path,
                timeout=timeout,
            )
            if r.status_code != 401 or not cached:
                break  # with our own token, log in again once on 401 like a real client
        return r.status_code, r.json()

    def _session(self) -> Any:
        """One keep-alive session per thread (TLS handshakes would dominate small calls)."""
        import requests

        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = self._local.session = requests.Session()
        return sess

    def login(self) -> str:
        import requests

        r = requests.post(
            f"{self.api_url}/v2/api/login",
            json={"username": self.username, "password": self.password, "source": "LOCAL"},
            verify=self.ca_path,
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["data"]["token"])

    def wait_tasks(self, task_ids: list[str | None], timeout: float = 60) -> list[dict[str, Any]]:
        """Poll get-tasks until every task is SUCCESSED or FAILED."""
        ids = [t for t in task_ids if t]
        deadline = time.monotonic() + timeout
        while True:
            status, tasks = self.call("get-tasks", {"where": {"id_in": ids}})
            if status != 200:
                raise ZbsLiteError(f"get-tasks: {tasks}")
            if len(tasks) == len(ids) and all(t["status"] in ("SUCCESSED", "FAILED") for t in tasks):
                return list(tasks)
            if time.monotonic() > deadline:
                raise ZbsLiteError(f"tasks not finished after {timeout} s: {tasks}")
            time.sleep(0.02)

    def cluster_id(self) -> str:
        return str(self.state["cluster_id"])
