"""Persisted tasks: recorded with the mutation that needs them, run in submission order.

A task row is written in the mutation's own transaction; :class:`TaskRunner` runs the ids it
is handed after their delay, and :class:`TaskExecutor` applies them: ``EXECUTING``, the data
step of each task's :class:`~zbs_lite.effects.TaskKind`, then ``SUCCESSED`` with the resulting
rows, or ``FAILED`` with the mutation's rows undone. The tasks that are due together (a batch
``create-iscsi-lun`` makes up to 255) run as one batch: one commit marks them all
``EXECUTING`` and one commits all their results, in order, so the data plane's catalog re-reads
a target once per batch instead of once per LUN. A failure commits the successes before it
first, so every task's rows still land in submission order. Tasks still ``PENDING`` or
``EXECUTING`` after a crash are handed to the runner again at the next start (every data step
is idempotent).
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
from zbs_lite.effects import EFFECTS, Done, TaskKind
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

    def run(self, task_ids: list[str]) -> None:
        """Apply ``task_ids`` in order (those still to run): one commit to start them, one for their results."""
        with self.db.write() as conn:
            tasks = [conn.execute("SELECT * FROM tasks WHERE id = ?", (t,)).fetchone() for t in task_ids]
            tasks = [t for t in tasks if t is not None and t["status"] in ACTIVE]
            started = now_iso()
            conn.executemany(
                "UPDATE tasks SET status = 'EXECUTING', started_at = ? WHERE id = ?",
                [(started, t["id"]) for t in tasks],
            )
        done: list[tuple[sqlite3.Row, Done]] = []
        for task in tasks:
            kind, rid = TaskKind(task["kind"]), task["resource_id"]
            try:
                done.append((task, EFFECTS[kind].apply(self.db, self.pool, rid, json.loads(task["payload"]))))
            except OSError as exc:
                log.warning("task %s (%s %s) failed: %s", task["id"], kind.value, rid, exc)
                self._succeed(done)  # the tasks before it land first: rows change in submission order
                done = []
                self._fail(task, kind, exc)
        self._succeed(done)

    def _succeed(self, done: list[tuple[sqlite3.Row, Done]]) -> None:
        """Commit the results; a task that removes files is SUCCESSED only once they are gone.

        The rows go first (the data plane's catalog drops the LUN with that commit), then the
        files, then the task's status: a client that sees a delete's task succeed finds the
        data gone. A crash in between leaves the task to run again (its rows are gone: nothing
        to do) and the files to the start's orphan sweep.
        """
        if not done:
            return

        def succeeded(conn: sqlite3.Connection, task: sqlite3.Row) -> None:
            conn.execute(
                "UPDATE tasks SET status = 'SUCCESSED', progress = 1, finished_at = ? WHERE id = ?",
                (now_iso(), task["id"]),
            )

        with self.db.write() as conn:
            for task, result in done:
                result.commit(conn)
                _clear_status(conn, task)  # sees the earlier tasks of the batch finished
                if not result.unlink:
                    succeeded(conn, task)
        removing = [(t, r) for t, r in done if r.unlink]  # deletes: their resource's rows are gone
        if removing:
            for _, result in removing:
                _unlink(result.unlink)
            with self.db.write() as conn:
                for task, _ in removing:
                    succeeded(conn, task)

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
    """Runs persisted tasks in submission order, each after its delay; those due together as one batch."""

    BATCH = 256  # one create-iscsi-lun call's worth (255 LUNs per target)

    def __init__(self, run: Callable[[list[str]], None]) -> None:
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
                now = time.monotonic()
                batch = [self._queue.popleft()[1]]
                while self._queue and len(batch) < self.BATCH and self._queue[0][0] <= now:
                    batch.append(self._queue.popleft()[1])
                self._busy = True
            try:
                self._run(batch)
            except Exception:  # left EXECUTING: the next start runs them again
                log.exception("tasks %s crashed", ", ".join(batch))
            finally:
                with self._cond:
                    self._busy = False
