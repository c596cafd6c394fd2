"""The one error type the API layer turns into an ErrorBody response, and its stable codes."""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(str, Enum):
    """``code`` of every ErrorBody: one stable value per kind of error, for programs to branch on.

    CloudTower's ErrorCode enum (4.6.0) defines only ``ResourceLocked``; the other values are
    zbs-lite's (docs/zbs-lite.md lists them). Clients must treat an unknown code as opaque.
    """

    INVALID_INPUT = "InvalidInput"  # a field breaks a rule; props.field names it
    MALFORMED_REQUEST = "MalformedRequest"  # not JSON, truncated, missing or of the wrong shape
    LIMIT_EXCEEDED = "LimitExceeded"  # over a documented limit (filter size, batch size, LUNs per target)
    ALREADY_EXISTS = "AlreadyExists"  # a name or LUN id is taken
    RESOURCE_LOCKED = "ResourceLocked"  # the object is being deleted
    RESOURCE_NOT_FOUND = "ResourceNotFound"
    OPERATION_NOT_FOUND = "OperationNotFound"  # no such path or operation
    METHOD_NOT_ALLOWED = "MethodNotAllowed"  # anything but POST
    UNAUTHENTICATED = "Unauthenticated"  # wrong credentials, or a missing, unknown or expired token
    LOGIN_THROTTLED = "LoginThrottled"  # too many failed logins from this source; see Retry-After
    INTERNAL_ERROR = "InternalError"


_DEFAULT_CODE = {
    400: ErrorCode.INVALID_INPUT,
    401: ErrorCode.UNAUTHENTICATED,
    404: ErrorCode.RESOURCE_NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.LIMIT_EXCEEDED,
    429: ErrorCode.LOGIN_THROTTLED,
}


class ApiError(Exception):
    """A client-visible failure: HTTP status, a message naming the field and the rule, a stable code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: ErrorCode | None = None,
        props: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODE.get(status, ErrorCode.INTERNAL_ERROR)
        self.props = props
        self.headers = headers or {}

    def body(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "status": self.status, "path": path, "code": self.code.value}
        if self.props:
            out["props"] = self.props
        return out


def bad(field: str, rule: str, code: ErrorCode = ErrorCode.INVALID_INPUT) -> ApiError:
    """A 400 whose message reads ``<field>: <rule>`` so users see what to fix."""
    return ApiError(400, f"{field}: {rule}", code=code, props={"field": field})


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what} {ident!r} not found")
