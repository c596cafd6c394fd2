"""Structured logging: one JSON object per line, carrying the CSI operation and volume id.

The context (op, volume id, node) lives in a ContextVar set by the gRPC interceptor, so every
log line emitted while serving a call names what it concerns without threading arguments
through. Secrets never reach a log record: requests are logged through ``redact``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("zbs_csi_log_context", default={})  # noqa: B039

SECRET_KEYS = ("secret", "password", "passwd", "token", "chap")


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking key's value replaced."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if any(s in str(k).lower() for s in SECRET_KEYS):
                out[k] = "***"
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_context.get())
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            doc.update(redact(extra))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
