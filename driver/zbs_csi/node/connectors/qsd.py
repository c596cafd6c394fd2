"""qemu-storage-daemon: one iSCSI LUN, logged in through libiscsi with the node's own IQN and
exported as a file over FUSE.

The userspace connector attaches volumes this way; the iSCSI tests (tests/zbs_lite/iscsi) and
bench/datapath.py attach through here too, so they exercise exactly the connector's daemon.
``--daemonize`` returns only once the session is logged in and the export exists, so a
successful :func:`start` means the LUN is readable at ``disk``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..runner import Runner

log = logging.getLogger(__name__)

NODE_NAME = "lun"
EXPORT_ID = "exp"
# qemu's iscsi ``timeout``: a command unanswered this long (s) makes libiscsi reconnect and
# retry it, through the VIP, so a stuck chunk is left behind (Linux sd's default is also 30 s).
REQUEST_TIMEOUT = 30


@dataclass(frozen=True)
class QsdExport:
    """What one daemon serves, and where its files are."""

    portal: str  # host:port
    target_iqn: str
    lun: int
    initiator: str
    disk: Path  # the FUSE mount point: an existing regular file
    qmp: Path  # QMP socket (block_resize)
    pidfile: Path
    readonly: bool = False
    chap_user: str = ""
    chap_secret_file: Path | None = None  # a 0600 file holding the CHAP secret (never argv)
    request_timeout: int = REQUEST_TIMEOUT

    def argv(self) -> list[str]:
        host, _, port = self.portal.rpartition(":")
        blockdev = (
            f"driver=iscsi,node-name={NODE_NAME},transport=tcp,portal={host}:{port},"
            f"target={self.target_iqn},lun={self.lun},initiator-name={self.initiator},"
            f"read-only={'on' if self.readonly else 'off'},timeout={self.request_timeout}"
        )
        argv = [
            "qemu-storage-daemon",
            "--daemonize",
            "--pidfile",
            str(self.pidfile),
            "--chardev",
            f"socket,id=qmp,path={self.qmp},server=on,wait=off",
            "--monitor",
            "chardev=qmp",
        ]
        if self.chap_secret_file is not None:
            argv += ["--object", f"secret,id=chap,file={self.chap_secret_file}"]
            blockdev += f",user={self.chap_user},password-secret=chap"
        return [
            *argv,
            "--blockdev",
            blockdev,
            "--export",
            f"type=fuse,id={EXPORT_ID},node-name={NODE_NAME},mountpoint={self.disk},"
            f"writable={'off' if self.readonly else 'on'}",
        ]


def start(runner: Runner, export: QsdExport, timeout: float) -> int:
    """Start the daemon for ``export`` (logged in and exported when this returns); its pid.

    Raises the runner's CommandError when the login or the export fails.
    """
    runner.run(export.argv(), timeout=timeout)
    return int(export.pidfile.read_text().strip())


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def is_ours(pid: int, marker: str) -> bool:
    """Whether ``pid`` is still a qemu-storage-daemon whose command line holds ``marker`` (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "qemu-storage-daemon" in cmdline and bool(marker) and marker in cmdline


def stop(pid: int, marker: str, grace: float = 30.0, on_stuck: Callable[[], None] | None = None) -> None:
    """SIGTERM the daemon (it logs out and removes its export); one still running after
    ``grace`` seconds gets ``on_stuck`` called, then SIGKILL (waited for up to 10 s).

    Only a pid that :func:`is_ours` for ``marker`` (a path of this attachment) is signalled.
    """
    if pid <= 1 or not pid_alive(pid) or not is_ours(pid, marker):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not pid_alive(pid):
        return
    log.warning("qemu-storage-daemon %d ignores SIGTERM: killing it", pid)
    if on_stuck is not None:
        on_stuck()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
