"""Deleting or rolling back a LUN that a host is logged in to: refused, naming the host, unless forced.

The host is real: qemu-storage-daemon logs in through zbs-lite's VIP with its own initiator
name (libiscsi) and keeps the session open, as a node that mounted the LUN does.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient

from playbooks import Playbooks
from zbs_lite.testing import ZbsLiteProcess

NODE = "iqn.2004-10.com.example:in-use-node"
OTHER = "iqn.2004-10.com.example:other-node"


@pytest.fixture
def session(zbs: ZbsLiteProcess) -> Iterator[None]:
    """Target ``app`` with LUN ``data`` (snapshot ``s1``) that NODE is logged in to."""
    qsd = shutil.which("qemu-storage-daemon")
    if qsd is None:
        pytest.skip("qemu-storage-daemon is not installed (scripts/setup.sh installs qemu-system-common)")
    with ZbsClient(zbs.api_url, zbs.username, zbs.password, ca_path=zbs.ca_path) as client:
        target = client.targets.create("app", replica_num=1)
        lun = client.luns.create("data", target["id"], "16MiB", replica_num=1, allowed_initiators=[NODE, OTHER])
        client.snapshots.create(lun["id"], target["id"], "s1")
    host, port = zbs.vip
    blockdev = (
        f"driver=iscsi,node-name=n,transport=tcp,portal={host}:{port},"
        f"target=iqn.2016-02.com.smartx:system:app,lun={lun['lun_id']},initiator-name={NODE}"
    )
    proc = subprocess.Popen([qsd, "--blockdev", blockdev], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, conns = zbs.call("get-iscsi-connections", {})
            if isinstance(conns, list) and any(c.get("initiator_iqn") == NODE for c in conns):
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.2)
        else:
            raise AssertionError("the session never showed up in get-iscsi-connections")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_delete_and_rollback_of_a_lun_in_use_are_refused_then_forced(zbs, session, playbooks: Playbooks) -> None:
    refused = {"register": "out", "ignore_errors": True}
    tasks = [
        {
            "name": "Delete it",
            "smartx.zbs.zbs_lun": {"target": "app", "name": "data", "state": "absent", "remove_snapshots": True},
            **refused,
            "register": "delete",
        },
        {
            "name": "Delete it in check mode",
            "smartx.zbs.zbs_lun": {"target": "app", "name": "data", "state": "absent", "remove_snapshots": True},
            "check_mode": True,
            "diff": True,
            **refused,
            "register": "delete_check",
        },
        {
            "name": "Roll it back",
            "smartx.zbs.zbs_lun_snapshot": {"target": "app", "lun": "data", "name": "s1", "state": "rolled_back"},
            **refused,
            "register": "rollback",
        },
        {
            "name": "Purge it with zbs_luns",
            "smartx.zbs.zbs_luns": {"target": "app", "luns": [], "purge": True, "remove_snapshots": True},
            **refused,
            "register": "purge",
        },
        {
            "name": "Who is connected",
            "smartx.zbs.zbs_info": {"gather_subset": ["initiators"], "initiator": NODE},
            "register": "who",
        },
        {
            "name": "Every refusal names the host and nothing changed",
            "ansible.builtin.assert": {
                "that": [
                    "delete is failed and delete.field == 'force'",
                    f"'{NODE}' in delete.msg and '{OTHER}' not in delete.msg",
                    "delete_check is failed and delete_check.msg == delete.msg",
                    f"rollback is failed and rollback.field == 'force' and '{NODE}' in rollback.msg",
                    f"purge is failed and purge.field == 'force' and '{NODE}' in purge.msg",
                    "who.initiators[0].sessions | map(attribute='target') | list == ['app']",
                ]
            },
        },
        {
            "name": "Roll it back anyway",
            "smartx.zbs.zbs_lun_snapshot": {
                "target": "app",
                "lun": "data",
                "name": "s1",
                "state": "rolled_back",
                "force": True,
            },
            "register": "forced_rollback",
        },
        {
            "name": "Delete it anyway",
            "smartx.zbs.zbs_lun": {
                "target": "app",
                "name": "data",
                "state": "absent",
                "remove_snapshots": True,
                "force": True,
            },
            "diff": True,
            "register": "forced_delete",
        },
        {
            "name": "Forced, with the sessions in the diff",
            "ansible.builtin.assert": {
                "that": [
                    "forced_rollback is changed",
                    "forced_delete is changed",
                    f"forced_delete.diff.before.sessions | select('search', '{NODE}') | list | length == 1",
                ]
            },
        },
    ]
    playbooks.run([playbooks.wrap(tasks, "in use")], "in-use")
    _, luns = zbs.call("get-iscsi-luns", {})
    assert luns == []
