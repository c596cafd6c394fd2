"""Fixtures of the module tests that need real parts: a fresh zbs-lite and ansible-playbook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from playbooks import Playbooks
from zbs_lite.testing import ZbsLiteProcess


@pytest.fixture
def zbs(tmp_path: Path) -> Iterator[ZbsLiteProcess]:
    """A zbs-lite of this test alone, empty: examples must run from nothing."""
    with ZbsLiteProcess(tmp_path / "zbs-lite") as proc:
        yield proc


@pytest.fixture
def playbooks(zbs: ZbsLiteProcess, tmp_path: Path) -> Playbooks:
    return Playbooks(zbs, tmp_path / "ansible")
