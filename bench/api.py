"""zbs-lite management API with the shared client, at 2,000 LUNs across 10 targets.

Prints, all measured in this one run against one fresh zbs-lite:
  * API round trips per client operation (from the client's own call counter),
  * p50/p99 latency of get-LUN-by-name and of create-LUN (task wait included),
  * get-by-name p50 at 2,000 LUNs over p50 at 100 LUNs (indexes: should stay near 1),
  * a filtered get-iscsi-luns (one LUN by name) over listing all 2,000 (should be far below 1),
  * with --storage (root, mkfs.xfs): snapshot+clone of a LUN holding 256 MiB of data on an
    XFS reflink pool over the same on a plain-directory pool (copies).

Run: .venv/bin/python bench/api.py [--luns 2000] [--targets 10] [--task-delay 0.05]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient  # noqa: E402

from zbs_lite.testing import ZbsLiteProcess  # noqa: E402


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def calls(client: ZbsClient, fn: Callable[[], Any]) -> int:
    before = client.stats.total
    fn()
    return client.stats.total - before


def bulk_luns(client: ZbsClient, targets: list[dict[str, Any]], start: int, stop: int) -> None:
    """LUNs start..stop-1, spread over the targets, 100 per create request (setup, not measured)."""
    batch: list[dict[str, Any]] = []
    for i in range(start, stop):
        t = targets[i % len(targets)]
        batch.append({"name": f"vol-{i:05d}", "iscsi_target_id": t["id"], "assigned_size": 1 << 30, "replica_num": 2})
        if len(batch) == 100 or i == stop - 1:
            client.mutate("create-iscsi-lun", batch, what="bench LUNs")
            batch = []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--luns", type=int, default=2000)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--task-delay", type=float, default=0.05)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--storage", action="store_true", help="also compare reflink and copy pools")
    args = ap.parse_args()
    if args.luns > 255 * args.targets:
        ap.error("at most 255 LUNs per target")

    with (
        tempfile.TemporaryDirectory(prefix="zbs-lite-bench-") as tmp,
        ZbsLiteProcess(tmp, task_delay=args.task_delay) as zl,
    ):
        env = zl.env
        client = ZbsClient(env["ZBS_HOST"], env["ZBS_USERNAME"], env["ZBS_PASSWORD"], ca_path=env["ZBS_CA_PATH"])
        cid = client.clusters.default_id()
        targets = [
            client.targets.create(f"bench-{i}", cid, replica_num=2, thin_provision=True) for i in range(args.targets)
        ]
        print(f"zbs-lite {zl.api_url}, task delay {args.task_delay}s, copies by {zl.clone_mode}")

        bulk_luns(client, targets, 0, 100)
        names = [f"vol-{i:05d}" for i in range(100)]
        get_small = timed(lambda: client.luns.get(name=names[int(time.perf_counter_ns()) % 100]), args.samples)

        bulk_luns(client, targets, 100, args.luns)
        total = client.count("iscsi-luns")
        print(f"{total} LUNs in {len(targets)} targets")

        every = [f"vol-{i:05d}" for i in range(args.luns)]
        k = iter(range(10**9))
        get_big = timed(lambda: client.luns.get(name=every[next(k) * 7919 % len(every)]), args.samples)

        spare = targets[-1]
        used = client.count("iscsi-luns", {"iscsi_target": {"id": spare["id"]}})
        n_create = min(50, 255 - used)
        created: list[dict[str, Any]] = []
        create = timed(
            lambda: created.append(client.luns.create(f"new-{len(created)}", spare["id"], "1GiB", replica_num=2)),
            n_create,
        )

        lun = created[0]
        trips = {
            "targets.get(name=)": calls(client, lambda: client.targets.get(name="bench-3")),
            "luns.get(name=)": calls(client, lambda: client.luns.get(name="vol-00042")),
            "luns.create (replica given, wait)": calls(
                client, lambda: client.luns.create("trip-create", spare["id"], "1GiB", replica_num=2)
            ),
            "luns.create (replica from target)": calls(
                client, lambda: client.luns.create("trip-create2", spare["id"], "1GiB")
            ),
            "luns.update (grow, wait)": calls(client, lambda: client.luns.update(lun["id"], assigned_size="2GiB")),
            "snapshots.create (wait)": calls(client, lambda: client.snapshots.create(lun["id"], spare["id"], "snap")),
            "luns.delete (with snapshots)": calls(client, lambda: client.luns.delete(lun["id"], remove_snapshot=True)),
            f"luns.list(one target, {used + n_create} LUNs)": calls(
                client, lambda: client.luns.list({"iscsi_target": {"id": spare["id"]}})
            ),
            f"luns.list(all, {total} LUNs)": calls(client, lambda: client.luns.list()),
        }

        one = timed(lambda: client.request("get-iscsi-luns", {"where": {"name": "vol-01234"}}), 30)
        everything = timed(lambda: client.request("get-iscsi-luns", {}), 30)
        client.close()

    ms = 1000.0
    print("\nAPI round trips per client operation")
    for op, n in trips.items():
        print(f"  {op:42s} {n}")
    print("\nlatency (ms)                          p50      p99")
    print(f"  get LUN by name @100 LUNs      {pct(get_small, 50) * ms:8.2f} {pct(get_small, 99) * ms:8.2f}")
    print(f"  get LUN by name @{args.luns} LUNs     {pct(get_big, 50) * ms:8.2f} {pct(get_big, 99) * ms:8.2f}")
    print(f"  create LUN (task wait incl.)   {pct(create, 50) * ms:8.2f} {pct(create, 99) * ms:8.2f}")
    print(f"  get-iscsi-luns name filter     {statistics.median(one) * ms:8.2f}")
    print(f"  get-iscsi-luns everything      {statistics.median(everything) * ms:8.2f}")
    print("\nratios")
    print(f"  get-by-name p50 @{args.luns} / @100 LUNs:            {pct(get_big, 50) / pct(get_small, 50):.2f}")
    ratio = statistics.median(one) / statistics.median(everything)
    print(f"  filtered get-iscsi-luns / list all {args.luns}:     {ratio:.4f}")
    print(f"  create p50 / task delay ({args.task_delay}s):              {pct(create, 50) / args.task_delay:.2f}")
    if args.storage:
        storage()
    return 0


def snapshot_and_clone(pool: str, data_mib: int = 256) -> float:
    """Seconds for snapshot + clone of a LUN with ``data_mib`` MiB written, on one pool kind."""
    with (
        tempfile.TemporaryDirectory(prefix="zbs-lite-bench-") as tmp,
        ZbsLiteProcess(tmp, pool=pool, pool_size="4G", task_delay=0) as zl,
    ):
        env = zl.env
        client = ZbsClient(
            env["ZBS_HOST"], env["ZBS_USERNAME"], env["ZBS_PASSWORD"], ca_path=env["ZBS_CA_PATH"], poll_interval=0.01
        )
        t = client.targets.create("store", replica_num=2)
        lun = client.luns.create("data", t["id"], "1GiB", replica_num=2)
        with open(zl.pool_path / "luns" / lun["local_id"], "r+b") as fh:
            chunk = os.urandom(1 << 20)
            for _ in range(data_mib):
                fh.write(chunk)
            os.fsync(fh.fileno())
        t0 = time.perf_counter()
        snap = client.snapshots.create(lun["id"], t["id"], "s")
        client.luns.clone_from_snapshot(snap["id"], t["id"], "c")
        took = time.perf_counter() - t0
        client.close()
        return took


def storage() -> None:
    from zbs_lite.storage import xfs_possible

    if not xfs_possible():
        print("\nstorage: skipped (XFS pool needs root, mkfs.xfs and loop devices)")
        return
    copy, reflink = snapshot_and_clone("dir"), snapshot_and_clone("xfs")
    print("\nsnapshot + clone of a LUN with 256 MiB written (task wait included)")
    print(f"  dir pool (copies)      {copy * 1000:8.1f} ms")
    print(f"  xfs pool (reflink)     {reflink * 1000:8.1f} ms")
    print(f"  reflink / copy:        {reflink / copy:.3f}")


if __name__ == "__main__":
    sys.exit(main())
