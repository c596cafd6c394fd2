"""get-* and get-*-connection: a ``where``/``orderBy``/paging body turned into one SELECT, then rendered.

Also the two lookups every mutation starts with (one row by id, the rows a ``where`` matches),
so reads and writes find rows the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from zbs_lite.db import Database
from zbs_lite.errors import ApiError, ErrorCode, bad, not_found
from zbs_lite.model import CONNECTION, Resource
from zbs_lite.render import Renderer
from zbs_lite.where import Lookup, parse_query, translate

SELECT = {
    "Cluster": "SELECT clusters.* FROM clusters",
    "IscsiTarget": "SELECT targets.* FROM targets",
    "IscsiLun": "SELECT luns.*, targets.name AS target_name FROM luns JOIN targets ON targets.id = luns.target_id",
    "IscsiLunSnapshot": "SELECT snapshots.*, luns.name AS lun_name, targets.name AS target_name FROM snapshots"
    " JOIN luns ON luns.id = snapshots.lun_id JOIN targets ON targets.id = snapshots.target_id",
    "Task": "SELECT tasks.* FROM tasks",
    "IscsiConnection": "SELECT connections.*, targets.name AS target_name FROM connections"
    " LEFT JOIN targets ON targets.id = connections.target_id",
}


def select_sql(conn: sqlite3.Connection, res: Resource, body: Any) -> tuple[str, list[Any]]:
    """The SELECT a get-* body turns into (cursor resolved, ordered, limited)."""
    q = parse_query(res, body, lookup=Lookup(conn))
    sql = f"{SELECT[res.name]} WHERE ({q.where.text})"
    params = list(q.where.params)
    if q.after is not None:
        cur = conn.execute(f"SELECT {q.order_col} FROM {res.table} WHERE id = ?", (q.after,)).fetchone()  # noqa: S608
        if cur is None:
            raise bad("after", f"no {res.name} with id {q.after!r} to page after")
        val = cur[0]
        idc = f"{res.table}.id"
        if q.order_field == "id":
            cmp = f"{idc} {'<' if q.desc else '>'} ?"
            params.append(q.after)
        elif val is None:
            cmp = f"({q.order_col} IS NULL AND {idc} < ?)" if q.desc else f"({q.order_col} IS NOT NULL OR {idc} > ?)"
            params.append(q.after)
        else:
            op = "<" if q.desc else ">"
            cmp = f"({q.order_col} {op} ? OR ({q.order_col} = ? AND {idc} {op} ?))"
            if q.desc:
                cmp = f"({cmp} OR {q.order_col} IS NULL)"
            params.extend([val, val, q.after])
        sql += f" AND {cmp}"
    direction = "DESC" if q.desc else "ASC"
    # "+" keeps SQLite from walking the primary key for ORDER BY and testing every row against
    # a narrow term (where.Lookup); it then uses that term's index and sorts the few matches.
    plus = "+" if q.narrow else ""
    sql += f" ORDER BY {plus}{q.order_col} {direction}"
    if q.order_field != "id":
        sql += f", {plus}{res.table}.id {direction}"  # ties broken by id, so cursors are stable
    if q.first is not None or q.skip:
        sql += " LIMIT ? OFFSET ?"
        params.extend([q.first if q.first is not None else -1, q.skip])
    return sql, params


def by_id(conn: sqlite3.Connection, res: Resource, rid: str) -> sqlite3.Row | None:
    return conn.execute(f"{SELECT[res.name]} WHERE {res.table}.id = ?", (rid,)).fetchone()


def one(conn: sqlite3.Connection, res: Resource, rid: Any, field: str) -> sqlite3.Row:
    """The row a mutation names by id in ``field``: 400 for a non-id, 404 when absent, locked while deleting."""
    if not isinstance(rid, str) or not rid:
        raise bad(field, "expected an id")
    row = by_id(conn, res, rid)
    if row is None:
        raise not_found(res.name, rid)
    if row["entity_async_status"] == "DELETING":
        raise ApiError(400, f"{field}: {res.name} {rid} is being deleted", code=ErrorCode.RESOURCE_LOCKED)
    return row


def matching(conn: sqlite3.Connection, res: Resource, body: Any) -> list[sqlite3.Row]:
    """The rows an update/delete body's (required) ``where`` selects, in id order."""
    if not isinstance(body, dict) or not isinstance(body.get("where"), dict):
        raise bad("where", "is required (an object)")
    sql = translate(res, body["where"], lookup=Lookup(conn))
    return conn.execute(f"{SELECT[res.name]} WHERE {sql.text} ORDER BY {res.table}.id", sql.params).fetchall()


class Queries:
    def __init__(self, db: Database, renderer: Renderer) -> None:
        self.db = db
        self.renderer = renderer
        # set by the server: flushes the data plane's session reports, so a get-iscsi-connections
        # sees every session that logged in before the call
        self.sync_connections: Callable[[], None] | None = None

    def get(self, res: Resource, body: Any) -> list[dict[str, Any]]:
        self._sync(res)
        with self.db.read() as conn:
            sql, params = select_sql(conn, res, body)
            rows = conn.execute(sql, params).fetchall()
            return self.renderer.rows(conn, res, rows)

    def count(self, res: Resource, body: Any) -> dict[str, Any]:
        """The size of what the same body would list (validated alike; paging narrows it as in Prisma)."""
        self._sync(res)
        with self.db.read() as conn:
            q = parse_query(res, body, lookup=Lookup(conn))
            if q.after is None and q.first is None and not q.skip:
                sql, params = f"SELECT COUNT(*) FROM {res.table} WHERE {q.where.text}", q.where.params  # noqa: S608
            else:
                page, params = select_sql(conn, res, body)
                sql = f"SELECT COUNT(*) FROM ({page})"  # noqa: S608 - built from the model
            n = conn.execute(sql, params).fetchone()[0]
        return {"aggregate": {"count": n}}

    def _sync(self, res: Resource) -> None:
        if res is CONNECTION and self.sync_connections is not None:
            self.sync_connections()
