"""The kernel side of a FUSE export: find its connection and abort it.

Aborting (``/sys/fs/fuse/connections/N/abort``) ends every pending and future request of
that FUSE filesystem with an error, whatever its daemon does. It is how a FUSE export whose
daemon can no longer answer (its iSCSI target is gone and libiscsi reconnects forever) is
kept from leaving an unmount or a loop detach blocked in the kernel.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..mounts import MountEntry, find_mount
from ..runner import CommandError, Runner

log = logging.getLogger(__name__)

CONNECTIONS = Path("/sys/fs/fuse/connections")


def connection_id(entry: MountEntry) -> int | None:
    """The fusectl directory number of a FUSE mount: its superblock's device number."""
    if not entry.fs_type.startswith("fuse"):
        return None
    major, _, minor = entry.major_minor.partition(":")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return (int(major) << 20) | int(minor)  # the kernel's internal dev_t, as fusectl names it


def _ensure_fusectl(runner: Runner, connections: Path) -> None:
    """fusectl is normally mounted by systemd; a node plugin container may have to do it."""
    if find_mount(str(connections)) is not None:
        return
    try:
        runner.run(["mount", "-t", "fusectl", "fusectl", str(connections)], timeout=30)
    except CommandError as exc:
        if find_mount(str(connections)) is None:  # another caller may just have mounted it
            raise OSError(f"cannot mount fusectl at {connections}: {exc.stderr}") from exc


def abort(mountpoint: str, runner: Runner, connections: Path = CONNECTIONS) -> bool:
    """Abort the FUSE connection mounted at ``mountpoint``; False when there is none."""
    entry = find_mount(mountpoint)
    conn = connection_id(entry) if entry is not None else None
    if conn is None:
        return False
    _ensure_fusectl(runner, connections)
    try:
        (connections / str(conn) / "abort").write_text("1", encoding="ascii")
    except FileNotFoundError:
        return False  # the connection ended by itself (its daemon exited)
    log.warning("aborted FUSE connection %d of %s: its pending I/O fails now", conn, mountpoint)
    return True
