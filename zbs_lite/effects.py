"""What each kind of task does to the data, and what it leaves to commit.

A mutation commits its rows and a task of one :class:`TaskKind`; the runner later looks the
kind up in :data:`EFFECTS` and calls :meth:`Effect.apply`, which does the file work
(idempotent, so a task interrupted by a crash is simply applied again) and returns a
:class:`Done`: the metadata to commit with the task's success and the files to remove
once that commit is durable. When the file work fails, :meth:`Effect.undo` rolls back the
rows the mutation committed (a create that could not happen leaves nothing behind).
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zbs_lite.db import Database
from zbs_lite.storage import Pool, allocated


class TaskKind(str, enum.Enum):
    """Stored in ``tasks.kind``: the values are part of the on-disk format (tasks resume after a restart)."""

    TARGET_CREATE = "target.create"
    TARGET_UPDATE = "target.update"
    TARGET_DELETE = "target.delete"
    LUN_CREATE = "lun.create"
    LUN_UPDATE = "lun.update"
    LUN_ROLLBACK = "lun.rollback"
    LUN_DELETE = "lun.delete"
    SNAPSHOT_CREATE = "snapshot.create"
    SNAPSHOT_DELETE = "snapshot.delete"
    CLUSTER_UPDATE = "cluster.update"


def _no_rows(conn: sqlite3.Connection) -> None:
    return None


@dataclass(frozen=True)
class Done:
    """What a task leaves once its file work is done: rows to commit, then files to remove after the commit."""

    commit: Callable[[sqlite3.Connection], None] = _no_rows
    unlink: tuple[Path, ...] = ()


class Effect(Protocol):
    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done: ...

    def undo(self, conn: sqlite3.Connection, rid: str) -> None: ...


class MetadataOnly:
    """Targets and cluster settings have no data: the committed rows are the whole change."""

    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done:
        return Done()

    def undo(self, conn: sqlite3.Connection, rid: str) -> None:
        return None


class DropTarget(MetadataOnly):
    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done:
        def commit(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM targets WHERE id = ?", (rid,))

        return Done(commit=commit)


def _lun_row(db: Database, rid: str) -> sqlite3.Row:
    with db.read() as conn:
        row = conn.execute("SELECT * FROM luns WHERE id = ?", (rid,)).fetchone()
    if row is None:
        raise FileNotFoundError(f"LUN {rid} vanished")
    return row


def _lun_file_done(rid: str, size: int, path: Path) -> Done:
    used = allocated(path)

    def commit(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE luns SET file_size = ?, unique_size = ? WHERE id = ?", (size, used, rid))

    return Done(commit=commit)


class CreateLunData:
    """A new LUN's file: empty, or a copy of a snapshot (clone) or of another LUN (copy)."""

    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done:
        lun = _lun_row(db, rid)
        path = pool.lun_path(lun["local_id"])
        source = payload.get("source") or {}
        src = (
            pool.snapshot_path(source["snapshot"])
            if "snapshot" in source
            else pool.lun_path(source["lun"])
            if "lun" in source
            else None
        )
        pool.create(path, lun["assigned_size"], thick=not lun["thin_provision"], source=src)
        return _lun_file_done(rid, lun["assigned_size"], path)

    def undo(self, conn: sqlite3.Connection, rid: str) -> None:
        conn.execute("DELETE FROM snapshots WHERE lun_id = ?", (rid,))
        conn.execute("DELETE FROM luns WHERE id = ?", (rid,))


class ResizeLunData:
    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done:
        lun = _lun_row(db, rid)
        path = pool.lun_path(lun["local_id"])
        pool.resize(path, payload["size"], thick=not lun["thin_provision"])
        return _lun_file_done(rid, payload["size"], path)

    def undo(self, conn: sqlite3.Connection, rid: str) -> None:
        conn.execute("UPDATE luns SET assigned_size = file_size WHERE id = ?", (rid,))


class RollbackLunData:
    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done:
        lun = _lun_row(db, rid)
        path = pool.lun_path(lun["local_id"])
        pool.overwrite(path, pool.snapshot_path(payload["snapshot"]), payload["size"], thick=not lun["thin_provision"])
        return _lun_file_done(rid, payload["size"], path)

    def undo(self, conn: sqlite3.Connection, rid: str) -> None:
        return None


class DeleteLunData:
    """The rows go first; the files after that commit (the LUN has left the data plane's catalog by then)."""

    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done:
        with db.read() as conn:
            lun = conn.execute("SELECT local_id FROM luns WHERE id = ?", (rid,)).fetchone()
            snaps = [r[0] for r in conn.execute("SELECT local_id FROM snapshots WHERE lun_id = ?", (rid,))]
        if lun is None:  # run again after a crash that followed its commit: the start's sweep removes the files
            return Done()

        def commit(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM snapshots WHERE lun_id = ?", (rid,))
            conn.execute("DELETE FROM luns WHERE id = ?", (rid,))

        return Done(commit=commit, unlink=(pool.lun_path(lun["local_id"]), *(pool.snapshot_path(s) for s in snaps)))

    def undo(self, conn: sqlite3.Connection, rid: str) -> None:
        return None


def _snapshot_row(db: Database, rid: str) -> sqlite3.Row | None:
    with db.read() as conn:
        return conn.execute("SELECT * FROM snapshots WHERE id = ?", (rid,)).fetchone()


class CreateSnapshotData:
    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done:
        snap = _snapshot_row(db, rid)
        if snap is None:
            raise FileNotFoundError(f"snapshot {rid} vanished")
        path = pool.snapshot_path(snap["local_id"])
        pool.create(path, snap["size"], thick=False, source=pool.lun_path(payload["lun"]))
        used = allocated(path)

        def commit(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE snapshots SET unique_size = ? WHERE id = ?", (used, rid))

        return Done(commit=commit)

    def undo(self, conn: sqlite3.Connection, rid: str) -> None:
        row = conn.execute("SELECT lun_id FROM snapshots WHERE id = ?", (rid,)).fetchone()
        conn.execute("DELETE FROM snapshots WHERE id = ?", (rid,))
        if row:
            conn.execute("UPDATE luns SET snapshot_num = snapshot_num - 1 WHERE id = ?", (row["lun_id"],))


class DeleteSnapshotData:
    def apply(self, db: Database, pool: Pool, rid: str, payload: dict[str, Any]) -> Done:
        snap = _snapshot_row(db, rid)
        if snap is None:
            return Done()

        def commit(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM snapshots WHERE id = ?", (rid,))
            conn.execute("UPDATE luns SET snapshot_num = snapshot_num - 1 WHERE id = ?", (snap["lun_id"],))

        return Done(commit=commit, unlink=(pool.snapshot_path(snap["local_id"]),))

    def undo(self, conn: sqlite3.Connection, rid: str) -> None:
        return None


EFFECTS: dict[TaskKind, Effect] = {
    TaskKind.TARGET_CREATE: MetadataOnly(),
    TaskKind.TARGET_UPDATE: MetadataOnly(),
    TaskKind.TARGET_DELETE: DropTarget(),
    TaskKind.LUN_CREATE: CreateLunData(),
    TaskKind.LUN_UPDATE: ResizeLunData(),
    TaskKind.LUN_ROLLBACK: RollbackLunData(),
    TaskKind.LUN_DELETE: DeleteLunData(),
    TaskKind.SNAPSHOT_CREATE: CreateSnapshotData(),
    TaskKind.SNAPSHOT_DELETE: DeleteSnapshotData(),
    TaskKind.CLUSTER_UPDATE: MetadataOnly(),
}
