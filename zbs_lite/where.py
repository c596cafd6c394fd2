"""Translate CloudTower ``where`` / ``orderBy`` / paging inputs into parameterised SQL.

Every operator becomes an SQL predicate over indexed columns, so a filtered query costs
what SQLite's planner makes of it instead of a Python scan over every row.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from zbs_lite.errors import ApiError, ErrorCode
from zbs_lite.model import RESOURCES, Field, Resource

# Longest suffixes first, so "name_not_in" is read as (name, not_in), not (name_not, in).
_SUFFIXES = (
    "_not_starts_with",
    "_not_ends_with",
    "_not_contains",
    "_starts_with",
    "_ends_with",
    "_contains",
    "_not_in",
    "_not",
    "_in",
    "_lte",
    "_gte",
    "_lt",
    "_gt",
)
_STRING_ONLY = {"contains", "not_contains", "starts_with", "not_starts_with", "ends_with", "not_ends_with"}
_ORDERED = {"lt", "lte", "gt", "gte"}
_INT_MAX = 2**63 - 1

# Limits of one filter, each a 400 naming it (docs/zbs-lite.md). SQLite refuses an expression
# tree deeper than 1000 and an AND/OR of n terms is n deep, so terms stay well below that;
# values of _in lists stay below the 32766 bound parameters of a default SQLite build; a
# GLOB pattern (contains/starts/ends) may grow 3x when escaped and SQLite's limit is 50,000.
MAX_DEPTH = 8
MAX_TERMS = 256
MAX_IN_VALUES = 10_000
MAX_PATTERN = 4096


# How many rows a narrowing term may leave for a page to read them all and sort them; past
# that a page walks the table in id order instead (see Lookup).
FEW_RELATED = 16  # related rows of a to-one relation filter (LUNs: 255 each at most)
FEW_ROWS = 4096  # rows of a name prefix


@dataclass
class Sql:
    text: str
    params: list[Any]
    narrow: bool = False  # an AND-ed term leaves few rows, through an index: read them all, then sort


class Lookup:
    """The small, bounded reads that decide how a filter becomes SQL, on the caller's connection.

    A page (``first`` rows in id order) can be read two ways: walk the table in id order and
    stop when the page is full (cost: the page over the share of rows that match), or read
    every match through an index and sort (cost: every match). Which is cheaper depends on
    how many rows a term leaves; these reads find out, never reading more than their bound.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def ids(self, res: Resource, sql: Sql, limit: int) -> list[str]:
        """Ids of at most ``limit`` rows of ``res`` that ``sql`` selects."""
        query = f"SELECT {res.table}.id FROM {res.table} WHERE {sql.text} LIMIT ?"  # noqa: S608 - names from the model
        return [r[0] for r in self.conn.execute(query, [*sql.params, limit])]

    def more_than(self, res: Resource, sql: Sql, n: int) -> bool:
        """Whether ``sql`` selects more than ``n`` rows of ``res``."""
        query = f"SELECT COUNT(*) FROM (SELECT 1 FROM {res.table} WHERE {sql.text} LIMIT ?)"  # noqa: S608
        return int(self.conn.execute(query, [*sql.params, n + 1]).fetchone()[0]) > n


@dataclass
class _Budget:
    """What one ``where`` has used of the limits above."""

    terms: int = 0
    values: int = 0

    def term(self, path: str) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _too_large("where", f"more than {MAX_TERMS} terms")

    def add_values(self, path: str, n: int) -> None:
        self.values += n
        if self.values > MAX_IN_VALUES:
            raise _too_large("where", f"more than {MAX_IN_VALUES} values in _in and _not_in lists")


def _too_large(path: str, what: str) -> ApiError:
    return ApiError(
        400,
        f"{path}: the filter is too large ({what}); split it into several requests",
        code=ErrorCode.LIMIT_EXCEEDED,
        props={"field": path},
    )


def _escape_glob(value: str) -> str:
    """GLOB is case-sensitive like Prisma on PostgreSQL, and prefix GLOBs use indexes."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in value)


def _check_value(key: str, f: Field, value: Any) -> Any:
    """Type-check one operand; returns the value as stored in SQLite."""
    ok: bool
    if f.kind in ("str", "enum"):
        ok = isinstance(value, str)
        if ok and f.kind == "enum" and f.enum and value not in f.enum:
            raise ApiError(400, f"where.{key}: must be one of {', '.join(f.enum)}", props={"field": key})
    elif f.kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and -_INT_MAX <= value <= _INT_MAX
    elif f.kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, bool)
    if not ok:
        raise ApiError(400, f"where.{key}: expected a {f.kind} value, got {type(value).__name__}", props={"field": key})
    return int(value) if isinstance(value, bool) else value


def _split(res: Resource, key: str) -> tuple[str, str]:
    if key in res.fields:
        return key, "eq"
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and key[: -len(suffix)] in res.fields:
            return key[: -len(suffix)], suffix[1:]
    raise ApiError(400, f"where.{key}: unknown or unsupported filter on {res.name}", props={"field": key})


def _field_predicate(res: Resource, key: str, value: Any, budget: _Budget, lookup: Lookup | None) -> Sql:
    name, op = _split(res, key)
    f = res.fields[name]
    col = res.column(name)
    if value is None:
        if op == "eq":
            return Sql(f"{col} IS NULL", [])
        if op == "not":
            return Sql(f"{col} IS NOT NULL", [])
        return Sql("1", [])  # Prisma ignores a null operand for the other operators
    if op in ("in", "not_in"):
        if not isinstance(value, list):
            raise ApiError(400, f"where.{key}: expected a list", props={"field": key})
        budget.add_values(f"where.{key}", len(value))
        vals = [_check_value(key, f, v) for v in value]
        if not vals:
            return Sql("0" if op == "in" else "1", [])
        marks = ",".join("?" * len(vals))
        if op == "in":
            return Sql(f"{col} IN ({marks})", vals)
        return Sql(f"({col} IS NULL OR {col} NOT IN ({marks}))", vals)
    if op in _STRING_ONLY:
        if f.kind != "str":
            raise ApiError(400, f"where.{key}: {op} applies to text fields only", props={"field": key})
        if isinstance(value, str) and len(value) > MAX_PATTERN:
            raise _too_large(f"where.{key}", f"a {op} operand longer than {MAX_PATTERN} characters")
        v = _escape_glob(_check_value(key, f, value))
        pattern = {"contains": f"*{v}*", "starts_with": f"{v}*", "ends_with": f"*{v}"}[op.removeprefix("not_")]
        if op.startswith("not_"):
            return Sql(f"({col} IS NULL OR {col} NOT GLOB ?)", [pattern])
        if op == "starts_with" and lookup is not None:
            # a prefix is an index range: worth it for a few rows (then sorted), not for many
            if lookup.more_than(res, Sql(f"{col} GLOB ?", [pattern]), FEW_ROWS):
                return Sql(f"+{col} GLOB ?", [pattern])
            return Sql(f"{col} GLOB ?", [pattern], narrow=True)
        return Sql(f"{col} GLOB ?", [pattern])
    if op in _ORDERED:
        if f.kind == "bool":
            raise ApiError(400, f"where.{key}: comparisons do not apply to booleans", props={"field": key})
        sym = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
        return Sql(f"{col} {sym} ?", [_check_value(key, f, value)])
    v = _check_value(key, f, value)
    if op == "not":
        return Sql(f"({col} IS NULL OR {col} != ?)", [v])
    return Sql(f"{col} = ?", [v])


def _one_relation(
    res: Resource, local: str, other: Resource, value: dict[str, Any], sub: Sql, lookup: Lookup | None
) -> Sql:
    """A filter on a to-one relation as SQL that keeps a page's cost to the page.

    ``{id: X}`` / ``{id_in: [...]}`` compare the local column itself; for one related row its
    index then gives the rows in id order too (the driver's LUNs of one target: exactly the
    page is read). Another filter is resolved first: up to FEW_RELATED related rows become an
    id list (an index range each, then a sort of their few rows); more keep the subquery, off the
    column's index (``+``), so a page walks the table in id order and stops when full
    instead of reading and sorting every match (LUNs of every target with a name prefix:
    a full pass then reads each row once, not once per page).
    """
    col = f"{res.table}.{local}"
    ids = value.get("id") if set(value) == {"id"} else value.get("id_in") if set(value) == {"id_in"} else None
    if isinstance(ids, str):
        return Sql(f"{col} = ?", sub.params)
    if ids is None and lookup is not None:
        found = lookup.ids(other, sub, FEW_RELATED + 1)
        ids = found if len(found) <= FEW_RELATED else None
    if isinstance(ids, list):
        params = sub.params if "id_in" in value else ids
        if len(params) <= 1:
            return Sql(f"{col} = ?", list(params)) if params else Sql("0", [])
        return Sql(f"{col} IN ({','.join('?' * len(params))})", list(params), narrow=True)
    return Sql(f"+{col} IN (SELECT {other.table}.id FROM {other.table} WHERE {sub.text})", sub.params)  # noqa: S608


def translate(res: Resource, where: Any, lookup: Lookup | None = None) -> Sql:
    """``where`` → an SQL boolean expression over ``res.table``, within the limits above.

    With ``lookup``, relation filters and prefixes take the form that reads the fewest rows
    for a page (see Lookup); without, they are plain SQL.
    """
    return _translate(res, where, 0, "where", _Budget(), lookup)


def _translate(res: Resource, where: Any, depth: int, path: str, budget: _Budget, lookup: Lookup | None) -> Sql:
    """One level of ``where``: the AND of its keys."""
    if where is None:
        return Sql("1", [])
    if not isinstance(where, dict):
        raise ApiError(400, f"{path}: expected an object", props={"field": path})
    if depth > MAX_DEPTH:
        raise ApiError(
            400,
            f"{path}: nested too deeply (more than {MAX_DEPTH} levels)",
            code=ErrorCode.LIMIT_EXCEEDED,
            props={"field": path},
        )
    parts: list[str] = []
    params: list[Any] = []
    narrow = False
    for key, value in where.items():
        budget.term(f"{path}.{key}")
        if key in ("AND", "OR", "NOT"):
            if value is None:
                continue  # the spec allows null: no condition
            items = value if isinstance(value, list) else [value] if isinstance(value, dict) else None
            if items is None:
                raise ApiError(400, f"{path}.{key}: expected a list of filters", props={"field": key})
            subs = [_translate(res, item, depth + 1, f"{path}.{key}", budget, lookup) for item in items]
            if not subs:
                continue
            for s in subs:
                params.extend(s.params)
            if key == "AND":
                parts.append("(" + " AND ".join(f"({s.text})" for s in subs) + ")")
                narrow = narrow or any(s.narrow for s in subs)
            elif key == "OR":
                parts.append("(" + " OR ".join(f"({s.text})" for s in subs) + ")")
            else:
                parts.append("NOT (" + " OR ".join(f"({s.text})" for s in subs) + ")")
            continue
        rel_name, _, quant = key.rpartition("_") if key.endswith(("_some", "_none", "_every")) else (key, "", "")
        rel = res.relations.get(rel_name)
        if rel is not None and (rel.kind == "one") == (quant == ""):
            other = RESOURCES[rel.resource]
            if value is None:
                if rel.kind == "one":
                    parts.append(f"{res.table}.{rel.local} IS NULL")
                continue
            sub = _translate(other, value, depth + 1, f"{path}.{key}", budget, lookup)
            if rel.kind == "one":
                one = _one_relation(res, rel.local, other, value, sub, lookup)
                parts.append(one.text)
                params.extend(one.params)
                narrow = narrow or one.narrow
            else:
                params.extend(sub.params)
                link = f"{other.table}.{rel.remote} = {res.table}.id"
                if quant == "some":
                    parts.append(f"EXISTS (SELECT 1 FROM {other.table} WHERE {link} AND ({sub.text}))")  # noqa: S608
                elif quant == "none":
                    parts.append(f"NOT EXISTS (SELECT 1 FROM {other.table} WHERE {link} AND ({sub.text}))")  # noqa: S608
                else:
                    parts.append(f"NOT EXISTS (SELECT 1 FROM {other.table} WHERE {link} AND NOT ({sub.text}))")  # noqa: S608
            continue
        pred = _field_predicate(res, key, value, budget, lookup)
        parts.append(pred.text)
        params.extend(pred.params)
        narrow = narrow or pred.narrow
    return Sql(" AND ".join(f"({p})" for p in parts) if parts else "1", params, narrow)


@dataclass
class Query:
    where: Sql
    order_col: str
    order_field: str
    desc: bool
    first: int | None
    skip: int
    after: str | None
    narrow: bool = False  # a term leaves few rows through an index: let SQLite use it, then sort them


def _int_arg(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 2**31 - 1:
        raise ApiError(400, f"{key}: expected an integer between 0 and 2147483647", props={"field": key})
    return v


def parse_query(res: Resource, body: Any, *, lookup: Lookup | None = None) -> Query:
    """Validate a get-* body (``where``, ``orderBy``, ``first``, ``skip``, ``after``)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError(400, "body: expected an object")
    allowed = {"where", "orderBy", "first", "skip", "after", "before", "last"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown field", props={"field": unknown[0]})
    for unsupported in ("before", "last"):
        if body.get(unsupported) is not None:
            raise ApiError(400, f"{unsupported}: backward paging is not supported by zbs-lite; use first/after")
    where = translate(res, body.get("where"), lookup=lookup)
    order = body.get("orderBy")
    order_field, desc = "id", False
    if order is not None:
        if not isinstance(order, str) or not order.endswith(("_ASC", "_DESC")):
            raise ApiError(400, "orderBy: expected <field>_ASC or <field>_DESC", props={"field": "orderBy"})
        order_field, _, direction = order.rpartition("_")
        if order_field not in res.fields:
            raise ApiError(400, f"orderBy: cannot sort {res.name} by {order_field}", props={"field": "orderBy"})
        desc = direction == "DESC"
    after = body.get("after")
    if after is not None and not isinstance(after, str):
        raise ApiError(400, "after: expected an id", props={"field": "after"})
    return Query(
        where=where,
        order_col=res.column(order_field),
        order_field=order_field,
        desc=desc,
        first=_int_arg(body, "first"),
        skip=_int_arg(body, "skip") or 0,
        after=after,
        narrow=where.narrow,
    )
