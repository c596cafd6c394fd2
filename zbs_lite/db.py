"""SQLite metadata store: WAL, pooled connections, one serialised write transaction per mutation."""

from __future__ import annotations

import itertools
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty, LifoQueue

from zbs_lite.model import SCHEMA

_B36 = string.digits + string.ascii_lowercase
_counter = itertools.count()
_id_lock = threading.Lock()


def _b36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out))


def new_id() -> str:
    """A 25-character cuid-like id that sorts by creation time, like CloudTower's."""
    with _id_lock:
        seq = next(_counter) % 36**4
    rand = "".join(secrets.choice(_B36) for _ in range(11))
    return "c" + _b36(int(time.time() * 1000), 9) + _b36(seq, 4) + rand


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool: LifoQueue[sqlite3.Connection] = LifoQueue()
        self._write_lock = threading.RLock()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self.on_commit: list[Callable[[], None]] = []
        with self.read() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        with self._all_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._pool.get_nowait()
        except Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.rollback()
            self._pool.put(conn)

    @contextmanager
    def write(self, *, hooks: bool = True) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; commit hooks (catalog refresh) run after COMMIT."""
        with self._write_lock, self.read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            for hook in self.on_commit if hooks else ():
                hook()

    @property
    def write_lock(self) -> threading.RLock:
        return self._write_lock

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
