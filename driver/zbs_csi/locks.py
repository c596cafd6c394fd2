"""Per-key, non-blocking locks: a second operation on a busy volume gets ABORTED (CSI spec)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import aborted


class KeyedLocks:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy: set[str] = set()

    @contextmanager
    def hold(self, *keys: str) -> Iterator[None]:
        wanted = {k for k in keys if k}
        with self._mutex:
            clash = sorted(wanted & self._busy)
            if clash:
                raise aborted(f"an operation on {clash[0]} is already in progress")
            self._busy |= wanted
        try:
            yield
        finally:
            with self._mutex:
                self._busy -= wanted
