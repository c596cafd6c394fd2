"""Persisted tasks: recorded with the mutation that needs them, run one at a time in submission order.

A task row is written in the mutation's own transaction; :class:`TaskRunner` runs the ids it
is handed after their delay, and :class:`TaskExecutor` applies one: ``EXECUTING``, the data
step of its :class:`~zbs_lite.effects.TaskKind`, then ``SUCCESSED`` with the resulting rows in
one commit, or ``FAILED`` with the mutation's rows undone. Tasks still ``PENDING`` or
``EXECUTING`` after a crash are handed to the runner again at the next start.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zbs_lite.db import Database, new_id, now_iso
from zbs_lite.effects import EFFECTS, TaskKind
from zbs_lite.model import Resource
from zbs_lite.storage import Pool

log = logging.getLogger(__name__)

ACTIVE = ("PENDING", "EXECUTING")
_TABLES = {"IscsiTarget": "targets", "IscsiLun": "luns", "IscsiLunSnapshot": "snapshots", "Cluster": "clusters"}


class TaskStore:
    """Task rows: created inside a mutation's transaction, numbered so they run in commit order."""

    def __init__(self, db: Database, cluster_id: str) -> None:
        self.db = db
        self.cluster_id = cluster_id
        self._seq_lock = threading.Lock()
        with db.read() as conn:
            self._seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0]

    def add(
        self,
        conn: sqlite3.Connection,
        kind: TaskKind,
        description: str,
        resource: Resource,
        rid: str,
        mutation: str,
        payload: dict[str, Any] | None = None,
    ) -> str:
        tid = new_id()
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        conn.execute(
            "INSERT INTO tasks (id, seq, cluster_id, description, status, progress, local_created_at, internal,"
            " resource_id, resource_type, resource_mutation, snapshot, kind, payload)"
            " VALUES (?,?,?,?, 'PENDING', 0, ?, 0, ?,?,?,?,?,?)",
            (
                tid,
                seq,
                self.cluster_id,
                description,
                now_iso(),
                rid,
                resource.name,
                mutation,
                "{}",
                kind.value,
                json.dumps(payload or {}),
            ),
        )
        return tid

    @staticmethod
    def pending_for(conn: sqlite3.Connection, rid: str) -> str | None:
        """The newest unfinished task of a resource (a repeated delete answers with it)."""
        row = conn.execute(
            "SELECT id FROM tasks WHERE resource_id = ? AND status IN ('PENDING','EXECUTING')"
            " ORDER BY seq DESC LIMIT 1",
            (rid,),
        ).fetchone()
        return row["id"] if row else None

    def pending(self) -> list[str]:
        with self.db.read() as conn:
            return [
                r[0] for r in conn.execute("SELECT id FROM tasks WHERE status IN ('PENDING','EXECUTING') ORDER BY seq")
            ]


class TaskExecutor:
    def __init__(self, db: Database, pool: Pool) -> None:
        self.db = db
        self.pool = pool

    def run(self, task_id: str) -> None:
        with self.db.write() as conn:
            task = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if task is None or task["status"] not in ACTIVE:
                return
            conn.execute("UPDATE tasks SET status = 'EXECUTING', started_at = ? WHERE id = ?", (now_iso(), task_id))
        kind, rid = TaskKind(task["kind"]), task["resource_id"]
        try:
            done = EFFECTS[kind].apply(self.db, self.pool, rid, json.loads(task["payload"]))
        except OSError as exc:
            log.warning("task %s (%s %s) failed: %s", task_id, kind.value, rid, exc)
            self._fail(task, kind, exc)
            return
        with self.db.write() as conn:
            done.commit(conn)
            _clear_status(conn, task)
            conn.execute(
                "UPDATE tasks SET status = 'SUCCESSED', progress = 1, finished_at = ? WHERE id = ?",
                (now_iso(), task_id),
            )
        _unlink(done.unlink)

    def _fail(self, task: sqlite3.Row, kind: TaskKind, exc: OSError) -> None:
        code = "ZBS_" + (errno.errorcode.get(exc.errno, "EIO") if exc.errno else "IO_ERROR")
        message = f"{task['description']}: {exc.strerror or exc}"
        with self.db.write() as conn:
            EFFECTS[kind].undo(conn, task["resource_id"])
            _clear_status(conn, task)
            conn.execute(
                "UPDATE tasks SET status = 'FAILED', error_code = ?, error_message = ?, finished_at = ? WHERE id = ?",
                (code, message, now_iso(), task["id"]),
            )


def _clear_status(conn: sqlite3.Connection, task: sqlite3.Row) -> None:
    """The resource's entityAsyncStatus ends with its last unfinished task (a delete keeps DELETING)."""
    others = conn.execute(
        "SELECT 1 FROM tasks WHERE resource_id = ? AND status IN ('PENDING','EXECUTING') AND id != ?",
        (task["resource_id"], task["id"]),
    ).fetchone()
    if not others:
        conn.execute(
            f"UPDATE {_TABLES[task['resource_type']]} SET entity_async_status = NULL"  # noqa: S608
            " WHERE id = ? AND entity_async_status != 'DELETING'",
            (task["resource_id"],),
        )


def _unlink(files: tuple[Path, ...]) -> None:
    for f in files:
        try:
            f.unlink(missing_ok=True)
        except OSError as exc:
            log.error("could not remove %s: %s", f, exc)


class TaskRunner:
    """Runs persisted tasks one at a time, in submission order, each after its delay."""

    def __init__(self, run: Callable[[str], None]) -> None:
        self._run = run
        self._queue: deque[tuple[float, str]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="zbs-lite-tasks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, task_ids: list[str], delay: float) -> None:
        due = time.monotonic() + delay
        with self._cond:
            self._queue.extend((due, t) for t in task_ids)
            self._cond.notify()

    def stop(self, timeout: float = 30) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._queue or self._queue[0][0] > time.monotonic()):
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(wait)
                if self._stop:
                    return
                _, task_id = self._queue.popleft()
                self._busy = True
            try:
                self._run(task_id)
            except Exception:
                log.exception("task %s crashed", task_id)
            finally:
                with self._cond:
                    self._busy = False
