"""Fixtures for the end-to-end tests: a controller and two node plugins on the session zbs-lite."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from csi_harness import Cluster, data_plane_present

from zbs_lite.testing import ZbsLiteProcess


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = ""
    if os.geteuid() != 0:
        reason = "needs root: real loop devices, mkfs and mounts"
    elif not data_plane_present():
        reason = "zbs-lite has no iSCSI data plane (zbs_lite.iscsi.DataPlane) in this tree yet"
    if reason:
        for item in items:
            if "tests/e2e" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def cluster(zbs_lite: ZbsLiteProcess, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, zbs_lite, f"e2e{secrets.token_hex(3)}")
    c.start()
    try:
        yield c
    finally:
        c.stop()
        c.remove_targets()
