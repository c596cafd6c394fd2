"""The data directory and the secrets in it belong to the server's user alone: 0700 and 0600.

``meta.db`` holds CHAP secrets in plain text, ``tls/`` the keys, ``admin.password`` the API
password. Whatever made a file (an older zbs-lite, a restored backup, ``sqlite3`` by hand),
the server narrows the modes of what it owns at start, and refuses a directory or secret
that another user owns (that user could read or replace it) or that is a symlink.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


class UnsafePath(PermissionError):
    """A directory or secret zbs-lite must not use as it is."""


def private_dir(path: Path) -> None:
    """``path`` exists as a directory only its owner (this process's user) can enter."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _narrow(path, DIR_MODE, stat.S_ISDIR, "directory")


def private_file(path: Path, *, create: bool = False) -> None:
    """``path`` (made empty when ``create`` and absent) is readable by its owner only."""
    if os.path.lexists(path):
        _narrow(path, FILE_MODE, stat.S_ISREG, "file")
    elif create:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE))


def check_secret_file(path: Path, what: str) -> None:
    """A secret the user hands in (``--password-file``): refused, not changed, when others may read it."""
    st = os.stat(path)
    if st.st_uid not in (os.geteuid(), 0):
        raise UnsafePath(f"{what} {path} belongs to uid {st.st_uid}; it must be ours (uid {os.geteuid()}) or root's")
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise UnsafePath(f"{what} {path} is open to other users (mode {mode:04o}); chmod 600 {path}")


def _narrow(path: Path, mode: int, is_kind: Callable[[int], bool], kind: str) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{path} is a symlink; zbs-lite keeps its secrets in plain files and directories")
    if not is_kind(st.st_mode):
        raise UnsafePath(f"{path} is not a {kind}")
    if st.st_uid != os.geteuid():
        raise UnsafePath(
            f"{path} belongs to uid {st.st_uid}, not to uid {os.geteuid()} that runs zbs-lite: "
            "chown it or use another data directory"
        )
    current = stat.S_IMODE(st.st_mode)
    if current & ~mode:
        os.chmod(path, current & mode)
        log.warning("%s was open to other users (mode %04o); now %04o", path, current, current & mode)
