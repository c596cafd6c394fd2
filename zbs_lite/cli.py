"""The ``zbs-lite`` command: serve, stop, status, env, chunk stop|start."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomllib

from zbs_lite import control
from zbs_lite.private import private_dir
from zbs_lite.service import (
    ServeOptions,
    Service,
    is_running,
    read_state,
    run_dir,
    split_hostport,
)

log = logging.getLogger("zbs_lite")

_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _SIZE_UNITS and not t[-1:].isdigit() else ""
    number = t[: -len(unit)] if unit else t
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 20G)")
    return int(number) * _SIZE_UNITS[unit]


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return int(text)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zbs-lite", description="A local ZBS-compatible storage service.")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the service (API, iSCSI portals)")
    s.add_argument("--data-dir", type=Path, required=True)
    s.add_argument("--daemon", action="store_true", help="detach; return once the API answers")
    s.add_argument("--config", type=Path, help="TOML or JSON file with the same keys as the flags")
    s.add_argument("--listen")
    s.add_argument("--api-port", type=_port, help="HTTPS API port (0 = random)")
    s.add_argument("--http-port", type=_port, help="also serve plain HTTP on this port (0 = random)")
    s.add_argument("--vip", help="iSCSI access portal HOST:PORT (port 0 = random)")
    s.add_argument("--chunks", type=int)
    s.add_argument("--chunk-ip-base")
    s.add_argument("--chunk-port", type=_port)
    s.add_argument("--task-delay", type=float)
    s.add_argument("--pool", choices=("auto", "xfs", "dir"))
    s.add_argument("--pool-size", type=parse_size)
    s.add_argument("--username")
    s.add_argument("--password-file", type=Path)
    s.add_argument("--token-ttl", type=float)
    s.add_argument("--cluster-name")
    s.add_argument("--log-level", default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    for name, text in (
        ("stop", "stop a running zbs-lite"),
        ("status", "is it running, and where"),
        ("env", "print export lines"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument("--data-dir", type=Path, required=True)
        if name == "status":
            c.add_argument("--json", action="store_true")
        if name == "stop":
            c.add_argument("--timeout", type=float, default=60)

    ch = sub.add_parser("chunk", help="stop or start one chunk server (fault tests)")
    ch.add_argument("action", choices=("stop", "start"))
    ch.add_argument("n", type=int)
    ch.add_argument("--data-dir", type=Path, required=True)
    return p


_OPTION_KEYS = {
    "listen": str,
    "api_port": int,
    "http_port": int,
    "vip": str,
    "chunks": int,
    "chunk_ip_base": str,
    "chunk_port": int,
    "task_delay": float,
    "pool": str,
    "pool_size": int,
    "username": str,
    "password_file": Path,
    "token_ttl": float,
    "cluster_name": str,
}


def _load_config(path: Path) -> dict[str, Any]:
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of options")
    out: dict[str, Any] = {}
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in _OPTION_KEYS:
            raise ValueError(f"{path}: unknown option {key!r}")
        if k == "pool_size" and isinstance(value, str):
            value = parse_size(value)
        out[k] = _OPTION_KEYS[k](value)
    return out


def serve_options(args: argparse.Namespace) -> ServeOptions:
    merged: dict[str, Any] = _load_config(args.config) if args.config else {}
    for key in _OPTION_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    opts = ServeOptions(data_dir=args.data_dir, **merged)
    split_hostport(opts.vip, "--vip")
    if not 1 <= opts.chunks <= 64:
        raise ValueError("--chunks must be between 1 and 64")
    if opts.task_delay < 0:
        raise ValueError("--task-delay must not be negative")
    if opts.token_ttl <= 0:
        raise ValueError("--token-ttl must be positive")
    return opts


def cmd_serve(args: argparse.Namespace, argv: list[str]) -> int:
    opts = serve_options(args)
    if args.daemon:
        return _daemonize(opts, argv)
    svc = Service(opts)
    try:
        state = svc.start()
    except Exception as exc:
        log.error("zbs-lite could not start: %s", exc)
        return 1
    log.info("ready: %s", json.dumps({k: state[k] for k in ("api_url", "ca_path", "vip", "data_path", "clone_mode")}))
    try:
        svc.wait()
    finally:
        svc.shutdown()
    return 0


def _daemonize(opts: ServeOptions, argv: list[str]) -> int:
    data_dir = opts.data_dir.resolve()
    if is_running(data_dir):
        print(f"zbs-lite already serves {data_dir}", file=sys.stderr)
        return 1
    rd = run_dir(data_dir)
    private_dir(data_dir)
    private_dir(rd)
    child_argv = [a for a in argv if a != "--daemon"]
    log_path = rd / "serve.log"
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zbs_lite", *child_argv],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = read_state(data_dir)
        if state and state.get("pid") == proc.pid:
            _print_status(data_dir, as_json=False)
            return 0
        if proc.poll() is not None:
            print(f"zbs-lite exited with {proc.returncode}; log {log_path}:", file=sys.stderr)
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"zbs-lite did not come up within 120 s; see {log_path}", file=sys.stderr)
    return 1


def _status(data_dir: Path) -> dict[str, Any]:
    state = read_state(data_dir)
    running = is_running(data_dir)
    out: dict[str, Any] = {"running": bool(running and state), "data_dir": str(data_dir)}
    if not (running and state):
        return out
    out.update(state)
    try:
        live = control.request(Path(state["control_socket"]), {"op": "status"}, timeout=10)
        dp = live.get("data_plane", {})
        out["data_plane"] = dp.get("present", False)
        out["vip"] = dp.get("vip", state.get("vip"))
        out["chunks"] = dp.get("chunks", state.get("chunks"))
        out["tasks_idle"] = live.get("tasks_idle")
    except (OSError, ValueError, ConnectionError) as exc:
        out["control_error"] = str(exc)
    return out


def _print_status(data_dir: Path, *, as_json: bool) -> dict[str, Any]:
    st = _status(data_dir)
    if as_json:
        print(json.dumps(st, indent=2))
        return st
    if not st["running"]:
        print(f"zbs-lite: not running ({data_dir})")
        return st
    lines = [
        f"zbs-lite: running (pid {st['pid']})",
        f"  API:        {st['api_url']}/v2/api" + (f"  (plain HTTP {st['http_url']})" if st.get("http_url") else ""),
        f"  CA:         {st['ca_path']}",
        f"  user:       {st['username']} (password in {st['password_file']})",
        f"  cluster:    {st['cluster']}",
        f"  data:       {st['data_path']} (pool {st['pool']}, copies by {st['clone_mode']})",
    ]
    if st.get("tasks_idle") is not None:
        lines.append(f"  tasks:      {'idle' if st['tasks_idle'] else 'running'} (task delay {st['task_delay']}s)")
    lines.append(f"  VIP portal: {st['vip']}")
    for c in st.get("chunks", []):
        state = "up" if c.get("up") else "down"
        lines.append(f"  chunk {c['n']}:    {c['portal']} {state} ({c.get('sessions', 0)} sessions)")
    print("\n".join(lines))
    return st


def cmd_stop(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.resolve()
    state = read_state(data_dir)
    if not is_running(data_dir):
        print(f"zbs-lite: not running ({data_dir})")
        return 0
    if not state:
        print("zbs-lite is starting or stopping; try again", file=sys.stderr)
        return 1
    os.kill(int(state["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not is_running(data_dir):
            print("zbs-lite: stopped")
            return 0
        time.sleep(0.1)
    print(f"zbs-lite (pid {state['pid']}) did not stop within {args.timeout:.0f} s", file=sys.stderr)
    return 1


def env_lines(data_dir: Path) -> list[str]:
    state = read_state(data_dir)
    if not state or not is_running(data_dir):
        raise RuntimeError(f"zbs-lite is not running in {data_dir}")
    password = Path(state["password_file"]).read_text().strip()
    values = {
        "ZBS_HOST": state["api_url"],
        "ZBS_USERNAME": state["username"],
        "ZBS_PASSWORD": password,
        "ZBS_CA_PATH": state["ca_path"],
        "ZBS_VALIDATE_CERTS": "true",
        "ZBS_ISCSI_PORTAL": state["vip"],
        # every chunk server's own portal: one multipath path each (docs/csi-driver.md, Multipath)
        "ZBS_ISCSI_DATA_PORTALS": ",".join(c["portal"] for c in state["chunks"]),
        "ZBS_CLUSTER": state["cluster"],
    }
    return [f"export {k}={shlex.quote(str(v))}" for k, v in values.items()]


def cmd_env(args: argparse.Namespace) -> int:
    try:
        print("\n".join(env_lines(args.data_dir.resolve())))
    except (RuntimeError, OSError) as exc:
        print(f"zbs-lite env: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_chunk(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.resolve()
    state = read_state(data_dir)
    if not state or not is_running(data_dir):
        print(f"zbs-lite is not running in {data_dir}", file=sys.stderr)
        return 1
    resp = control.request(Path(state["control_socket"]), {"op": f"chunk_{args.action}", "n": args.n})
    if not resp.get("ok"):
        print(f"zbs-lite chunk {args.action} {args.n}: {resp.get('error')}", file=sys.stderr)
        return 1
    for c in resp["data_plane"].get("chunks", []):
        if c["n"] == args.n:
            print(f"chunk {c['n']}: {c['portal']} {'up' if c.get('up') else 'down'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    level = getattr(args, "log_level", None) or os.environ.get("ZBS_LITE_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.cmd == "serve":
            return cmd_serve(args, argv)
        if args.cmd == "stop":
            return cmd_stop(args)
        if args.cmd == "status":
            st = _print_status(args.data_dir.resolve(), as_json=args.json)
            return 0 if st["running"] else 3
        if args.cmd == "env":
            return cmd_env(args)
        return cmd_chunk(args)
    except (ValueError, OSError) as exc:
        print(f"zbs-lite {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
