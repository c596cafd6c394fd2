"""``zbs-lite serve``: wires the pool, the database, the API, the data plane and the control socket.

The run directory ``DIR/run`` holds what other commands read: ``state.json`` (actual ports
and paths, written once everything listens), ``serve.lock`` (held while serving, so a
second server on the same directory refuses to start and ``status`` needs no pid games),
and ``control.sock`` (chunk stop/start).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zbs_lite import control
from zbs_lite.api import Api
from zbs_lite.db import Database
from zbs_lite.dbcatalog import DbCatalog
from zbs_lite.http import HttpFront, server_context
from zbs_lite.iscsi import DataPlane
from zbs_lite.private import check_secret_file, private_dir, private_file
from zbs_lite.settings import Settings
from zbs_lite.storage import Pool, PoolKind
from zbs_lite.tls import ensure_tls

log = logging.getLogger(__name__)
VERSION = "0.1.0"


@dataclass
class ServeOptions:
    data_dir: Path
    listen: str = "127.0.0.1"
    api_port: int = 8443
    http_port: int | None = None
    vip: str = "127.0.0.1:3260"
    chunks: int = 3
    chunk_ip_base: str = "127.0.1.1"
    chunk_port: int = 3261
    task_delay: float = 0.05
    pool: PoolKind = "auto"
    pool_size: int = 20 * 2**30
    username: str = "admin"
    password_file: Path | None = None
    token_ttl: float = 3600.0
    cluster_name: str = "zbs-lite"
    extra: dict[str, Any] = field(default_factory=dict)


def run_dir(data_dir: Path) -> Path:
    return data_dir / "run"


def state_path(data_dir: Path) -> Path:
    return run_dir(data_dir) / "state.json"


def lock_path(data_dir: Path) -> Path:
    return run_dir(data_dir) / "serve.lock"


def is_running(data_dir: Path) -> bool:
    """True while a server holds the data directory's lock (robust to stale pids and zombies)."""
    path = lock_path(data_dir)
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(data_dir).read_text())
    except (OSError, ValueError):
        return None


def split_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{what}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _password(opts: ServeOptions) -> tuple[str, Path]:
    if opts.password_file is not None:
        check_secret_file(opts.password_file, "--password-file")
        pw = opts.password_file.read_text().strip()
        if not pw:
            raise ValueError(f"--password-file {opts.password_file} is empty")
        return pw, opts.password_file
    path = opts.data_dir / "admin.password"
    if path.exists():
        private_file(path)
        return path.read_text().strip(), path
    pw = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pw + "\n")
    log.info("generated the admin password in %s", path)
    return pw, path


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class Service:
    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        self.data_dir = opts.data_dir.resolve()
        self._stop = threading.Event()
        self._lock_fh: Any = None
        self.dataplane: DataPlane | None = None
        self.fronts: list[HttpFront] = []
        self.control: control.ControlServer | None = None
        self.pool: Pool | None = None
        self.db: Database | None = None
        self.api: Api | None = None

    # ------------------------------------------------------------------ life cycle

    def _take_lock(self) -> None:
        rd = run_dir(self.data_dir)
        private_dir(rd)
        private_file(rd / "serve.log")
        fh = open(lock_path(self.data_dir), "a+")  # noqa: SIM115 - held for the server's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RuntimeError(f"another zbs-lite already serves {self.data_dir}") from None
        self._lock_fh = fh

    def start(self) -> dict[str, Any]:
        try:
            return self._start()
        except BaseException:
            self.shutdown()  # release what was opened: ports, data plane, the pool's mount
            raise

    def _start(self) -> dict[str, Any]:
        opts = self.opts
        # Everything this process creates is its user's alone (LUN data, logs, state, sockets);
        # what exists already is narrowed or refused by private_dir/private_file.
        os.umask(0o077)
        private_dir(self.data_dir)
        self._take_lock()
        state_path(self.data_dir).unlink(missing_ok=True)
        password, password_file = _password(opts)
        private_dir(self.data_dir / "tls")
        tls = ensure_tls(self.data_dir / "tls", opts.listen)
        for key in (tls.key, tls.ca_key):
            private_file(key)
        self.pool = Pool(self.data_dir, opts.pool, opts.pool_size)
        self.pool.open()
        meta = self.data_dir / "meta.db"
        private_file(meta, create=True)  # SQLite gives -wal and -shm the mode of the database file
        for side in ("-wal", "-shm"):
            private_file(meta.with_name(meta.name + side))
        self.db = Database(meta)
        base = ipaddress.ip_address(opts.chunk_ip_base)
        chunk_ips = [str(base + i) for i in range(opts.chunks)]
        settings = Settings(
            username=opts.username,
            password=password,
            cluster_name=opts.cluster_name,
            task_delay=opts.task_delay,
            token_ttl=opts.token_ttl,
            api_host=opts.listen,
            vip=opts.vip,
            chunk_ips=tuple(chunk_ips),
        )
        self.api = Api(self.db, self.pool, settings)
        fixed = self.api.reconcile()
        pending = self.api.pending_tasks()
        if pending:
            log.info("resuming %d unfinished task(s) from before the last stop", len(pending))
        self.api.runner.start()
        self.api.runner.submit(pending, 0)
        self.catalog = DbCatalog(self.db, self.pool, self.api.cluster_id)
        self.catalog.clear_connections()
        self.api.queries.sync_connections = self.catalog.flush_connections
        self.catalog.set_chunk_ips({i + 1: ip for i, ip in enumerate(chunk_ips)})
        vip = split_hostport(opts.vip, "--vip")
        chunks = [(ip, opts.chunk_port) for ip in chunk_ips]
        self._start_dataplane(vip, chunks)
        self.api.set_vip(self.dataplane_status()["vip"])
        self.fronts.append(HttpFront(opts.listen, opts.api_port, self.api, server_context(str(tls.cert), str(tls.key))))
        if opts.http_port is not None:
            self.fronts.append(HttpFront(opts.listen, opts.http_port, self.api, None))
        for f in self.fronts:
            f.start()
        self.control = control.ControlServer(run_dir(self.data_dir) / "control.sock", self.handle_control)
        self.control.start()
        host = f"[{opts.listen}]" if ":" in opts.listen else opts.listen
        dp = self.dataplane_status()
        state = {
            "pid": os.getpid(),
            "version": VERSION,
            "started_at": time.time(),
            "data_dir": str(self.data_dir),
            "api_url": f"https://{host}:{self.fronts[0].port}",
            "http_url": f"http://{host}:{self.fronts[1].port}" if len(self.fronts) > 1 else None,
            "listen": opts.listen,
            "api_port": self.fronts[0].port,
            "http_port": self.fronts[1].port if len(self.fronts) > 1 else None,
            "ca_path": str(tls.ca_cert),
            "cert_path": str(tls.cert),
            "username": opts.username,
            "password_file": str(password_file.resolve()),
            "cluster": opts.cluster_name,
            "cluster_id": self.api.cluster_id,
            "vip": dp["vip"],
            "chunks": [{"n": c["n"], "portal": c["portal"]} for c in dp["chunks"]],
            "data_plane": dp["present"],
            "data_path": str(self.pool.root),
            "pool": self.pool.kind,
            "clone_mode": self.pool.clone_mode,
            "task_delay": opts.task_delay,
            "recovered": fixed,
            "control_socket": str(run_dir(self.data_dir) / "control.sock"),
        }
        _write_json_atomic(state_path(self.data_dir), state)
        log.info(
            "zbs-lite serving %s (CA %s), data in %s (%s)",
            state["api_url"],
            tls.ca_cert,
            self.pool.root,
            self.pool.clone_mode,
        )
        return state

    def _start_dataplane(self, vip: tuple[str, int], chunks: list[tuple[str, int]]) -> None:
        self.dataplane = DataPlane(self.catalog, vip, chunks, throttle=self.api.throttle if self.api else None)
        self.dataplane.start()

    def dataplane_status(self) -> dict[str, Any]:
        assert self.dataplane is not None, "the data plane starts before anything asks for its status"
        return {**self.dataplane.status(), "present": True}

    def handle_control(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            idle = self.api.runner.idle() if self.api else None
            return {"ok": True, "data_plane": self.dataplane_status(), "tasks_idle": idle}
        if op in ("chunk_stop", "chunk_start"):
            n = req.get("n")
            if not isinstance(n, int) or not 1 <= n <= self.opts.chunks:
                return {"ok": False, "error": f"chunk number must be 1..{self.opts.chunks}"}
            assert self.dataplane is not None
            if op == "chunk_stop":
                self.dataplane.stop_chunk(n)
            else:
                self.dataplane.start_chunk(n)
            return {"ok": True, "data_plane": self.dataplane_status()}
        return {"ok": False, "error": f"unknown control operation {op!r}"}

    def wait(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        while not self._stop.wait(1):
            pass

    def shutdown(self) -> None:
        log.info("zbs-lite stopping")
        if self._lock_fh is not None:
            state_path(self.data_dir).unlink(missing_ok=True)
        if self.control is not None:
            self.control.stop()
        for f in self.fronts:
            f.stop()
        if self.dataplane is not None:
            try:
                self.dataplane.stop()
            except Exception:
                log.exception("stopping the data plane failed")
            self.catalog.flush_connections()  # the sessions it just closed, recorded before the database closes
        if self.api is not None:
            self.api.runner.stop()
        if self.db is not None:
            self.db.close()
        if self.pool is not None:
            self.pool.close()
        log.info("zbs-lite stopped")


def options_dict(opts: ServeOptions) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
