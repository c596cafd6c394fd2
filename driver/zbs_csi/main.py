"""``zbs-csi``: the CSI driver's entry point."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, ConfigError, load_config
from .log import setup_logging

log = logging.getLogger("zbs_csi")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="zbs-csi", description="CSI driver for SmartX ZBS over iSCSI")
    p.add_argument("--config", help="configuration file (.json or .toml)")
    p.add_argument("--endpoint", help="unix:///path/to/csi.sock")
    p.add_argument("--mode", choices=["controller", "node", "all"])
    p.add_argument("--node-id", help="this node's initiator IQN (default: read from the initiator name file)")
    p.add_argument("--connector", choices=["userspace", "kernel"])
    p.add_argument("--host-exec", choices=["none", "chroot", "nsenter"])
    p.add_argument("--state-dir")
    p.add_argument("--driver-name")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"zbs-csi {__version__}")
    return p.parse_args(argv)


def read_initiator_name(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
    m = re.search(r"^\s*InitiatorName\s*=\s*(\S+)\s*$", text, re.MULTILINE)
    return m[1] if m else ""


def build(cfg: Config) -> Any:
    """The driver for ``cfg`` (not started). Raises ValueError on a refused configuration."""
    from .server import Driver

    controller = node = None
    probes: list[Callable[[], list[str]]] = []
    if cfg.mode in ("controller", "all"):
        from .controller import ControllerService
        from .zbs import make_client, zerr

        client = make_client(cfg)
        controller = ControllerService(cfg, client)

        def probe_api() -> list[str]:
            try:
                client.clusters.list()
            except zerr.ZbsAuthError as exc:
                return [f"the ZBS API refused the driver's credentials (check the username and password): {exc}"]
            except zerr.ZbsConnectionError as exc:
                return [f"ZBS API unreachable: {exc}"]
            except zerr.ZbsError as exc:
                return [f"the ZBS API answered with an error: {exc}"]
            return []

        probes.append(probe_api)
    if cfg.mode in ("node", "all"):
        from .ids import is_iqn
        from .node.connectors import make_connector
        from .node.runner import HostRunner
        from .node.service import NodeService

        if not cfg.node_id:
            cfg.node_id = read_initiator_name(
                os.path.join(cfg.host_root, cfg.initiator_name_file.lstrip("/"))
                if cfg.host_exec == "chroot"
                else cfg.initiator_name_file
            )
        if not is_iqn(cfg.node_id):
            raise ValueError(f"node id {cfg.node_id!r} is not a valid initiator IQN; set --node-id")
        runner = HostRunner(default_timeout=cfg.command_timeout, strategy=cfg.host_exec, host_root=cfg.host_root)
        check_iqn_is_ours(cfg, runner)
        connector = make_connector(cfg, runner)
        node = NodeService(cfg, runner, connector)

        def probe_node() -> list[str]:
            missing = connector.missing()
            return [f"{connector.name} connector needs {', '.join(missing)}"] if missing else []

        probes.append(probe_node)

    def probe() -> list[str]:
        return [problem for p in probes for problem in p()]

    return Driver(cfg, controller=controller, node=node, probe=probe)


def check_iqn_is_ours(cfg: Config, runner: Any) -> None:
    """Refuse a node IQN that ZBS sees logged in from another host (when the API is reachable)."""
    if not (cfg.zbs_host and cfg.zbs_username and (cfg.zbs_password or cfg.zbs_password_file)):
        log.info("no ZBS API configured for the node: skipping the duplicate-IQN check")
        return
    from .node.iqn_guard import foreign_sessions, parse_ip_addr
    from .node.runner import CommandError
    from .zbs import make_client, zerr

    try:
        connections = make_client(cfg).connections.list()
        local = parse_ip_addr(runner.run(["ip", "-o", "addr", "show"], timeout=30).stdout)
    except (zerr.ZbsError, CommandError) as exc:
        log.warning("duplicate-IQN check skipped: %s", exc)
        return
    foreign = foreign_sessions(connections, cfg.node_id, local)
    if foreign:
        raise ValueError(
            f"initiator IQN {cfg.node_id} is in use by another host ({', '.join(foreign)}): "
            "give every node a unique /etc/iscsi/initiatorname.iscsi"
        )


def lock_state_dir(state_dir: str, node_id: str) -> Any:
    """One node plugin per state dir: a second one (or a second IQN) is refused."""
    Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    fh = open(os.path.join(state_dir, "node.lock"), "a+", encoding="utf-8")  # noqa: SIM115 - held for the process life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(f"another zbs-csi node plugin is running on {state_dir}") from None
    fh.seek(0)
    previous = fh.read().strip()
    if previous and previous != node_id:
        log.warning("node id changed from %s to %s", previous, node_id)
    fh.seek(0)
    fh.truncate()
    fh.write(node_id)
    fh.flush()
    return fh


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {
        "endpoint": args.endpoint,
        "mode": args.mode,
        "node_id": args.node_id,
        "connector": args.connector,
        "host_exec": args.host_exec,
        "state_dir": args.state_dir,
        "driver_name": args.driver_name,
        "log_level": args.log_level,
    }
    try:
        cfg = load_config(args.config, overrides=overrides)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"zbs-csi: configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    try:
        driver = build(cfg)
        lock = lock_state_dir(cfg.state_dir, cfg.node_id) if cfg.mode in ("node", "all") else None
    except Exception as exc:
        log.error("refusing to start: %s", exc)
        return 2
    if driver.node is not None:
        driver.node.reconcile()
        driver.node.start_session_watch()
    driver.start()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        driver.server.stop(5)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    driver.wait()
    Path(cfg.socket_path).unlink(missing_ok=True)
    if lock is not None:
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
