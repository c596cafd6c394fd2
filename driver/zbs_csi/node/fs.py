"""Filesystem operations on a device: probe, format (only if blank), mount, grow, stats."""

from __future__ import annotations

import logging
import os
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


class Filesystems:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def probe(self, device: str) -> str:
        """The filesystem type on ``device``; "" when blkid finds nothing (a blank device)."""
        res = self.runner.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], timeout=60, check=False)
        if res.rc == 2:  # blkid: nothing found
            return ""
        if res.rc != 0:
            raise FsError(f"blkid {device}: {res.stderr.strip()}")
        fs = res.stdout.strip()
        if not fs:
            # A partition table or another non-filesystem signature: never format over it.
            res = self.runner.run(["blkid", "-p", "-o", "value", "-s", "PTTYPE", device], timeout=60, check=False)
            if res.stdout.strip():
                return "ptable:" + res.stdout.strip()
        return fs

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
        import stat

        try:
            return stat.S_ISBLK(Path(path).stat().st_mode)
        except OSError:
            return False
