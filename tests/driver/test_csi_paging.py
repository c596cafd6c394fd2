"""The ListVolumes and ListSnapshots paging contract, against a real zbs-lite and driver process.

What the external-attacher and health monitors rely on when they page through every volume:
each volume that exists for the whole pass is listed exactly once, whatever is created and
deleted meanwhile (also the very volume a token points after), nothing is listed twice, a
response never holds more than asked (nor, unasked, more than one page's cap), and another
Kubernetes cluster's volumes on the same ZBS never show.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient
from csi_harness import DriverProcess, GiB, clean_env, mount_cap
from zbs_csi.listing import BYTES_CAP, PAGE_CAP, Item, take
from zbs_csi.ownership import Naming
from zbs_csi.proto import csi_pb2 as csi

from zbs_lite.testing import ZbsLiteProcess

LUNS_PER_TARGET = 5  # small, so every pass crosses many targets


@pytest.fixture
def client(zbs_lite: ZbsLiteProcess) -> ZbsClient:
    return ZbsClient(zbs_lite.api_url, zbs_lite.username, zbs_lite.password, ca_path=zbs_lite.ca_path)


@pytest.fixture
def prefix(client: ZbsClient) -> Iterator[str]:
    """A target prefix of this test's own; its targets (empty by then) are removed afterwards."""
    prefix = f"pg{secrets.token_hex(3)}"
    yield prefix
    for t in client.targets.list({"name_starts_with": f"{prefix}-"}):
        client.mutate("delete-iscsi-lun", {"where": {"iscsi_target": {"id": t["id"]}}}, what="leftover LUNs")
        client.targets.delete(t["id"])


def controller(tmp_path: Path, zl: ZbsLiteProcess, prefix: str, cluster_id: str) -> DriverProcess:
    env = clean_env(zl.env)
    env.update(
        ZBS_CSI_TARGET_PREFIX=prefix,
        ZBS_CSI_KUBERNETES_CLUSTER_ID=cluster_id,
        ZBS_CSI_DEFAULT_REPLICA_NUM="1",
        ZBS_CSI_LUNS_PER_TARGET=str(LUNS_PER_TARGET),
    )
    return DriverProcess(tmp_path, "controller", env, name=f"ctrl-{cluster_id}").start()


def _controller_fixture(cluster_id: str) -> Any:
    @pytest.fixture
    def fixture(tmp_path: Path, zbs_lite: ZbsLiteProcess, prefix: str) -> Iterator[DriverProcess]:
        ctrl = controller(tmp_path, zbs_lite, prefix, cluster_id)
        try:
            yield ctrl
        finally:
            _delete_everything(ctrl)
            ctrl.stop()

    return fixture


east = _controller_fixture("east")  # two Kubernetes clusters sharing one target prefix on one ZBS
west = _controller_fixture("west")


def _create(ctrl: DriverProcess, name: str) -> str:
    req = csi.CreateVolumeRequest(
        name=name, capacity_range=csi.CapacityRange(required_bytes=GiB), volume_capabilities=[mount_cap()]
    )
    return str(ctrl.controller.CreateVolume(req, timeout=300).volume.volume_id)


def _delete(ctrl: DriverProcess, volume_id: str) -> None:
    ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=300)


def _pages(ctrl: DriverProcess, max_entries: int, limit: int = 500) -> Iterator[csi.ListVolumesResponse]:
    """A pass following next_token; one that never ends (a token that does not move on) fails."""
    token = ""
    for _ in range(limit):
        resp = ctrl.controller.ListVolumes(
            csi.ListVolumesRequest(max_entries=max_entries, starting_token=token), timeout=120
        )
        yield resp
        token = resp.next_token
        if not token:
            return
    pytest.fail(f"a ListVolumes pass did not end within {limit} pages")


def _delete_everything(ctrl: DriverProcess) -> None:
    for snap in ctrl.controller.ListSnapshots(csi.ListSnapshotsRequest(), timeout=120).entries:
        ctrl.controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=snap.snapshot.snapshot_id), timeout=300)
    for page in _pages(ctrl, 0):
        for e in page.entries:
            _delete(ctrl, e.volume.volume_id)


def test_every_volume_once_across_pages_while_volumes_come_and_go(east: DriverProcess, west: DriverProcess) -> None:
    stable = {_create(east, f"pvc-stable-{i}") for i in range(24)}
    transient = [_create(east, f"pvc-transient-{i}") for i in range(12)]
    foreign = {_create(west, f"pvc-stable-{i}") for i in range(6)}  # the same CSI names, another cluster
    ever = set(stable) | set(transient)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        """Creates and deletes all through the pass; the pass also deletes under its own cursor."""
        i = 0
        try:
            while not stop.is_set():
                vid = _create(east, f"pvc-churn-{i}")
                ever.add(vid)
                if i % 2:
                    _delete(east, vid)
                i += 1
        except BaseException as exc:  # the test fails with it below
            errors.append(exc)

    worker = threading.Thread(target=churn)
    worker.start()
    listed: list[str] = []
    try:
        for page in _pages(east, 4):
            ids = [e.volume.volume_id for e in page.entries]
            assert len(ids) <= 4
            again = set(ids) & set(listed)
            assert not again, f"listed again on a later page: {sorted(again)}"
            listed += ids
            if page.next_token and transient:
                # the token's own volume goes away before the token is used
                victim = ids[-1] if ids[-1] in transient else transient[0]
                transient.remove(victim)
                _delete(east, victim)
    finally:
        stop.set()
        worker.join()
    assert not errors, errors
    assert len(listed) == len(set(listed)), "a volume was listed twice"
    assert stable <= set(listed), f"missed {sorted(stable - set(listed))}"
    assert set(listed) <= ever, "listed a volume this cluster never had"
    assert not foreign & set(listed), "listed another Kubernetes cluster's volume"
    west_listed = {e.volume.volume_id for page in _pages(west, 3) for e in page.entries}
    assert west_listed == foreign


def test_a_bad_token_is_aborted_and_an_unknown_target_resumes_after_it(east: DriverProcess) -> None:
    for token in ("12", "no-slash", "a/b/../c", "x" * 300 + "/y", "/lun"):
        with pytest.raises(grpc.RpcError) as err:
            east.controller.ListVolumes(csi.ListVolumesRequest(starting_token=token), timeout=60)
        assert err.value.code() == grpc.StatusCode.ABORTED, token
    made = {_create(east, f"pvc-{i}") for i in range(3)}
    # ids above every real one ("z..."): nothing left after it; below every one ("0"): all of them
    assert not east.controller.ListVolumes(csi.ListVolumesRequest(starting_token="zzzz/zzzz"), timeout=60).entries
    resp = east.controller.ListVolumes(csi.ListVolumesRequest(starting_token="0/0"), timeout=60)
    assert {e.volume.volume_id for e in resp.entries} == made and not resp.next_token


def test_a_listing_without_max_entries_comes_in_capped_pages(
    east: DriverProcess, client: ZbsClient, prefix: str
) -> None:
    """More volumes than one response may carry: made straight through the API (fast), named
    as the driver names its own, so they are this cluster's volumes."""
    naming = Naming(prefix, "east")
    total, per_target = PAGE_CAP + 60, 255
    for t in range(-(-total // per_target)):
        target = client.targets.create(
            naming.target_name(100 + t), replica_num=1, description=naming.target_description
        )
        n = min(per_target, total - t * per_target)
        client.mutate(
            "create-iscsi-lun",
            [
                {
                    "name": naming.lun_name(f"pvc-bulk-{t}-{i}"),
                    "iscsi_target_id": target["id"],
                    "assigned_size": GiB,
                    "replica_num": 1,
                    "allowed_initiators": "",
                }
                for i in range(n)
            ],
            what="bulk LUNs",
        )
    first = east.controller.ListVolumes(csi.ListVolumesRequest(), timeout=120)
    assert len(first.entries) == PAGE_CAP and first.next_token
    assert first.ByteSize() < 4 << 20  # gRPC's default receive limit
    rest = east.controller.ListVolumes(csi.ListVolumesRequest(starting_token=first.next_token), timeout=120)
    assert len(rest.entries) == total - PAGE_CAP and not rest.next_token
    assert len({e.volume.volume_id for e in [*first.entries, *rest.entries]}) == total
    for t in client.targets.list({"name_starts_with": naming.target_prefix}):
        client.mutate("delete-iscsi-lun", {"where": {"iscsi_target": {"id": t["id"]}}}, what="bulk LUNs")


def test_snapshots_page_once_each_while_snapshots_come_and_go(east: DriverProcess) -> None:
    vols = [_create(east, f"pvc-snap-src-{i}") for i in range(3)]

    def snap(name: str, vol: str) -> str:
        req = csi.CreateSnapshotRequest(name=name, source_volume_id=vol)
        return str(east.controller.CreateSnapshot(req, timeout=300).snapshot.snapshot_id)

    stable = {snap(f"snap-stable-{i}", vols[i % 3]) for i in range(9)}
    transient = [snap(f"snap-transient-{i}", vols[i % 3]) for i in range(4)]
    ever = stable | set(transient)
    listed: list[str] = []
    token = ""
    k = 0
    while True:
        resp = east.controller.ListSnapshots(csi.ListSnapshotsRequest(max_entries=2, starting_token=token), timeout=60)
        assert len(resp.entries) <= 2
        listed += [e.snapshot.snapshot_id for e in resp.entries]
        assert all(e.snapshot.source_volume_id in vols and e.snapshot.size_bytes == GiB for e in resp.entries)
        token = resp.next_token
        if not token:
            break
        ever.add(snap(f"snap-new-{k}", vols[k % 3]))
        if transient:
            east.controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=transient.pop()), timeout=300)
        k += 1
    assert len(listed) == len(set(listed)), "a snapshot was listed twice"
    assert stable <= set(listed) <= ever
    one = east.controller.ListSnapshots(csi.ListSnapshotsRequest(source_volume_id=vols[0], max_entries=1), timeout=60)
    assert len(one.entries) == 1 and one.next_token


def test_a_response_stops_at_its_byte_cap() -> None:
    """``take`` on real CSI messages: entries of ~1 MiB each, so the byte cap, not the count, ends
    the page, and the token resumes right after the last entry returned."""
    big = "x" * (1 << 20)

    def items() -> Iterator[Item]:
        for i in range(10):
            yield Item({"i": i}, f"t/{i}")

    def build(item: Item) -> csi.ListVolumesResponse.Entry:
        assert item.obj is not None
        vol = csi.Volume(volume_id=str(item.obj["i"]), volume_context={"pad": big})
        return csi.ListVolumesResponse.Entry(volume=vol)

    entries, token = take(items(), PAGE_CAP, build)
    assert len(entries) == BYTES_CAP // (1 << 20) - 1 and token == f"t/{len(entries) - 1}"
    assert csi.ListVolumesResponse(entries=entries, next_token=token).ByteSize() < BYTES_CAP
