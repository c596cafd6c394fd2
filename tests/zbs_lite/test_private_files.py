"""Finding 7: the data directory and its secrets belong to the server's user alone, whatever made them.

``meta.db`` (and its -wal/-shm) holds CHAP secrets in plain text, ``tls/*.key`` the keys,
``admin.password`` the API password. The checks look at the modes and also try to read as
user ``nobody`` from a directory everyone may traverse, as the issue's reporter did.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from zl_helpers import Api

from zbs_lite.testing import ZbsLiteError, ZbsLiteProcess, free_port, random_loopback_base

SECRETS = ("meta.db", "meta.db-wal", "meta.db-shm", "tls/ca.key", "tls/server.key", "admin.password")
NOBODY = 65534
ROOT = os.geteuid() == 0


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A directory every user may enter (pytest's own tmp dirs are 0700, which would hide the finding)."""
    parent = Path(tempfile.mkdtemp(prefix="zlapi-private-", dir="/tmp"))
    parent.chmod(0o755)
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def readable_by_nobody(path: Path) -> bool:
    r = subprocess.run(
        ["head", "-c", "1", str(path)], preexec_fn=lambda: os.setuid(NOBODY), capture_output=True, timeout=30
    )
    return r.returncode == 0


def assert_private(data_dir: Path) -> None:
    assert mode(data_dir) == 0o700, oct(mode(data_dir))
    for name in SECRETS:
        path = data_dir / name
        assert path.exists(), name
        assert mode(path) & 0o077 == 0, f"{name} is {oct(mode(path))}"
        if ROOT:
            assert not readable_by_nobody(path), f"nobody read {name}"


def refused(zl: ZbsLiteProcess, needle: str) -> None:
    """Starting ``zl`` must fail saying ``needle`` (and if it serves after all, it is stopped again)."""
    try:
        zl.start()
    except ZbsLiteError as exc:
        assert needle in str(exc), str(exc)
        return
    zl.stop()
    pytest.fail(f"zbs-lite started; expected a refusal saying {needle!r}")


def serve_daemon(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    base = random_loopback_base()
    argv = [
        sys.executable, "-m", "zbs_lite", "serve", "--daemon", "--data-dir", str(data_dir), "--api-port", "0",
        "--vip", "127.0.0.1:0", "--chunk-ip-base", base, "--chunk-port", str(free_port(base)), "--pool", "dir", *extra,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


def test_a_data_dir_zbs_lite_makes_is_private(open_parent: Path) -> None:
    data_dir = open_parent / "new" / "zbs-lite"
    r = serve_daemon(data_dir)
    try:
        assert r.returncode == 0, r.stderr
        zl = ZbsLiteProcess(data_dir)
        zl.state = json.loads((data_dir / "run" / "state.json").read_text())  # attach to the daemon
        Api(zl).target()  # a write, so the WAL and its index exist
        assert_private(data_dir)
        assert mode(data_dir / "run" / "serve.log") == 0o600
    finally:
        subprocess.run([sys.executable, "-m", "zbs_lite", "stop", "--data-dir", str(data_dir)], timeout=120)


def test_loose_modes_from_before_are_narrowed_at_start(open_parent: Path) -> None:
    """As an older zbs-lite, a restored backup or `sqlite3` by hand would leave them."""
    data_dir = open_parent / "old"
    with ZbsLiteProcess(data_dir) as zl:
        Api(zl).target()
    os.chmod(data_dir, 0o755)
    for path in data_dir.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    if ROOT:
        assert readable_by_nobody(data_dir / "meta.db"), "the probe must be able to catch a readable file"
    with ZbsLiteProcess(data_dir) as zl:
        Api(zl).target()
        assert_private(data_dir)


@pytest.mark.skipif(not ROOT, reason="needs root to hand a directory to another user")
def test_a_data_dir_or_secret_of_another_user_is_refused(open_parent: Path) -> None:
    data_dir = open_parent / "theirs"
    data_dir.mkdir()
    os.chown(data_dir, NOBODY, NOBODY)
    refused(ZbsLiteProcess(data_dir), f"belongs to uid {NOBODY}")
    os.chown(data_dir, 0, 0)
    elsewhere = open_parent / "elsewhere.db"
    elsewhere.touch()
    (data_dir / "meta.db").symlink_to(elsewhere)
    refused(ZbsLiteProcess(data_dir), "is a symlink")


def test_a_password_file_open_to_others_is_refused(open_parent: Path) -> None:
    password = open_parent / "password"
    password.write_text("s3cret-s3cret\n")
    password.chmod(0o644)
    refused(ZbsLiteProcess(open_parent / "pw", password_file=str(password)), "chmod 600")
    password.chmod(0o600)
    with ZbsLiteProcess(open_parent / "pw", password_file=str(password)) as zl:
        assert zl.login()
