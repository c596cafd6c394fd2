"""Runs INSIDE a node VM (Debian's python3 with the project venv): the kernel connector with
CHAP, every command it runs recorded, and a sampler of the VM's process list.

    chap_node.py attach    stdin: {"volume_id", "context", "secrets", "multipath"}
                           stdout: {"device", "data", "runs"} or {"error", "retryable", "runs"}
    chap_node.py detach    stdin: {"volume_id", "context", "data", "multipath"}; stdout: {"runs"}
    chap_node.py sample STOPFILE   until STOPFILE exists, read every process's cmdline and
                           environ (STOPFILE.ready once the first pass is done); stdout:
                           {"samples", "cmdlines", "environs"} (each distinct one once)

The secrets come on stdin, never in this script's own argv or environment, so what the
sampler sees is the connector's doing alone. ``runs`` lists each command's argv and the
environment it ran with (the runner's fixed one plus what the caller added).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zbs_csi.chap import chap_from_secrets
from zbs_csi.node.connectors.base import AttachTarget, ConnectorError
from zbs_csi.node.connectors.kernel import KernelConnector
from zbs_csi.node.runner import FIXED_PATH, HostRunner, Result


@dataclass
class RecordingHostRunner(HostRunner):
    """The node plugin's runner (host-exec ``none`` in the VM), recording what it runs."""

    runs: list[dict[str, Any]] = field(default_factory=list)

    def run(self, argv: Any, **kw: Any) -> Result:
        env = {"PATH": FIXED_PATH, "LC_ALL": "C", **(kw.get("env") or {})}
        self.runs.append({"argv": list(argv), "env": env, "stdin": kw.get("stdin") is not None})
        return super().run(argv, **kw)


def _connector(req: dict[str, Any]) -> tuple[KernelConnector, RecordingHostRunner, AttachTarget]:
    runner = RecordingHostRunner()
    initiator = Path("/etc/iscsi/initiatorname.iscsi").read_text().split("=", 1)[1].strip()
    conn = KernelConnector(runner, initiator, multipath=req["multipath"])
    return conn, runner, AttachTarget.from_context(req["volume_id"], req["context"])


def attach(req: dict[str, Any]) -> dict[str, Any]:
    conn, runner, target = _connector(req)
    try:
        att = conn.attach(target, chap_from_secrets(req["secrets"]), lambda _data: None)
    except ConnectorError as exc:
        return {"error": str(exc), "retryable": exc.retryable, "runs": runner.runs}
    conn.verify(att.device, att.data, target.volume_id)
    return {"device": att.device, "data": att.data, "runs": runner.runs}


def detach(req: dict[str, Any]) -> dict[str, Any]:
    conn, runner, target = _connector(req)
    conn.detach(target, req["data"], [])
    return {"runs": runner.runs}


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:  # the process ended meanwhile
        return ""


def sample(stop: Path) -> dict[str, Any]:
    cmdlines: set[str] = set()
    environs: set[str] = set()
    samples = 0
    while not stop.exists():
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                cmdlines.add(_read(proc / "cmdline"))
                environs.add(_read(proc / "environ"))
        samples += 1
        if samples == 1:
            Path(f"{stop}.ready").touch()
        time.sleep(0.002)
    return {"samples": samples, "cmdlines": sorted(cmdlines - {""}), "environs": sorted(environs - {""})}


def main() -> None:
    if sys.argv[1] == "sample":
        print(json.dumps(sample(Path(sys.argv[2]))))
        return
    req = json.load(sys.stdin)
    print(json.dumps(attach(req) if sys.argv[1] == "attach" else detach(req)))


if __name__ == "__main__":
    main()
