"""The blank-device probe on real block devices (loop devices, the real ``blkid``).

NodeStage formats only what this probe calls blank. ``blkid -p`` exits 2 both for "no
signature" and for a path it could not open, which once let a missing ``/dev/mapper`` link
pass for a blank volume (tests/vm/test_format_guard.py stages through a slow udev in a VM).
Here the probe's own rule is pinned: only a readable block device with no signature is blank;
anything it could not read is an error, never "".
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from zbs_csi.node.fs import Filesystems, FsError
from zbs_csi.node.runner import Runner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")


def attach(backing: Path) -> str:
    with open(backing, "wb") as f:
        f.truncate(64 << 20)
    return subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[str]:
    """A 64 MiB loop device of this test's own; detached afterwards."""
    dev = attach(tmp_path / "vol.img")
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False, timeout=30)


def test_blkid_reads_a_missing_path_as_it_reads_a_blank_device(tmp_path: Path, loop: str) -> None:
    # The trap itself: the exit code alone cannot tell "blank" from "not there".
    missing = subprocess.run(["blkid", "-p", str(tmp_path / "gone")], capture_output=True, timeout=30)
    blank = subprocess.run(["blkid", "-p", loop], capture_output=True, timeout=30)
    assert missing.returncode == blank.returncode == 2


def test_a_blank_device_is_blank(loop: str) -> None:
    assert Filesystems(Runner()).probe(loop) == ""


def test_a_device_with_a_filesystem_is_not_blank(loop: str) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", loop], check=True, timeout=120)
    assert Filesystems(Runner()).probe(loop) == "ext4"


def test_a_missing_device_is_an_error_not_blank(tmp_path: Path) -> None:
    with pytest.raises(FsError, match="cannot open"):
        Filesystems(Runner()).probe(str(tmp_path / "mapper-link-udev-has-not-made-yet"))


def test_a_regular_file_is_an_error_not_blank(tmp_path: Path) -> None:
    img = tmp_path / "file.img"
    img.write_bytes(b"\0" * 8192)
    with pytest.raises(FsError, match="not a block device"):
        Filesystems(Runner()).probe(str(img))


def test_a_detached_device_is_an_error_not_blank(tmp_path: Path) -> None:
    # A loop device with no backing file: the node exists, reading it fails (like a path whose
    # LUN went away). blkid would again say 2. (Not the fixture: once detached, the number may
    # be someone else's device by teardown time.)
    dev = attach(tmp_path / "gone.img")
    subprocess.run(["losetup", "--detach", dev], check=True, timeout=30)
    with pytest.raises(FsError):
        Filesystems(Runner()).probe(dev)
