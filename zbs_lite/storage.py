"""LUN and snapshot data files: one sparse file each, named from ids, never from user names.

New files are written under ``tmp/`` and renamed into place, so a crash leaves either the
whole file or nothing; rollback and resize change the existing inode, so the data plane's
open file descriptors stay valid. Copies use FICLONE (reflink) when the pool's filesystem
has it (XFS, btrfs) and a hole-preserving copy otherwise.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
PoolKind = Literal["auto", "xfs", "dir"]
_COPY_CHUNK = 8 * 2**20


class PoolError(RuntimeError):
    pass


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            return any(line.split()[4] == target for line in fh)
    except OSError:
        return False


def _run(argv: list[str], timeout: float = 120) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise PoolError(f"{argv[0]} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")


def xfs_possible() -> bool:
    """Root, mkfs.xfs and loop devices: what ``--pool xfs`` needs."""
    return (
        os.geteuid() == 0
        and shutil.which("mkfs.xfs") is not None
        and shutil.which("mount") is not None
        and os.path.exists("/dev/loop-control")
    )


@dataclass
class Pool:
    """Where LUN files live: ``DIR/pool`` (a plain directory or a loop-mounted XFS image)."""

    data_dir: Path
    kind: PoolKind = "dir"
    size: int = 20 * 2**30
    clone_mode: str = "copy"
    mounted_by_us: bool = False
    usage: UsageMeter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.usage = UsageMeter((self.root / "luns", self.root / "snaps"))

    @property
    def root(self) -> Path:
        return self.data_dir / "pool"

    @property
    def image(self) -> Path:
        return self.data_dir / "pool.img"

    @property
    def lun_dir(self) -> Path:
        return self.root / "luns"

    def lun_path(self, local_id: str) -> Path:
        return self.lun_dir / local_id

    def snapshot_path(self, local_id: str) -> Path:
        return self.root / "snaps" / local_id

    def tmp_path(self, name: str) -> Path:
        return self.root / "tmp" / name

    def open(self) -> None:
        # "auto" sticks to what the data directory already uses, so LUN files never hide under a new mount.
        fresh_auto = False
        if self.kind == "auto":
            if self.image.exists():
                self.kind = "xfs"
            elif (self.root / "luns").exists() or not xfs_possible():
                self.kind = "dir"
            else:
                self.kind, fresh_auto = "xfs", True
        self.root.mkdir(parents=True, exist_ok=True)
        if self.kind == "xfs":
            try:
                self._mount_xfs()
            except (PoolError, OSError, subprocess.TimeoutExpired) as exc:
                if not fresh_auto:
                    raise
                log.warning("no XFS pool (%s); keeping LUN files in a plain directory", exc)
                self.image.unlink(missing_ok=True)
                self.kind = "dir"
        for sub in ("luns", "snaps", "tmp"):
            (self.root / sub).mkdir(exist_ok=True)
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink()
        self.clone_mode = "reflink" if self._probe_reflink() else "copy"
        log.info(
            "pool %s (%s) at %s, copies by %s",
            self.kind,
            self.image if self.kind == "xfs" else "dir",
            self.root,
            self.clone_mode,
        )

    def _mount_xfs(self) -> None:
        if not xfs_possible():
            raise PoolError("--pool xfs needs root, mkfs.xfs and mount")
        if _mounted(self.root):
            return  # still mounted after a crash: reuse it
        if not self.image.exists():
            tmp = self.image.with_suffix(".img.new")
            with open(tmp, "wb") as fh:
                fh.truncate(self.size)
            _run(["mkfs.xfs", "-q", "-m", "reflink=1", str(tmp)])
            os.replace(tmp, self.image)
        _run(["mount", "-o", "loop", str(self.image), str(self.root)])
        self.mounted_by_us = True

    def close(self) -> None:
        if self.kind == "xfs" and _mounted(self.root):
            try:
                _run(["umount", str(self.root)], timeout=60)
            except (PoolError, subprocess.TimeoutExpired) as exc:
                log.error("could not unmount the pool %s: %s", self.root, exc)

    def _probe_reflink(self) -> bool:
        a, b = self.tmp_path("probe-a"), self.tmp_path("probe-b")
        try:
            a.write_bytes(b"x" * 4096)
            with open(a, "rb") as src, open(b, "wb") as dst:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return True
        except OSError:
            return False
        finally:
            for p in (a, b):
                p.unlink(missing_ok=True)

    # ---- data operations (each idempotent, so a task re-run after a crash completes it) ----

    def create(self, final: Path, size: int, *, thick: bool, source: Path | None = None) -> None:
        """A new file of ``size`` bytes, empty or a copy of ``source``; appears atomically."""
        if final.exists():
            return
        tmp = self.tmp_path(final.parent.name + "-" + final.name)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if source is not None:
                with open(source, "rb") as src:
                    self._copy_into(src.fileno(), fd)
            os.ftruncate(fd, size)
            if thick:
                os.posix_fallocate(fd, 0, size)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.rename(tmp, final)

    def overwrite(self, dest: Path, source: Path, size: int, *, thick: bool) -> None:
        """Replace ``dest``'s content with ``source``'s, keeping ``dest``'s inode (rollback)."""
        fd = os.open(dest, os.O_RDWR)
        try:
            with open(source, "rb") as src:
                os.ftruncate(fd, 0)
                self._copy_into(src.fileno(), fd)
            os.ftruncate(fd, size)
            if thick:
                os.posix_fallocate(fd, 0, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def resize(self, path: Path, size: int, *, thick: bool) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            if thick:
                os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)

    def capacity(self) -> tuple[int, int]:
        """``(total, used)`` bytes, as CloudTower's ``total_data_capacity``/``used_data_space``.

        An XFS pool is a file system of its own: its size and what is in use on it (a reflinked
        extent counts once). A plain directory shares its file system with the host, so only its
        LUN and snapshot files count as used.
        """
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        if self.kind == "xfs":
            return total, (st.f_blocks - st.f_bfree) * st.f_frsize
        return total, self.usage.read()

    def _copy_into(self, src: int, dst: int) -> None:
        if self.clone_mode == "reflink":
            try:
                fcntl.ioctl(dst, FICLONE, src)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL):
                    raise
        end = os.fstat(src).st_size
        pos = 0
        while pos < end:
            try:
                data = os.lseek(src, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole remains
                raise
            hole = os.lseek(src, data, os.SEEK_HOLE)
            off = data
            while off < hole:
                n = os.copy_file_range(src, dst, min(_COPY_CHUNK, hole - off), off, off)
                if n == 0:
                    break
                off += n
            pos = hole
        os.ftruncate(dst, end)


class UsageMeter:
    """What the files of a plain-directory pool occupy, summed in the background.

    The sum stats every LUN and snapshot file: ~2.5 us each, so 0.25 s at 100,000 LUNs, too
    much for every cluster read (the CSI driver's GetCapacity, zbs_info). CloudTower's own
    space figures are collected periodically too. A read answers the last sum and, once that
    is older than ``share`` times what the sum took (at least ``min_age`` seconds), starts one
    refresh in a thread: fresh within a second while the pool is small, and never more than
    1/``share`` of a core however large it grows. Only the first read waits for a sum.
    """

    def __init__(
        self,
        dirs: Iterable[Path],
        *,
        share: float = 20.0,
        min_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dirs = tuple(dirs)
        self._share = share
        self._min_age = min_age
        self._clock = clock
        self._lock = threading.Lock()
        self._value: int | None = None
        self._at = 0.0  # when the current value's sum started
        self._took = 0.0
        self._refreshing = False

    def read(self) -> int:
        with self._lock:
            value = self._value
            stale = self._clock() - self._at > max(self._min_age, self._share * self._took)
            start = value is not None and stale and not self._refreshing
            if start:
                self._refreshing = True
        if value is None:
            return self.refresh()
        if start:
            threading.Thread(target=self._refresh_quietly, name="zbs-lite-usage", daemon=True).start()
        return value

    def refresh(self) -> int:
        """Sum now: the first read waits for it, later ones run it in a thread."""
        at = self._clock()
        try:
            total = sum(_allocated_in(d) for d in self._dirs)
        except BaseException:
            with self._lock:
                self._refreshing = False
            raise
        with self._lock:
            self._refreshing = False
            if at >= self._at:
                self._value, self._at, self._took = total, at, self._clock() - at
        return total

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception:  # the last sum stands; the next stale read tries again
            log.exception("summing the pool's usage failed")


def _allocated_in(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(_entry_blocks(e) for e in entries) * 512
    except FileNotFoundError:
        return 0


def _entry_blocks(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_blocks
    except OSError:  # removed while summing
        return 0


def allocated(path: Path) -> int:
    """Bytes actually allocated to a file (what ZBS reports as unique size)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0
