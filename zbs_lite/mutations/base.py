"""The shape every mutation shares: parse, write rows and tasks in one transaction, submit, answer."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, ClassVar

from zbs_lite.db import Database
from zbs_lite.errors import ApiError, ErrorCode, bad
from zbs_lite.model import Resource
from zbs_lite.queries import by_id, matching
from zbs_lite.render import Renderer
from zbs_lite.settings import Settings
from zbs_lite.tasks import TaskRunner, TaskStore

# (task id, resource id) per object the mutation touched, in request order; a repeated delete
# answers with the task already running, which may be None once it finished
Items = list[tuple[str | None, str]]
MAX_ITEMS = 1000


@dataclass
class MutationContext:
    db: Database
    tasks: TaskStore
    runner: TaskRunner
    renderer: Renderer
    settings: Settings

    @property
    def cluster_id(self) -> str:
        return self.renderer.cluster_id


class Mutation:
    """Validation that needs no rows runs in ``__init__``; :meth:`write` runs inside the transaction."""

    resource: ClassVar[Resource]
    deletes: ClassVar[bool] = False

    def __init__(self, ctx: MutationContext, body: Any) -> None:
        self.ctx = ctx
        self.body = body

    def write(self, conn: sqlite3.Connection) -> Items:
        raise NotImplementedError

    def reply(self, items: Items) -> list[dict[str, Any]]:
        """``[{task_id, data}]`` in request order, rows read after the commit."""
        if self.deletes:
            return [{"task_id": t, "data": {"id": rid}} for t, rid in items]
        res = self.resource
        out = []
        with self.ctx.db.read() as conn:
            for tid, rid in items:
                row = by_id(conn, res, rid)
                if row is None:  # a zero-delay task already finished and removed it (failed create)
                    out.append({"task_id": tid, "data": {"id": rid}})
                    continue
                out.append({"task_id": tid, "data": self.ctx.renderer.rows(conn, res, [row])[0]})
        return out


class DeleteWhere(Mutation):
    """Deletes what a ``where`` matches; repeating a delete that is under way answers with its task."""

    deletes = True

    def write(self, conn: sqlite3.Connection) -> Items:
        out: Items = []
        for row in matching(conn, self.resource, self.body):
            if row["entity_async_status"] == "DELETING":
                out.append((TaskStore.pending_for(conn, row["id"]), row["id"]))
            else:
                out.append((self.delete(conn, row), row["id"]))
        return out

    def delete(self, conn: sqlite3.Connection, row: sqlite3.Row) -> str:
        """Mark the row DELETING and add its task; returns the task id."""
        raise NotImplementedError


def run(mutation: Mutation) -> list[dict[str, Any]]:
    ctx = mutation.ctx
    # Submitting under the write lock keeps the run order equal to the commit order.
    with ctx.db.write_lock:
        try:
            with ctx.db.write() as conn:
                items = mutation.write(conn)
        except sqlite3.IntegrityError as exc:
            message = _integrity_message(exc)
            code = ErrorCode.INVALID_INPUT if message is None else ErrorCode.ALREADY_EXISTS
            raise ApiError(
                400, f"conflict: {message or 'the change conflicts with existing objects'}", code=code
            ) from None
        ctx.runner.submit([t for t, _ in items if t], ctx.settings.task_delay)
    return mutation.reply(items)


def items(body: Any, what: str) -> list[dict[str, Any]]:
    """The array body of a create-like operation; an empty one is a no-op, as the spec allows."""
    if not isinstance(body, list):
        raise bad("body", f"expected an array of {what}", ErrorCode.MALFORMED_REQUEST)
    if len(body) > MAX_ITEMS:
        raise bad("body", f"at most {MAX_ITEMS} items per request", ErrorCode.LIMIT_EXCEEDED)
    return body


def _integrity_message(exc: sqlite3.IntegrityError) -> str | None:
    """Two requests raced past the checks: name the rule the database enforced."""
    text = str(exc)
    if "targets.cluster_id, targets.name" in text:
        return "name: a target with this name already exists"
    if "luns.target_id, luns.name" in text:
        return "name: a LUN with this name already exists in the target"
    if "luns.target_id, luns.lun_id" in text:
        return "lun_id: already used in the target"
    if "snapshots.lun_id, snapshots.name" in text:
        return "name: a snapshot with this name already exists for the LUN"
    return None
