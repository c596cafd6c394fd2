""" "How much is used?" answered by zbs_info from what zbs-lite serves as CloudTower does.

Data is written through the real data path (qemu-io logs in through the VIP with libiscsi);
the LUN's ``unique_size`` must then show it, and the cluster's ``used_data_space`` within a
few seconds (zbs-lite sums a plain-directory pool in the background, as CloudTower collects
its space figures periodically).
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient

from playbooks import Playbooks
from zbs_lite.testing import ZbsLiteProcess

NODE = "iqn.2004-10.com.example:capacity-node"
MiB = 1 << 20


def test_lun_and_cluster_usage_follow_the_data_written(zbs: ZbsLiteProcess, playbooks: Playbooks) -> None:
    qemu_io = shutil.which("qemu-io")
    if qemu_io is None:
        pytest.skip("qemu-io is not installed (scripts/setup.sh installs qemu-utils)")
    with ZbsClient(zbs.api_url, zbs.username, zbs.password, ca_path=zbs.ca_path) as client:
        target = client.targets.create("space", replica_num=1)
        lun = client.luns.create("data", target["id"], "64MiB", replica_num=1, allowed_initiators=[NODE])
        before = client.clusters.default()["used_data_space"]
    host, port = zbs.vip
    image = (
        f"driver=iscsi,transport=tcp,portal={host}:{port},target=iqn.2016-02.com.smartx:system:space,"
        f"lun={lun['lun_id']},initiator-name={NODE}"
    )
    subprocess.run(
        [qemu_io, "--image-opts", image, "-c", "write -P 0xab 0 8M", "-c", "flush"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with ZbsClient(zbs.api_url, zbs.username, zbs.password, ca_path=zbs.ca_path) as client:
        deadline = time.monotonic() + 30
        while client.clusters.default()["used_data_space"] < before + 8 * MiB:
            assert time.monotonic() < deadline, "the cluster's used_data_space never showed the 8 MiB written"
            time.sleep(0.5)
    tasks = [
        {"name": "Space", "smartx.zbs.zbs_info": {"gather_subset": ["cluster", "luns"]}, "register": "space"},
        {
            "name": "The written data shows, per LUN and for the cluster",
            "ansible.builtin.assert": {
                "that": [
                    f"(space.luns | selectattr('name', 'equalto', 'data') | first).unique_size >= {8 * MiB}",
                    f"space.cluster.used_data_space >= {before + 8 * MiB}",
                    "space.capacity.total == space.cluster.total_data_capacity",
                    "space.capacity.used == space.cluster.used_data_space",
                    "space.capacity.free == space.capacity.total - space.capacity.used",
                    f"space.capacity.provisioned == {64 * MiB}",
                ]
            },
        },
    ]
    playbooks.run([playbooks.wrap(tasks, "capacity")], "capacity")
