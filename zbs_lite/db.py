"""SQLite metadata store: WAL, pooled connections, one serialised write transaction per mutation."""

from __future__ import annotations

import itertools
import logging
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

# The tables whose rows the data plane's catalog shows, and the column naming the target a
# row belongs to: every write transaction collects the targets it touched (temporary
# triggers calling back into Python), and the commit hooks get them.
TRACKED = {"targets": "id", "luns": "target_id"}
_TOUCHED_FN = "zbs_lite_touched"

log = logging.getLogger(__name__)
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
        # called after each commit that changed a tracked row, with the targets it touched
        self.on_commit: list[Callable[[frozenset[str]], None]] = []
        self._touched: set[str] = set()
        boot = sqlite3.connect(path, timeout=30, isolation_level=None)  # the tables exist before any trigger
        try:
            boot.execute("PRAGMA journal_mode=WAL")
            boot.executescript(SCHEMA)
        finally:
            boot.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        conn.create_function(_TOUCHED_FN, 1, self._touch)
        for table, column in TRACKED.items():
            for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
                conn.execute(
                    f"CREATE TEMP TRIGGER IF NOT EXISTS zl_{table}_{event.lower()} AFTER {event} ON main.{table}"
                    f" BEGIN SELECT {_TOUCHED_FN}({row}.{column}); END"
                )
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

    def _touch(self, target_id: str) -> None:
        self._touched.add(target_id)  # only ever called inside write(), under the write lock

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; after COMMIT, the hooks learn which targets it touched.

        The hooks run in this thread, still under the write lock, so they see the commits in
        order and the writer's caller is answered only once they are done.
        """
        with self._write_lock, self.read() as conn:
            self._touched.clear()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                self._touched.clear()
                raise
            conn.commit()
            touched = frozenset(self._touched)
            self._touched.clear()
            for hook in self.on_commit if touched else ():
                try:
                    hook(touched)
                except Exception:  # the commit stands; a hook's failure must not turn it into an error
                    log.exception("commit hook %r failed", hook)

    @property
    def write_lock(self) -> threading.RLock:
        return self._write_lock

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
