# Copyright: (c) 2026, SmartX
# Simplified BSD License (see https://opensource.org/licenses/BSD-2-Clause)
"""Typed errors of the ZBS API client.

Every error carries the operation (``create-iscsi-lun``) and the object it concerns
(``lun 'vol1'``) so that a module's ``fail_json`` or a CSI status message can be built
from ``str(error)`` alone: ``"<operation> <object>: <message>"``. Errors never carry a
password, token or CHAP secret: the client scrubs every message before raising.
"""

from __future__ import annotations

from typing import Any, Optional


class ZbsError(Exception):
    """Base of every error the client raises."""

    def __init__(self, message: str, *, operation: Optional[str] = None, object: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.object = object

    def __str__(self) -> str:
        prefix = " ".join(p for p in (self.operation, self.object) if p)
        return f"{prefix}: {self.message}" if prefix else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def to_dict(self) -> dict[str, Any]:
        """Fields for ``fail_json``/structured logs (no secrets: they were scrubbed on creation)."""
        return {"msg": str(self), "operation": self.operation, "object": self.object}


class ZbsApiError(ZbsError):
    """The API answered with an ErrorBody (or a non-200 status).

    ``request_id`` is the answer's ``x-tower-request-id``: the server's log line for the request has it.
    """

    def __init__(
        self,
        status: int,
        message: str,
        path: Optional[str] = None,
        code: Optional[str] = None,
        props: Any = None,
        *,
        operation: Optional[str] = None,
        object: Optional[str] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(message, operation=operation, object=object)
        self.status = status
        self.path = path
        self.code = code
        self.props = props
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{super().__str__()} (HTTP {self.status})"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(status=self.status, path=self.path, code=self.code, request_id=self.request_id)
        return out


class ZbsAuthError(ZbsApiError):
    """Login refused, or the token was refused again right after a fresh login (HTTP 401)."""


class ZbsNotFound(ZbsApiError):
    """The API said 404, or an object the operation needs does not exist (same arguments as
    :class:`ZbsApiError`; ``status`` is 404 for client-side findings too)."""


class ZbsTaskFailed(ZbsError):
    """An asynchronous task ended FAILED; ``error_code``/``error_message`` are the task's own."""

    def __init__(
        self,
        task_id: str,
        error_code: Optional[str],
        error_message: Optional[str],
        *,
        operation: Optional[str] = None,
        object: Optional[str] = None,
    ) -> None:
        detail = error_message or "task failed without a message"
        if error_code:
            detail = f"{detail} [{error_code}]"
        super().__init__(f"task {task_id} failed: {detail}", operation=operation, object=object)
        self.task_id = task_id
        self.error_code = error_code
        self.error_message = error_message


class ZbsTaskTimeout(ZbsError):
    """A task did not finish within ``wait_timeout``; it may still finish later on the server.

    ``what`` says what the task was doing (``"create-iscsi-lun lun 'vol1'"``); it becomes the
    error's object unless a more precise operation/object is given.
    """

    def __init__(
        self,
        task_id: str,
        what: str,
        timeout: Optional[float] = None,
        status: Optional[str] = None,
        *,
        operation: Optional[str] = None,
        object: Optional[str] = None,
    ) -> None:
        after = f" after {timeout:g}s" if timeout is not None else ""
        last = f" (last status {status})" if status else ""
        super().__init__(
            f"task {task_id} did not finish{after}{last}",
            operation=operation,
            object=object if object is not None else what,
        )
        self.task_id = task_id
        self.what = what
        self.timeout = timeout
        self.status = status


class ZbsConnectionError(ZbsError):
    """The API could not be reached (refused, DNS, TLS, timeout) after the allowed retries."""


class ZbsValidationError(ZbsError, ValueError):
    """Input refused before it reached the API; ``field`` names the offending parameter."""

    def __init__(
        self, field: str, message: str, *, operation: Optional[str] = None, object: Optional[str] = None
    ) -> None:
        super().__init__(f"{field}: {message}", operation=operation, object=object)
        self.field = field
        self.rule = message
