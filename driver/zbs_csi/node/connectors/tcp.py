"""Whether a process holds an established TCP connection, read from /proc (no tools needed).

qemu-storage-daemon's only TCP connections are its iSCSI session: none established means
the session is down (the target is gone and libiscsi is reconnecting).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ESTABLISHED = "01"
_SOCKET = re.compile(r"socket:\[(\d+)\]")


def established_inodes(table: str) -> set[int]:
    """The socket inodes of the ESTABLISHED rows of a /proc/net/tcp or tcp6 table."""
    out: set[int] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == ESTABLISHED and fields[9].isdigit():
            out.add(int(fields[9]))
    return out


def socket_inodes(pid: int, proc: Path = Path("/proc")) -> set[int]:
    inodes: set[int] = set()
    fd_dir = proc / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            m = _SOCKET.fullmatch(os.readlink(fd_dir / name))
        except OSError:
            continue
        if m:
            inodes.add(int(m[1]))
    return inodes


def has_established(pid: int, proc: Path = Path("/proc")) -> bool:
    """True when ``pid`` holds at least one ESTABLISHED TCP connection (IPv4 or IPv6)."""
    mine = socket_inodes(pid, proc)
    if not mine:
        return False
    for table in ("tcp", "tcp6"):
        try:
            text = (proc / str(pid) / "net" / table).read_text(encoding="ascii")
        except OSError:
            continue
        if mine & established_inodes(text):
            return True
    return False
