"""What a host really sees after the modules set up access: REPORT LUNS through the VIP (`iscsi-ls -s`).

The issue's scenario as a user lives it: LUNs made by zbs_lun without an access list, a node
granted exactly one of them by zbs_initiator, a LUN opened to everybody on purpose. Before the
safe defaults, the node saw every LUN of the target with `changed: false` and no word.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from playbooks import Playbooks
from zbs_lite.testing import ZbsLiteProcess

NODE1 = "iqn.2004-10.com.example:mask-node1"
NODE2 = "iqn.2004-10.com.example:mask-node2"
STRANGER = "iqn.2004-10.com.example:mask-stranger"
TARGET_IQN = "iqn.2016-02.com.smartx:system:db"


def luns_seen(zbs: ZbsLiteProcess, iqn: str) -> dict[str, list[int]]:
    """`iscsi-ls -s` as ``iqn`` through the VIP: target IQN -> the LUN numbers REPORT LUNS returns."""
    host, port = zbs.vip
    r = subprocess.run(
        ["iscsi-ls", "-s", "-i", iqn, f"iscsi://{host}:{port}"], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr
    seen: dict[str, list[int]] = {}
    current = ""
    for line in r.stdout.splitlines():
        m = re.match(r"Target:(\S+) Portal:", line)
        if m:
            current = m.group(1)
            seen[current] = []
        m = re.match(r"Lun:(\d+)", line.strip())
        if m:
            seen[current].append(int(m.group(1)))
    return {t: sorted(luns) for t, luns in seen.items()}


def test_exact_means_exact_for_a_real_initiator(zbs: ZbsLiteProcess, playbooks: Playbooks) -> None:
    if shutil.which("iscsi-ls") is None:
        pytest.skip("iscsi-ls is not installed (scripts/setup.sh installs libiscsi-bin)")
    tasks = [
        {"name": "The database target", "smartx.zbs.zbs_target": {"name": "db"}},
        {
            "name": "Data and logs LUNs, no access list given",
            "smartx.zbs.zbs_lun": {"target": "db", "name": "{{ item }}", "size": "16MiB"},
            "loop": ["data", "logs"],
        },
        {
            "name": "A LUN opened to everybody on purpose",
            "smartx.zbs.zbs_lun": {"target": "db", "name": "shared", "size": "16MiB", "allowed_initiators": ["*"]},
        },
        {
            "name": "Node 1 sees exactly the data LUN",
            "smartx.zbs.zbs_initiator": {"iqn": NODE1, "luns": [{"target": "db", "name": "data"}]},
            "register": "node1",
        },
        {
            "name": "Node 2 exactly the logs LUN, and no open LUN tolerated",
            "smartx.zbs.zbs_initiator": {
                "iqn": NODE2,
                "luns": [{"target": "db", "name": "logs"}],
                "on_open_luns": "fail",
            },
            "register": "node2",
            "ignore_errors": True,
        },
        {
            "name": "The open LUN is named, as a warning for node 1 and as the failure for node 2",
            "ansible.builtin.assert": {
                "that": [
                    "node1 is changed",
                    "node1.open_luns | map(attribute='name') | list == ['shared']",
                    "node1.warnings | select('search', 'db/shared') | list | length == 1",
                    "node2 is failed and node2.field == 'on_open_luns' and 'db/shared' in node2.msg",
                ]
            },
        },
    ]
    playbooks.run([playbooks.wrap(tasks, "masking")], "masking")
    _, luns = zbs.call("get-iscsi-luns", {})
    number = {lun["name"]: lun["lun_id"] for lun in luns}
    # node 1: its LUN and the one opened on purpose, not logs; node 2's failed task granted nothing.
    assert luns_seen(zbs, NODE1) == {TARGET_IQN: sorted([number["data"], number["shared"]])}
    assert luns_seen(zbs, NODE2) == {TARGET_IQN: [number["shared"]]}
    assert luns_seen(zbs, STRANGER) == {TARGET_IQN: [number["shared"]]}
