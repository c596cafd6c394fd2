"""The one error type the API layer turns into an ErrorBody response."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A client-visible failure: HTTP status, a message naming the field and the rule."""

    def __init__(self, status: int, message: str, *, code: str | None = None, props: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.props = props

    def body(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "status": self.status, "path": path}
        if self.code:
            out["code"] = self.code
        if self.props:
            out["props"] = self.props
        return out


def bad(field: str, rule: str) -> ApiError:
    """A 400 whose message reads ``<field>: <rule>`` so users see what to fix."""
    return ApiError(400, f"{field}: {rule}", props={"field": field})


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what} {ident!r} not found")
