"""zbs-csi latency and overhead, measured side by side on one zbs-lite.

For N volumes (default 100) at concurrency C (default 8), through the driver's real gRPC
socket: CreateVolume, ControllerPublishVolume, NodeStageVolume (userspace connector: iSCSI
identity check, qemu-storage-daemon login, loop device, mkfs.ext4, mount), NodeUnstage,
ControllerUnpublish and DeleteVolume; p50/p99 of each. Then the same number of raw
``create-iscsi-lun`` calls through the shared client at the same concurrency, and the ratio
driver CreateVolume / raw create (the driver's overhead), plus ZBS API calls per CreateVolume
(the driver runs in this process so its client's call counter can be read).

    .venv/bin/python bench/csi.py [--volumes 100] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from zbs_csi.config import load_config
from zbs_csi.controller import ControllerService
from zbs_csi.node.connectors import make_connector
from zbs_csi.node.runner import HostRunner
from zbs_csi.node.service import NodeService
from zbs_csi.proto import csi_pb2 as csi
from zbs_csi.proto import csi_pb2_grpc as csi_grpc
from zbs_csi.server import Driver
from zbs_csi.zbs import make_client

from zbs_lite.testing import ZbsLiteProcess

NODE = "iqn.2026-01.com.smartx.bench:node-1"
GiB = 1024**3


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/csi.py needs root (loop devices, mounts)")
        return 2
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(var, None)
    work = Path(tempfile.mkdtemp(prefix="zbs-csi-bench."))
    with ZbsLiteProcess(work / "zbs-lite", task_delay=0.0) as zl:
        env = dict(
            zl.env,
            ZBS_CSI_DEFAULT_REPLICA_NUM="1",
            ZBS_CSI_TARGET_PREFIX="bench",
            ZBS_CSI_KUBERNETES_CLUSTER_ID="bench",
            ZBS_CSI_CONNECTOR="userspace",
        )
        cfg = load_config(
            None,
            env=env,
            overrides={"endpoint": f"unix://{work}/csi.sock", "node_id": NODE, "state_dir": str(work / "state")},
        )
        client = make_client(cfg)
        runner = HostRunner(default_timeout=cfg.command_timeout)
        node = NodeService(cfg, runner, make_connector(cfg, runner))
        driver = Driver(cfg, controller=ControllerService(cfg, client), node=node)
        driver.start()
        channel = grpc.insecure_channel(cfg.endpoint)
        ctl, nd = csi_grpc.ControllerStub(channel), csi_grpc.NodeStub(channel)
        cap = csi.VolumeCapability(access_mode=csi.VolumeCapability.AccessMode(mode=1))
        cap.mount.fs_type = "ext4"
        times: dict[str, list[float]] = {
            k: [] for k in ("create", "publish", "stage", "unstage", "unpublish", "delete")
        }
        lock = threading.Lock()

        def timed(key: str, fn, req):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            resp = fn(req, timeout=600)
            with lock:
                times[key].append(time.perf_counter() - t0)
            return resp

        def one(i: int) -> None:
            vol = timed(
                "create",
                ctl.CreateVolume,
                csi.CreateVolumeRequest(
                    name=f"bench-{i}", capacity_range=csi.CapacityRange(required_bytes=GiB), volume_capabilities=[cap]
                ),
            ).volume
            vid = vol.volume_id
            ctx = timed(
                "publish",
                ctl.ControllerPublishVolume,
                csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=NODE, volume_capability=cap),
            ).publish_context
            stage = work / "stage" / vid
            timed(
                "stage",
                nd.NodeStageVolume,
                csi.NodeStageVolumeRequest(
                    volume_id=vid, staging_target_path=str(stage), publish_context=ctx, volume_capability=cap
                ),
            )
            timed(
                "unstage",
                nd.NodeUnstageVolume,
                csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(stage)),
            )
            timed(
                "unpublish",
                ctl.ControllerUnpublishVolume,
                csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE),
            )
            timed("delete", ctl.DeleteVolume, csi.DeleteVolumeRequest(volume_id=vid))

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.volumes)))
        wall = time.perf_counter() - t0

        # API calls per CreateVolume, counted one create at a time (concurrent calls would mix).
        create_calls = []
        for i in range(10):
            before = client.stats.total
            vid = ctl.CreateVolume(
                csi.CreateVolumeRequest(name=f"count-{i}", volume_capabilities=[cap]), timeout=600
            ).volume.volume_id
            create_calls.append(client.stats.total - before)
            ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=600)

        # The same creates straight through the client, into one target, side by side.
        target = client.targets.create("bench-raw", replica_num=1)
        raw: list[float] = []

        def raw_one(i: int) -> None:
            t = time.perf_counter()
            client.luns.create(f"raw-{i}", target["id"], GiB, replica_num=1, allowed_initiators="")
            with lock:
                raw.append(time.perf_counter() - t)

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(raw_one, range(min(args.volumes, 255))))
        for lun in client.luns.list({"iscsi_target": {"id": target["id"]}}):
            client.luns.delete(lun["id"])
        client.targets.delete(target["id"])
        driver.stop()
    shutil.rmtree(work, ignore_errors=True)

    print(f"zbs-csi on zbs-lite: {args.volumes} volumes, concurrency {args.concurrency}, wall {wall:.1f}s")
    print(f"{'operation':<22}{'p50 ms':>10}{'p99 ms':>10}")
    names = {
        "create": "CreateVolume",
        "publish": "ControllerPublish",
        "stage": "NodeStage (userspace)",
        "unstage": "NodeUnstage",
        "unpublish": "ControllerUnpublish",
        "delete": "DeleteVolume",
    }
    for key, label in names.items():
        print(f"{label:<22}{pct(times[key], 50):>10.1f}{pct(times[key], 99):>10.1f}")
    print(f"{'raw create-iscsi-lun':<22}{pct(raw, 50):>10.1f}{pct(raw, 99):>10.1f}")
    print(
        f"ZBS API calls per CreateVolume (sequential, incl. task polls): mean {statistics.mean(create_calls):.1f}, "
        f"max {max(create_calls)}"
    )
    print(f"ratio CreateVolume / raw create-iscsi-lun (p50): {pct(times['create'], 50) / pct(raw, 50):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
