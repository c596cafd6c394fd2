"""A LUN's backing file: one shared fd per LUN, and I/O that never blocks the event loop.

File I/O runs in the loop's executor (pread/pwrite release the GIL), except when the kernel
can serve it at once: RWF_NOWAIT reads and writes are tried inline first and give up with
EAGAIN instead of blocking.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
NOWAIT = getattr(os, "RWF_NOWAIT", 0)
INLINE_WRITE_MAX = 256 * 1024  # bigger writes copy long enough in the kernel to be worth a thread
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024

T = TypeVar("T")

_libc_fallocate = None
_libc_name = ctypes.util.find_library("c")
if _libc_name:
    _libc = ctypes.CDLL(_libc_name, use_errno=True)
    _libc_fallocate = _libc.fallocate
    _libc_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _libc_fallocate.restype = ctypes.c_int


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def pwritev_all(fd: int, bufs: list[memoryview], offset: int) -> None:
    """Write a list of buffers back to back, IOV_MAX at a time, finishing partial writes."""
    i = 0
    bufs = [b for b in bufs if len(b)]
    while i < len(bufs):
        n = os.pwritev(fd, bufs[i : i + IOV_MAX], offset)
        offset += n
        while n and i < len(bufs):
            if n >= len(bufs[i]):
                n -= len(bufs[i])
                i += 1
            else:
                bufs[i] = bufs[i][n:]
                n = 0


class Payload:
    """A command's Data-Out as it arrived: the PDUs' own buffers, by offset, never gathered into one.

    Memory grows only with the data the peer actually sent; the parts of different bursts
    never overlap (the data phase checks every offset), so sorted they cover 0..len().
    """

    def __init__(self) -> None:
        self._parts: list[tuple[int, memoryview]] = []
        self._length = 0

    def add(self, offset: int, data: bytes | memoryview) -> None:
        if len(data):
            self._parts.append((offset, memoryview(data)))
            self._length += len(data)

    def __len__(self) -> int:
        return self._length

    def views(self, length: int) -> list[memoryview]:
        """Buffers covering bytes 0..length, in order."""
        out = []
        for offset, part in sorted(self._parts, key=lambda p: p[0]):
            if offset >= length:
                break
            out.append(part[: length - offset])
        return out

    def tobytes(self, length: int | None = None) -> bytes:
        return b"".join(self.views(self._length if length is None else length))


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range of a sparse file (reads back as zeros); zero-fill where unsupported."""
    if _libc_fallocate is not None:
        if _libc_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(err, os.strerror(err))
    zeros = bytes(min(length, 1 << 20))
    while length > 0:
        n = os.pwrite(fd, zeros[: min(length, len(zeros))], offset)
        offset += n
        length -= n


class LunFile:
    """One open fd per LUN file, shared by every session; closed after the last user lets go.

    The management plane keeps the inode across resize and rollback, so the fd stays valid
    for the LUN's whole life; it only goes away when the LUN leaves the catalog.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._refs = 0
        self._retired = False
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            close = self._retired and self._refs == 0
        if close:
            os.close(self.fd)

    def retire(self) -> None:
        with self._lock:
            if self._retired:
                return
            self._retired = True
            close = self._refs == 0
        if close:
            os.close(self.fd)


class BlockIo:
    """The loop's way to the disk: inline when the page cache allows, else a worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.loop.run_in_executor(None, fn, *args)

    async def read(self, fd: int, buf: bytearray, offset: int) -> None:
        """Read into buf; inline when the page cache has it all (a thread hand-off costs more
        than a cached 4 KiB read itself)."""
        if NOWAIT:
            try:
                n = os.preadv(fd, [buf], offset, NOWAIT)
            except OSError:
                n = 0
            if n == len(buf):
                return
            if n > 0:
                await self.run(os.preadv, fd, [memoryview(buf)[n:]], offset + n)
                return
        await self.run(os.preadv, fd, [buf], offset)

    async def write(self, fd: int, bufs: list[memoryview], offset: int) -> None:
        """Write buffers back to back; inline when the kernel can take them all without blocking."""
        total = sum(len(b) for b in bufs)
        if NOWAIT and total <= INLINE_WRITE_MAX and len(bufs) <= IOV_MAX:
            try:
                n = os.pwritev(fd, bufs, offset, NOWAIT)
            except OSError:
                n = 0
            if n == total:
                return
            if n:  # the rest on a thread, from where the kernel stopped
                await self.run(pwrite_all, fd, memoryview(b"".join(bufs))[n:], offset + n)
                return
        await self.run(pwritev_all, fd, list(bufs), offset)
