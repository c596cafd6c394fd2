"""SmartX's CloudTower 4.6.0 OpenAPI schemas (the iSCSI subset), as a validator for tests.

``data/cloudtower-4.6.0-iscsi.openapi.json.gz`` is a verbatim, gzipped copy of
``shared/reference/cloudtower-4.6.0-iscsi.openapi.json`` (from SmartX's public
cloudtower-api-doc repository), kept in the tree so CI on a fresh machine has it.

Two checks per JSON document: the OpenAPI 3.0 schema itself (types, formats, required,
enums, ``nullable``, ``additionalProperties: false``) and a strict walk that reports every
field the schema does not define, because many *request* schemas are ``allOf`` compositions
without ``additionalProperties: false`` and would silently accept a misnamed field.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker

SPEC_FILE = Path(__file__).parent / "data" / "cloudtower-4.6.0-iscsi.openapi.json.gz"


@dataclass
class Exchange:
    """One request the client sent and the answer it got."""

    op: str
    request: Any
    status: int
    response: Any


class Spec:
    def __init__(self, path: Path = SPEC_FILE) -> None:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            self.doc: dict[str, Any] = json.load(f)
        self.components = _nullable_compositions(self.doc["components"])
        self.schemas: dict[str, Any] = self.components["schemas"]

    @cached_property
    def operations(self) -> list[str]:
        return sorted(p.lstrip("/") for p in self.doc["paths"])

    def _op(self, op: str) -> dict[str, Any]:
        return self.doc["paths"][f"/{op}"]["post"]

    def request_schema(self, op: str) -> dict[str, Any]:
        return self._op(op)["requestBody"]["content"]["application/json"]["schema"]

    def response_schema(self, op: str, status: int) -> dict[str, Any]:
        responses = self._op(op)["responses"]
        entry = responses.get(str(status)) or {"content": {"application/json": {"schema": _ERROR_REF}}}
        return entry["content"]["application/json"]["schema"]

    def _validator(self, schema: dict[str, Any]) -> OAS30Validator:
        root = dict(schema)
        root["components"] = self.components
        return OAS30Validator(root, format_checker=oas30_format_checker)

    def problems(self, instance: Any, schema: dict[str, Any], where: str) -> list[str]:
        """Every way ``instance`` departs from ``schema``: schema errors and unknown fields."""
        out = []
        for err in self._validator(schema).iter_errors(instance):
            loc = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
            out.append(f"{where}{loc}: {err.message[:300]}")
        out += [f"{where}{loc}: field not in the schema" for loc in self.unknown_fields(instance, schema)]
        return out

    # ------------------------------------------------------------ strict walk

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def _properties(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        """Merged ``properties`` across ``allOf``; None for a free-form object."""
        schema = self._resolve(schema)
        props: dict[str, Any] = dict(schema.get("properties") or {})
        for part in schema.get("allOf", []) + schema.get("anyOf", []):
            more = self._properties(part)
            if more:
                props.update(more)
        return props or None

    def _items(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        schema = self._resolve(schema)
        if "items" in schema:
            return schema["items"]
        for part in schema.get("allOf", []) + schema.get("anyOf", []):
            found = self._items(part)
            if found is not None:
                return found
        return None

    def unknown_fields(self, instance: Any, schema: dict[str, Any], loc: str = "") -> list[str]:
        if isinstance(instance, dict):
            props = self._properties(schema)
            if props is None:
                return []
            out = []
            for key, value in instance.items():
                if key not in props:
                    out.append(f"{loc}.{key}")
                else:
                    out += self.unknown_fields(value, props[key], f"{loc}.{key}")
            return out
        if isinstance(instance, list):
            items = self._items(schema)
            if items is None:
                return []
            out = []
            for i, value in enumerate(instance):
                out += self.unknown_fields(value, items, f"{loc}[{i}]")
            return out
        return []


_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def _nullable_compositions(node: Any) -> Any:
    """``{allOf: [X], nullable: true}`` as ``anyOf: [null, X]``.

    The spec marks nullable references this way (OpenAPI 3.0 cannot put ``nullable`` next to
    ``$ref``); validators check each ``allOf`` branch on its own, where ``nullable`` is not
    visible, and would refuse a ``null`` the spec means to allow.
    """
    if isinstance(node, list):
        return [_nullable_compositions(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_compositions(v) for k, v in node.items()}
    if out.get("nullable") is True and ("allOf" in out or "$ref" in out):
        rest = {k: v for k, v in out.items() if k != "nullable"}
        return {"anyOf": [{"enum": [None]}, rest]}
    return out


def record_exchanges(client: Any) -> list[Exchange]:
    """Record every request/answer of ``client`` through a requests response hook (no mocking)."""
    seen: list[Exchange] = []

    def hook(resp: Any, *args: Any, **kwargs: Any) -> None:
        op = resp.request.url.rsplit("/", 1)[-1]
        body = json.loads(resp.request.body) if resp.request.body else None
        try:
            answer = resp.json()
        except ValueError:
            answer = resp.text
        seen.append(Exchange(op, body, resp.status_code, answer))

    client._http().hooks["response"].append(hook)  # this thread's session: the test drives it from one thread
    return seen
