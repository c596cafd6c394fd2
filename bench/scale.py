"""zbs-csi and zbs-lite at SmartX's scale: 100, 10,000 and 100,000 thin LUNs in one run.

One zbs-lite (no task delay) grows to each size in turn (batched ``create-iscsi-lun`` calls of
one target's worth, in targets named as the driver names them, so every LUN is one of the
driver's volumes); at each size a freshly started in-process driver serves its gRPC socket
and this measures, side by side with the same figures at the first size:

* get-LUN-by-name p50 (the shared client), CreateVolume, DeleteVolume, ControllerPublish,
  GetCapacity p50, and the first CreateVolume after the driver started (target pool load);
* ListVolumes: one page (``--page`` entries) p50 over pages spread across the list, a full
  pass following ``next_token`` (checked: every volume exactly once), and one call without
  ``max_entries`` (entries and bytes: it must stay under gRPC's 4 MiB);
* the client's list-all (every LUN, ``first``/``after`` pages) per LUN;
* zbs-lite: RSS after the growth, restart time (SIGTERM, start, API answering) and the peak
  RSS of the restart (recovery), RSS after the restart.

Ratios are to the first size, measured in this run: per-object figures should stay near 1,
"full pass / (N/first x one page)" near 1 (paging is linear), RSS a small multiple.

    .venv/bin/python bench/scale.py [--sizes 100,10000,100000] [--page 100] [--samples 30]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from zbs_csi.config import Config, load_config  # noqa: E402
from zbs_csi.controller import ControllerService  # noqa: E402
from zbs_csi.ids import lun_name_for  # noqa: E402
from zbs_csi.ownership import Naming  # noqa: E402
from zbs_csi.proto import csi_pb2 as csi  # noqa: E402
from zbs_csi.proto import csi_pb2_grpc as csi_grpc  # noqa: E402
from zbs_csi.server import Driver  # noqa: E402
from zbs_csi.zbs import ZbsClient, make_client  # noqa: E402

from zbs_lite.testing import ZbsLiteProcess  # noqa: E402

GiB = 1024**3
LUNS_PER_TARGET = 255
NODE = "iqn.2026-01.com.smartx.bench:scale-node"
CAP = csi.VolumeCapability(
    access_mode=csi.VolumeCapability.AccessMode(mode=csi.VolumeCapability.AccessMode.SINGLE_NODE_WRITER),
    mount=csi.VolumeCapability.MountVolume(fs_type="ext4"),
)


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def p50_of(fn: Callable[[Any], Any], args: list[Any]) -> float:
    """The median wall time of ``fn(arg)`` over ``args``."""
    return p50([timed(lambda a=a: fn(a))[0] for a in args])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (this one's includes the in-process driver)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Figures:
    n: int
    by_name: float = 0.0
    by_name_cpu: float = 0.0
    create: float = 0.0
    delete: float = 0.0
    publish: float = 0.0
    capacity: float = 0.0
    first_create: float = 0.0
    page: float = 0.0
    page_cpu: float = 0.0
    full_pass: float = 0.0
    pass_cpu: float = 0.0
    pages: int = 0
    unpaged_entries: int = 0
    unpaged_bytes: int = 0
    list_all: float = 0.0
    rss_kib: int = 0
    restart: float = 0.0
    restart_peak_kib: int = 0
    rss_after_restart_kib: int = 0
    notes: list[str] = field(default_factory=list)


class Population:
    """Targets and LUNs named as the driver names them, grown in batches of one target's worth."""

    def __init__(self, client: ZbsClient, naming: Naming) -> None:
        self.client = client
        self.naming = naming
        self.count = 0
        self.targets: list[str] = []
        self.names: list[str] = []

    def grow(self, n: int) -> None:
        while self.count < n:
            slot = self.count // LUNS_PER_TARGET
            if slot == len(self.targets):
                t = self.client.targets.create(
                    self.naming.target_name(slot + 1),
                    replica_num=1,
                    description=self.naming.target_description,
                    iqn_whitelist="*/*",
                    ip_whitelist="*/*",
                )
                self.targets.append(t["id"])
            room = min(LUNS_PER_TARGET - self.count % LUNS_PER_TARGET, n - self.count)
            batch = []
            for i in range(self.count, self.count + room):
                name = self.naming.name_prefix + lun_name_for(f"pvc-scale-{i:06d}")
                self.names.append(name)
                batch.append(
                    {
                        "name": name,
                        "iscsi_target_id": self.targets[slot],
                        "assigned_size": GiB,
                        "replica_num": 1,
                        "thin_provision": True,
                        "allowed_initiators": "",
                    }
                )
            self.client.mutate("create-iscsi-lun", batch, what=f"{room} bench LUNs")
            self.count += room


class Bench:
    def __init__(self, work: Path, zl: ZbsLiteProcess, args: argparse.Namespace) -> None:
        self.work = work
        self.zl = zl
        self.args = args
        env = dict(
            zl.env,
            ZBS_CSI_DEFAULT_REPLICA_NUM="1",
            ZBS_CSI_TARGET_PREFIX="scale",
            ZBS_CSI_KUBERNETES_CLUSTER_ID="bench",
        )
        self.cfg: Config = load_config(
            None, env=env, overrides={"endpoint": f"unix://{work}/csi.sock", "mode": "controller"}
        )
        self.client = make_client(self.cfg)
        self.population = Population(self.client, Naming(self.cfg.target_prefix, self.cfg.kubernetes_cluster_id))
        self.rng = random.Random(16)
        self.rss_curve: list[tuple[int, int]] = []  # (LUNs, zbs-lite RSS KiB) while it grows

    def grow(self, n: int) -> None:
        """To ``n`` LUNs, noting zbs-lite's RSS every 10,000 (does it level off?)."""
        while self.population.count < n:
            self.population.grow(min(n, (self.population.count // 10_000 + 1) * 10_000))
            self.rss_curve.append((self.population.count, proc_kib(self.zl.proc.pid, "VmRSS")))  # type: ignore[union-attr]

    def measure(self, n: int) -> Figures:
        f = Figures(n)
        f.rss_kib = proc_kib(self.zl.proc.pid, "VmRSS")  # type: ignore[union-attr]
        samples = self.args.samples
        self.client.luns.get(name=self.population.names[0])  # warm
        names = [self.rng.choice(self.population.names) for _ in range(4 * samples)]  # CPU ticks are 10 ms
        cpu0 = self._cpu()
        f.by_name = p50_of(lambda name: self.client.luns.get(name=name), names)
        f.by_name_cpu = (self._cpu() - cpu0) / len(names)
        # A driver started now: its first CreateVolume reads the target pool.
        driver = Driver(self.cfg, controller=ControllerService(self.cfg, make_client(self.cfg)))
        driver.start()
        try:
            with grpc.insecure_channel(self.cfg.endpoint) as channel:
                self._controller(f, csi_grpc.ControllerStub(channel))
        finally:
            driver.stop()
        f.list_all = timed(lambda: self.client.luns.list())[0]
        self.zl.stop()
        t0 = time.perf_counter()
        self.zl.start(timeout=600)
        self.client.clusters.default()  # the API answers
        f.restart = time.perf_counter() - t0
        pid = self.zl.proc.pid  # type: ignore[union-attr]
        f.restart_peak_kib = proc_kib(pid, "VmHWM")
        f.rss_after_restart_kib = proc_kib(pid, "VmRSS")
        return f

    def _cpu(self) -> float:
        """CPU seconds of zbs-lite and of this process (client, driver): the work, whatever the machine's load."""
        return cpu_seconds(self.zl.proc.pid) + cpu_seconds(os.getpid())  # type: ignore[union-attr]

    def _controller(self, f: Figures, ctl: csi_grpc.ControllerStub) -> None:
        samples = self.args.samples

        def create(name: str) -> str:
            req = csi.CreateVolumeRequest(
                name=name, capacity_range=csi.CapacityRange(required_bytes=GiB), volume_capabilities=[CAP]
            )
            return str(ctl.CreateVolume(req, timeout=600).volume.volume_id)

        ctl.ControllerGetCapabilities(csi.ControllerGetCapabilitiesRequest())  # the channel is up
        f.first_create, first = timed(lambda: create(f"scale-first-{f.n}"))
        made, creates = [first], []
        for k in range(samples):
            t, vid = timed(lambda k=k: create(f"scale-new-{f.n}-{k}"))
            creates.append(t)
            made.append(vid)
        f.create = p50(creates)
        publish = csi.ControllerPublishVolumeRequest
        f.publish = p50_of(
            lambda v: ctl.ControllerPublishVolume(publish(volume_id=v, node_id=NODE, volume_capability=CAP)), made
        )
        for v in made:
            ctl.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=v, node_id=NODE))
        f.delete = p50_of(lambda v: ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=v)), made)
        capacity = csi.GetCapacityRequest(volume_capabilities=[CAP])
        f.capacity = p50_of(lambda _: ctl.GetCapacity(capacity), list(range(samples)))

        seen: set[str] = set()
        tokens, token, pages = [""], "", 0
        ctl.ListVolumes(csi.ListVolumesRequest(max_entries=self.args.page), timeout=600)  # warm
        cpu0, t0 = self._cpu(), time.perf_counter()
        page = self.args.page
        while True:
            resp = ctl.ListVolumes(csi.ListVolumesRequest(max_entries=page, starting_token=token), timeout=600)
            pages += 1
            for e in resp.entries:
                if e.volume.volume_id in seen:
                    f.notes.append(f"volume {e.volume.volume_id} listed twice")
                seen.add(e.volume.volume_id)
            token = resp.next_token
            if not token:
                break
            tokens.append(token)
        f.full_pass, f.pass_cpu, f.pages = time.perf_counter() - t0, self._cpu() - cpu0, pages
        if len(seen) != f.n:
            f.notes.append(f"a full pass listed {len(seen)} of {f.n} volumes")
        picks = [tokens[round(i * (len(tokens) - 1) / max(1, samples - 1))] for i in range(samples)]
        cpu0 = self._cpu()
        f.page = p50_of(lambda t: ctl.ListVolumes(csi.ListVolumesRequest(max_entries=page, starting_token=t)), picks)
        f.page_cpu = (self._cpu() - cpu0) / len(picks)
        try:
            resp = ctl.ListVolumes(csi.ListVolumesRequest(), timeout=600)
            f.unpaged_entries, f.unpaged_bytes = len(resp.entries), resp.ByteSize()
        except grpc.RpcError as exc:
            f.notes.append(f"ListVolumes without max_entries: {exc.code().name} {exc.details()[:120]}")


def report(rows: list[Figures], page: int) -> None:
    base = rows[0]
    print(f"\n{'N':>8}{'by name':>9}{'Create':>8}{'Delete':>8}{'Publish':>8}{'GetCap':>8}{'1st cr.':>8}"
          f"{'page':>8}{'pass s':>8}{'pages':>6}{'unpaged':>9}{'MiB':>6}{'all s':>7}{'RSS MiB':>8}"
          f"{'restart':>8}{'peak':>6}{'RSS2':>6}")  # fmt: skip
    for r in rows:
        print(
            f"{r.n:>8}{r.by_name * 1e3:>9.1f}{r.create * 1e3:>8.1f}{r.delete * 1e3:>8.1f}{r.publish * 1e3:>8.1f}"
            f"{r.capacity * 1e3:>8.1f}{r.first_create * 1e3:>8.1f}{r.page * 1e3:>8.1f}{r.full_pass:>8.2f}"
            f"{r.pages:>6}{r.unpaged_entries:>9}{r.unpaged_bytes / 2**20:>6.2f}{r.list_all:>7.2f}"
            f"{r.rss_kib / 1024:>8.1f}{r.restart:>8.2f}{r.restart_peak_kib / 1024:>6.0f}"
            f"{r.rss_after_restart_kib / 1024:>6.0f}"
        )
    print("(milliseconds p50 unless marked; page = one ListVolumes page of", page, "entries)")
    print(f"\nratios to N = {base.n} (goals: per-object <= 1.5, full paging <= 1.5, RSS <= 3)")
    print("(paging: full pass wall time / (N/base x one page at base); cpu: by name and paging in CPU seconds of")
    print(" zbs-lite, the client and the driver, which other load on the machine does not inflate)")
    print(f"{'N':>8}{'by name':>9}{'cpu':>6}{'Create':>8}{'Delete':>8}{'Publish':>8}{'GetCap':>8}{'1st cr.':>8}"
          f"{'page':>8}{'paging':>8}{'cpu':>6}{'all/LUN':>9}{'RSS':>6}{'restart':>8}{'peak':>6}")  # fmt: skip
    for r in rows:
        paging = r.full_pass / (r.n / base.n * base.page)
        paging_cpu = r.pass_cpu / (r.n / base.n * base.page_cpu) if base.page_cpu else float("nan")
        first = r.first_create / base.first_create
        all_per = (r.list_all / r.n) / (base.list_all / base.n)
        print(
            f"{r.n:>8}{r.by_name / base.by_name:>9.2f}{r.by_name_cpu / base.by_name_cpu:>6.2f}"
            f"{r.create / base.create:>8.2f}{r.delete / base.delete:>8.2f}"
            f"{r.publish / base.publish:>8.2f}{r.capacity / base.capacity:>8.2f}"
            f"{first:>8.2f}{r.page / base.page:>8.2f}{paging:>8.2f}{paging_cpu:>6.2f}{all_per:>9.2f}"
            f"{r.rss_kib / base.rss_kib:>6.2f}{r.restart / base.restart:>8.2f}"
            f"{r.restart_peak_kib / base.restart_peak_kib:>6.2f}"
        )
    for r in rows:
        for note in r.notes:
            print(f"N={r.n}: {note}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,10000,100000")
    ap.add_argument("--page", type=int, default=100)
    ap.add_argument("--samples", type=int, default=30)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(var, None)
    work = Path(tempfile.mkdtemp(prefix="zbs-scale-bench."))
    started = time.perf_counter()
    rows: list[Figures] = []
    try:
        with ZbsLiteProcess(work / "zbs-lite", task_delay=0.0, pool="dir") as zl:
            bench = Bench(work, zl, args)
            for n in sizes:
                grow, _ = timed(lambda n=n: bench.grow(n))
                print(f"grew to {n} LUNs in {grow:.1f}s", flush=True)
                rows.append(bench.measure(n))
                print(f"measured N={n} ({time.perf_counter() - started:.0f}s so far)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(rows, args.page)
    curve = ", ".join(f"{n // 1000}k {kib / 1024:.0f}" for n, kib in bench.rss_curve if n % 10_000 == 0)
    print(f"zbs-lite RSS (MiB) while growing, each after a restart at a measured size: {curve}")
    print(f"\nwall {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
