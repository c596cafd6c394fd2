"""Runs INSIDE a node VM (Debian's python3): fsync'd record writes, and their verification.

    writer.py write PATH [--seconds S] [--start N]   one 4 KiB record per write, each fsync'd,
                                                     then "ack N T" on stdout (T: monotonic s)
    writer.py verify PATH COUNT [--start N]          every record N..COUNT-1 is intact: "ok" or
                                                     the first bad record

A record carries its number and a checksum of a payload derived from the number, so a
reader can tell a missing, stale or torn write from a good one. ``--direct`` (raw block
volumes) writes with O_DIRECT to the device itself.
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import sys
import time

RECORD = 4096
MAGIC = b"ZBSREC01"


def record(n: int) -> bytes:
    payload = hashlib.sha256(f"zbs-record-{n}".encode()).digest() * ((RECORD - 64) // 32)
    head = MAGIC + n.to_bytes(8, "big") + hashlib.sha256(payload).digest()
    return (head + payload).ljust(RECORD, b"\0")


def check(n: int, data: bytes) -> bool:
    return data == record(n)


def write(path: str, seconds: float, start: int, direct: bool) -> int:
    flags = os.O_RDWR | os.O_CREAT | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags, 0o644)
    buf = mmap.mmap(-1, RECORD)  # page-aligned, as O_DIRECT wants
    end = time.monotonic() + seconds
    n = start
    try:
        while time.monotonic() < end:
            buf.seek(0)
            buf.write(record(n))
            os.pwrite(fd, buf, n * RECORD)
            os.fsync(fd)
            print(f"ack {n} {time.monotonic():.3f}", flush=True)
            n += 1
    finally:
        os.close(fd)
    return 0


def verify(path: str, count: int, start: int, direct: bool) -> int:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    buf = mmap.mmap(-1, RECORD)
    try:
        for n in range(start, count):
            got = os.preadv(fd, [buf], n * RECORD)
            if got != RECORD or not check(n, bytes(buf)):
                print(f"bad {n}")
                return 1
    finally:
        os.close(fd)
    print("ok")
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["write", "verify"])
    p.add_argument("path")
    p.add_argument("count", nargs="?", type=int, default=0)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--direct", action="store_true")
    a = p.parse_args()
    if a.op == "write":
        return write(a.path, a.seconds, a.start, a.direct)
    return verify(a.path, a.count, a.start, a.direct)


if __name__ == "__main__":
    sys.exit(main())
