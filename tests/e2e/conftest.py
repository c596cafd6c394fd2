"""Fixtures for the end-to-end tests: a controller and two node plugins on the session zbs-lite."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from csi_harness import DriverProcess, clean_env, data_plane_present

from zbs_lite.testing import ZbsLiteProcess

NODE_A = "iqn.2026-01.com.smartx.e2e:node-a"
NODE_B = "iqn.2026-01.com.smartx.e2e:node-b"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = ""
    if os.geteuid() != 0:
        reason = "needs root: real loop devices, mkfs and mounts"
    elif not data_plane_present():
        reason = "zbs-lite has no iSCSI data plane (zbs_lite.iscsi.DataPlane) in this tree yet"
    if reason:
        for item in items:
            if "tests/e2e" in str(item.fspath) or "tests/driver/test_node_" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


class Cluster:
    """A controller and two nodes (A and B, each with its own initiator IQN) sharing one zbs-lite."""

    def __init__(self, work: Path, zl: ZbsLiteProcess, prefix: str, **env: str) -> None:
        self.work = work
        self.zl = zl
        self.prefix = prefix
        base = clean_env(zl.env)
        base.update(
            {
                "ZBS_CSI_TARGET_PREFIX": prefix,
                "ZBS_CSI_DEFAULT_REPLICA_NUM": "1",
                "ZBS_CSI_LOG_LEVEL": "debug",
            }
        )
        base.update(env)
        self.env = base
        self.ctrl = DriverProcess(work, "controller", base, name="ctrl")
        self.a = DriverProcess(work, "node", base, node_id=NODE_A, name="node-a")
        self.b = DriverProcess(work, "node", base, node_id=NODE_B, name="node-b")

    def start(self) -> Cluster:
        for p in (self.ctrl, self.a, self.b):
            p.start()
        return self

    def stop(self) -> None:
        for p in (self.ctrl, self.a, self.b):
            p.stop()

    def client(self):  # type: ignore[no-untyped-def]
        from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient

        return ZbsClient(
            self.zl.api_url, self.zl.username, self.zl.password, ca_path=self.zl.ca_path, poll_interval=0.1
        )

    def remove_targets(self) -> None:
        """Delete the (by now empty) targets the driver made, so the shared zbs-lite stays clean."""
        client = self.client()
        for t in client.targets.list({"name_starts_with": f"{self.prefix}"}):
            if not client.luns.list({"iscsi_target": {"id": t["id"]}}):
                client.targets.delete(t["id"])

    def our_luns(self) -> list[dict]:
        return self.client().luns.list({"iscsi_target": {"name_starts_with": f"{self.prefix}-"}})


@pytest.fixture
def cluster(zbs_lite: ZbsLiteProcess, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, zbs_lite, f"e2e{secrets.token_hex(3)}")
    c.start()
    try:
        yield c
    finally:
        c.stop()
        c.remove_targets()
