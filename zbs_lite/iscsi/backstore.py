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

    async def write(self, fd: int, data: memoryview, offset: int) -> None:
        """Write data; inline when the kernel can take it without blocking."""
        if NOWAIT and len(data) <= INLINE_WRITE_MAX:
            try:
                n = os.pwritev(fd, [data], offset, NOWAIT)
            except OSError:
                n = 0
            if n == len(data):
                return
            data, offset = data[n:], offset + n
        await self.run(pwrite_all, fd, data, offset)
