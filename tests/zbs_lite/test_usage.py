"""The pool's usage sum: a read never waits for a stale sum, and the sum catches up with writes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from zbs_lite.storage import UsageMeter

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.write(b"\xab" * size)
        fh.flush()
        os.fsync(fh.fileno())


def _settle() -> None:
    for t in threading.enumerate():
        if t.name == "zbs-lite-usage":
            t.join(10)


def test_usage_is_summed_once_then_refreshed_in_the_background(tmp_path: Path) -> None:
    luns, snaps = tmp_path / "luns", tmp_path / "snaps"
    luns.mkdir()
    snaps.mkdir()
    _write(luns / "a", MiB)
    clock = Clock()
    meter = UsageMeter((luns, snaps), min_age=1.0, clock=clock)
    first = meter.read()
    assert first >= MiB  # the first read sums at once

    _write(snaps / "b", 2 * MiB)
    assert meter.read() == first  # fresh enough: the last sum, no new one
    clock.now += 1.5
    assert meter.read() == first  # stale: answered at once with the last sum, a refresh started
    _settle()
    assert meter.read() >= first + 2 * MiB  # the refresh caught the new file

    (luns / "a").unlink()
    clock.now += 1.5
    meter.read()
    _settle()
    assert meter.read() < first + 2 * MiB


def test_a_missing_directory_counts_as_empty(tmp_path: Path) -> None:
    assert UsageMeter((tmp_path / "none",)).read() == 0
