"""Translate CloudTower ``where`` / ``orderBy`` / paging inputs into parameterised SQL.

Every operator becomes an SQL predicate over indexed columns, so a filtered query costs
what SQLite's planner makes of it instead of a Python scan over every row.
"""

from __future__ import annotations

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


@dataclass
class Sql:
    text: str
    params: list[Any]


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


def _field_predicate(res: Resource, key: str, value: Any, budget: _Budget) -> Sql:
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


def translate(res: Resource, where: Any) -> Sql:
    """``where`` → an SQL boolean expression over ``res.table``, within the limits above."""
    return _translate(res, where, 0, "where", _Budget())


def _translate(res: Resource, where: Any, depth: int, path: str, budget: _Budget) -> Sql:
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
    for key, value in where.items():
        budget.term(f"{path}.{key}")
        if key in ("AND", "OR", "NOT"):
            if value is None:
                continue  # the spec allows null: no condition
            items = value if isinstance(value, list) else [value] if isinstance(value, dict) else None
            if items is None:
                raise ApiError(400, f"{path}.{key}: expected a list of filters", props={"field": key})
            subs = [_translate(res, item, depth + 1, f"{path}.{key}", budget) for item in items]
            if not subs:
                continue
            for s in subs:
                params.extend(s.params)
            if key == "AND":
                parts.append("(" + " AND ".join(f"({s.text})" for s in subs) + ")")
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
            sub = _translate(other, value, depth + 1, f"{path}.{key}", budget)
            params.extend(sub.params)
            if rel.kind == "one":
                parts.append(
                    f"{res.table}.{rel.local} IN (SELECT {other.table}.id FROM {other.table} WHERE {sub.text})"  # noqa: S608
                )
            else:
                link = f"{other.table}.{rel.remote} = {res.table}.id"
                if quant == "some":
                    parts.append(f"EXISTS (SELECT 1 FROM {other.table} WHERE {link} AND ({sub.text}))")  # noqa: S608
                elif quant == "none":
                    parts.append(f"NOT EXISTS (SELECT 1 FROM {other.table} WHERE {link} AND ({sub.text}))")  # noqa: S608
                else:
                    parts.append(f"NOT EXISTS (SELECT 1 FROM {other.table} WHERE {link} AND NOT ({sub.text}))")  # noqa: S608
            continue
        pred = _field_predicate(res, key, value, budget)
        parts.append(pred.text)
        params.extend(pred.params)
    return Sql(" AND ".join(f"({p})" for p in parts) if parts else "1", params)


@dataclass
class Query:
    where: Sql
    order_col: str
    order_field: str
    desc: bool
    first: int | None
    skip: int
    after: str | None
    related: bool = False  # filters through a relation: let SQLite pick the index for WHERE, then sort


def _int_arg(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 2**31 - 1:
        raise ApiError(400, f"{key}: expected an integer between 0 and 2147483647", props={"field": key})
    return v


def parse_query(res: Resource, body: Any) -> Query:
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
    where = translate(res, body.get("where"))
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
        related=isinstance(body.get("where"), dict) and any(_is_relation(res, k) for k in body["where"]),
    )


def _is_relation(res: Resource, key: str) -> bool:
    return key in res.relations or key.rpartition("_")[0] in res.relations
