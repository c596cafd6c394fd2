"""Filesystem operations on a device: probe, format (only if blank), mount, grow, stats."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .runner import CommandError, Runner

log = logging.getLogger(__name__)

EXT = ("ext2", "ext3", "ext4")


@dataclass(frozen=True)
class Usage:
    total: int
    used: int
    available: int
    inodes: int
    inodes_used: int
    inodes_free: int


class FsError(Exception):
    pass


def parse_blkid_export(text: str) -> dict[str, str]:
    """``blkid -o export`` output → {TYPE: ..., PTTYPE: ..., USAGE: ...}."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class Filesystems:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def probe(self, device: str) -> str:
        """What ``device`` holds: a filesystem type, ``ptable:<type>``, another signature's
        ``usage:<usage>``, or "" when it is provably blank.

        "Blank" is only ever the answer of a probe that ran on a readable block device which
        was still the same device afterwards: ``blkid -p`` exits 2 both for "no signature" and
        for a device it could not open, so a missing, unreadable or replaced device raises
        :class:`FsError` and the caller must not format.
        """
        before = self._readable_block_device(device)
        res = self.runner.run(["blkid", "-p", "-o", "export", device], timeout=60, check=False)
        if res.rc == 0:
            found = parse_blkid_export(res.stdout)
            if found.get("TYPE"):
                return found["TYPE"]
            if found.get("PTTYPE"):
                return "ptable:" + found["PTTYPE"]
            return "usage:" + (found.get("USAGE") or "unknown")
        if res.rc != 2 or res.stderr.strip():
            raise FsError(f"blkid {device} exited {res.rc}: {res.stderr.strip() or 'ambivalent result'}")
        if self._readable_block_device(device) != before:
            raise FsError(f"{device} changed while it was probed")
        return ""

    @staticmethod
    def _readable_block_device(device: str) -> tuple[int, int]:
        """(rdev, inode) of ``device`` after reading its first block; FsError when it cannot be read."""
        try:
            fd = os.open(device, os.O_RDONLY)
        except OSError as exc:
            raise FsError(f"cannot open {device}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISBLK(st.st_mode):
                raise FsError(f"{device} is not a block device")
            if len(os.pread(fd, 4096, 0)) != 4096:
                raise FsError(f"{device}: short read of its first block")
        except OSError as exc:
            raise FsError(f"cannot read {device}: {exc.strerror}") from None
        finally:
            os.close(fd)
        return st.st_rdev, st.st_ino

    def mkfs(self, device: str, fs_type: str) -> None:
        if fs_type in EXT:
            # ext2 has no journal, so no lazy_journal_init; mke2fs -t picks each one's features.
            lazy = "nodiscard,lazy_itable_init=1" + (",lazy_journal_init=1" if fs_type != "ext2" else "")
            argv = ["mke2fs", "-t", fs_type, "-F", "-q", "-E", lazy, device]
        elif fs_type == "xfs":
            argv = ["mkfs.xfs", "-f", "-q", "-K", device]
        else:
            raise FsError(f"unsupported filesystem {fs_type!r}")
        self.runner.run(argv, timeout=600)

    def preen(self, device: str) -> str:
        """``e2fsck -p``: fix what is safe to fix; a message when the fs needs a human."""
        res = self.runner.run(["e2fsck", "-p", device], timeout=1800, check=False)
        log.info("fsck preen", extra={"fields": {"device": device, "rc": res.rc}})
        if res.rc & ~3:  # 0 clean, 1 fixed, 2 fixed (reboot advised); 4+ needs a person
            return f"e2fsck -p exited {res.rc}: {(res.stdout + res.stderr).strip()[-300:]}"
        return ""

    @staticmethod
    def mount_options(fs_type: str, flags: list[str], readonly: bool) -> list[str]:
        opts = [f for f in flags if f]
        if fs_type == "xfs" and "nouuid" not in opts:
            opts.append("nouuid")
        if readonly and "ro" not in opts:
            opts.append("ro")
        return opts

    def mount(self, device: str, path: str, fs_type: str, options: list[str]) -> None:
        argv = ["mount", "-t", fs_type]
        if options:
            argv += ["-o", ",".join(options)]
        self.runner.run([*argv, device, path], timeout=300)

    def bind(self, source: str, path: str, readonly: bool) -> None:
        self.runner.run(["mount", "--bind", source, path], timeout=60)
        if readonly:
            try:
                self.runner.run(["mount", "-o", "remount,bind,ro", path], timeout=60)
            except CommandError:
                self.runner.run(["umount", path], timeout=60, check=False)
                raise

    def umount(self, path: str, lazy: bool = False) -> None:
        self.runner.run(["umount", "--lazy", path] if lazy else ["umount", path], timeout=120)

    def grow(self, device: str, mount_path: str, fs_type: str) -> None:
        if fs_type in EXT:
            self.runner.run(["resize2fs", device], timeout=600)
        elif fs_type == "xfs":
            self.runner.run(["xfs_growfs", mount_path], timeout=600)
        else:
            raise FsError(f"cannot grow {fs_type!r}")

    def device_size(self, device: str) -> int:
        return int(self.runner.run(["blockdev", "--getsize64", device], timeout=30).stdout.strip())

    @staticmethod
    def usage(path: str) -> Usage:
        st = os.statvfs(path)
        total = st.f_blocks * st.f_frsize
        free = st.f_bfree * st.f_frsize
        return Usage(
            total=total,
            used=total - free,
            available=st.f_bavail * st.f_frsize,
            inodes=st.f_files,
            inodes_used=st.f_files - st.f_ffree,
            inodes_free=st.f_ffree,
        )

    @staticmethod
    def is_block_device(path: str) -> bool:
        try:
            return stat.S_ISBLK(Path(path).stat().st_mode)
        except OSError:
            return False
