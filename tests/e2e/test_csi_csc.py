"""The csc tool the quickstart playbook and operators use: every command against the real driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from csi_harness import NODE_A, Cluster, DriverProcess, host_leftovers


def csc(plugin: DriverProcess, *args: str, ok: bool = True, node: DriverProcess | None = None) -> Any:
    extra = ["--node-endpoint", f"unix://{node.sock}"] if node else []
    res = subprocess.run(
        [sys.executable, "-m", "zbs_csi.tools.csc", "--endpoint", f"unix://{plugin.sock}", *extra, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (res.returncode == 0) == ok, res.stdout + res.stderr
    return json.loads(res.stdout)


def test_csc_walks_a_volume_through_its_life(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    assert csc(c.ctrl, "probe") == {"ready": True}
    info = csc(c.ctrl, "info")
    assert info["plugin"]["name"] == "zbs.csi.smartx.com"
    caps = csc(c.a, "capabilities")
    assert caps["node_info"]["nodeId"] == NODE_A
    vol = csc(c.ctrl, "create-volume", "pvc-csc", "--size", str(1 << 30), "--param", "thinProvisioning=true")
    vid = vol["volume"]["volume_id"]
    pub_file = tmp_path / "publish.json"
    pub_file.write_text(json.dumps(csc(c.ctrl, "controller-publish", vid, "--node-id", NODE_A, "--fs-type", "xfs")))
    stage, target = str(tmp_path / "stage"), str(tmp_path / "pod" / "m")
    csc(c.a, "node-stage", vid, "--staging-path", stage, "--publish-context-file", str(pub_file), "--fs-type", "xfs")
    csc(c.a, "node-publish", vid, "--staging-path", stage, "--target-path", target, "--fs-type", "xfs")
    Path(target, "f").write_text("data")
    stats = csc(c.a, "stats", vid, "--volume-path", target)
    assert stats["usage"][0]["unit"] == "BYTES" and not stats["volume_condition"].get("abnormal", False)
    before = stats["usage"][0]["total"]
    grown = csc(c.ctrl, "expand", vid, "--size", str(2 << 30), "--volume-path", target, node=c.a)
    assert grown["controller"]["capacityBytes"] == grown["node"]["capacityBytes"] == str(2 << 30)
    assert int(csc(c.a, "stats", vid, "--volume-path", target)["usage"][0]["total"]) > int(before) + (1 << 29)
    assert Path(target, "f").read_text() == "data"
    snap = csc(c.ctrl, "create-snapshot", "snap-csc", "--source-volume-id", vid)["snapshot"]
    assert [s["snapshot"]["snapshot_id"] for s in csc(c.ctrl, "list-snapshots")["entries"]] == [snap["snapshot_id"]]
    csc(c.ctrl, "delete-snapshot", snap["snapshot_id"])
    assert [e["volume"]["volume_id"] for e in csc(c.ctrl, "list-volumes")["entries"]] == [vid]
    assert csc(c.ctrl, "get-volume", vid)["status"]["published_node_ids"] == [NODE_A]
    csc(c.a, "node-unpublish", vid, "--target-path", target)
    csc(c.a, "node-unstage", vid, "--staging-path", stage)
    csc(c.ctrl, "controller-unpublish", vid, "--node-id", NODE_A)
    csc(c.ctrl, "delete-volume", vid)
    err = csc(c.ctrl, "create-volume", "pvc-bad", "--param", "nope=1", ok=False)
    assert err["error"]["code"] == "INVALID_ARGUMENT" and "nope" in err["error"]["message"]
    assert c.our_luns() == []
    assert host_leftovers([c.a.state_dir], tmp_path) == []
