"""A drop-in for SmartX's ZBS CSI driver (issue #15), through the real sockets on a real zbs-lite.

- two Kubernetes clusters (two cluster ids, one target prefix) racing creates and deletes on
  one ZBS never see or touch each other's volumes;
- a LUN made by ``smartx.zbs.zbs_lun`` (the docs' two-line recipe) used as a static volume:
  staged, written, expanded, and still there with its data after DeleteVolume;
- SmartX's documented StorageClass accepted verbatim, and its ext2/ext3 volumes staged;
- per-StorageClass CHAP, one-way and mutual: real logins with wrong secrets refused;
- volumes of a driver without cluster ids adopted on first touch (or left static).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from csi_harness import (
    NODE_A,
    NODE_B,
    Cluster,
    DriverProcess,
    GiB,
    Kubelet,
    block_cap,
    clean_env,
    code_of,
    digest,
    host_leftovers,
    mount_cap,
    write_data,
)
from zbs_csi.ids import lun_name_for
from zbs_csi.node.mounts import find_mount
from zbs_csi.proto import csi_pb2 as csi

from zbs_lite.testing import ZbsLiteProcess

OK = grpc.StatusCode.OK
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _rpc_error(fn: Any, req: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        fn(req, timeout=120)
    return exc.value


def _new_volume(ctrl: DriverProcess, name: str, **params: str) -> str:
    req = csi.CreateVolumeRequest(
        name=name,
        capacity_range=csi.CapacityRange(required_bytes=GiB),
        volume_capabilities=[mount_cap()],
        parameters=params,
    )
    return ctrl.controller.CreateVolume(req, timeout=300).volume.volume_id


def _listed(ctrl: DriverProcess) -> set[str]:
    return {e.volume.volume_id for e in ctrl.controller.ListVolumes(csi.ListVolumesRequest(), timeout=120).entries}


# ---------------------------------------------------------------------------------- two clusters
@pytest.fixture
def two_clusters(zbs_lite: ZbsLiteProcess, tmp_path: Path) -> Iterator[tuple[Cluster, Cluster]]:
    """East and west: one target prefix (both installed with defaults), two cluster ids."""
    prefix = f"e2e{secrets.token_hex(3)}"
    east = Cluster(tmp_path / "east", zbs_lite, prefix, cluster_id="east")
    west = Cluster(tmp_path / "west", zbs_lite, prefix, cluster_id="west")
    for c in (east, west):
        c.work.mkdir()
        c.ctrl.start()
    try:
        yield east, west
    finally:
        for c in (east, west):
            c.ctrl.stop()
            c.remove_targets()


def test_two_clusters_race_and_never_see_or_touch_each_other(two_clusters: tuple[Cluster, Cluster]) -> None:
    east, west = two_clusters
    made: dict[str, set[str]] = {"east": set(), "west": set()}
    seen: dict[str, list[set[str]]] = {"east": [], "west": []}
    errors: list[str] = []
    guard = threading.Lock()

    def churn(c: Cluster, worker: int) -> None:
        """Create, list and delete; the same CSI names in both clusters on purpose."""
        try:
            for i in range(4):
                vid = _new_volume(c.ctrl, f"pvc-{worker}-{i}")
                with guard:
                    made[c.cluster_id].add(vid)
                seen[c.cluster_id].append(_listed(c.ctrl))
                if i % 2:
                    c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=120)
        except grpc.RpcError as exc:
            errors.append(f"{c.cluster_id}: {exc.code()} {exc.details()}")

    threads = [threading.Thread(target=churn, args=(c, w)) for w in range(3) for c in (east, west)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Same CSI names, never the same volume; no list ever showed the other cluster's volume.
    assert len(made["east"]) == len(made["west"]) == 12 and not made["east"] & made["west"]
    for me, other in (("east", "west"), ("west", "east")):
        assert all(not (listing & made[other]) for listing in seen[me]), f"{me} listed {other}'s volumes"
    assert _listed(east.ctrl) <= made["east"] and len(_listed(east.ctrl)) == 6
    assert _listed(west.ctrl) <= made["west"] and len(_listed(west.ctrl)) == 6

    # Every operation on the other cluster's volume is refused, naming the owner; nothing changes.
    theirs = sorted(_listed(west.ctrl))[0]
    before = east.client().luns.get(local_id=theirs)
    cap = mount_cap()
    attempts = [
        (east.ctrl.controller.DeleteVolume, csi.DeleteVolumeRequest(volume_id=theirs)),
        (
            east.ctrl.controller.ControllerPublishVolume,
            csi.ControllerPublishVolumeRequest(volume_id=theirs, node_id=NODE_A, volume_capability=cap),
        ),
        (east.ctrl.controller.ControllerUnpublishVolume, csi.ControllerUnpublishVolumeRequest(volume_id=theirs)),
        (
            east.ctrl.controller.ControllerExpandVolume,
            csi.ControllerExpandVolumeRequest(
                volume_id=theirs, capacity_range=csi.CapacityRange(required_bytes=2 * GiB)
            ),
        ),
        (east.ctrl.controller.ControllerGetVolume, csi.ControllerGetVolumeRequest(volume_id=theirs)),
        (east.ctrl.controller.CreateSnapshot, csi.CreateSnapshotRequest(name="steal", source_volume_id=theirs)),
        (
            east.ctrl.controller.CreateVolume,
            csi.CreateVolumeRequest(
                name="clone-theirs",
                volume_capabilities=[cap],
                volume_content_source=csi.VolumeContentSource(
                    volume=csi.VolumeContentSource.VolumeSource(volume_id=theirs)
                ),
            ),
        ),
    ]
    for fn, req in attempts:
        err = _rpc_error(fn, req)
        assert err.code() == PRECONDITION and "'west'" in (err.details() or ""), (type(req).__name__, err.details())
    after = east.client().luns.get(local_id=theirs)
    assert after is not None and {k: after[k] for k in ("name", "assigned_size", "allowed_initiators")} == {
        k: before[k] for k in ("name", "assigned_size", "allowed_initiators")
    }
    # In ZBS: each cluster's LUNs only in its own targets, each named with its own id.
    for c in (east, west):
        luns = c.our_luns()
        assert {lun["local_id"] for lun in luns} == _listed(c.ctrl)
        assert all(lun["name"].startswith(f"{c.cluster_id}.") for lun in luns)
    for c in (east, west):
        for vid in _listed(c.ctrl):
            c.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=120)
        assert c.our_luns() == []


# ---------------------------------------------------------------------------------- static volumes
def _zbs_lun(zl: ZbsLiteProcess, work: Path, target: str, lun: str, size: str, state: str = "present") -> dict:
    """Run the docs' recipe: a smartx.zbs.zbs_target and a smartx.zbs.zbs_lun task (ansible-playbook)."""
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {"smartx.zbs.zbs_target": {"name": target, "state": state}, "when": state == "present"},
                {"smartx.zbs.zbs_lun": {"target": target, "name": lun, "size": size, "state": state}, "register": "r"},
                {"ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(work / "lun.json")}},
            ],
        }
    ]
    if state == "absent":
        play[0]["tasks"].append({"smartx.zbs.zbs_target": {"name": target, "state": "absent"}})
    book = work / "static.yml"
    book.write_text(json.dumps(play))
    env = clean_env(zl.env)
    root = Path(__file__).resolve().parents[2]
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(root / ".cache" / "collections"))
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            *("-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(book)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads((work / "lun.json").read_text()).get("lun", {})


def test_static_volume_of_a_zbs_lun_made_lun(cluster: Cluster, tmp_path: Path) -> None:
    """A PV whose volumeHandle is a zbs_lun-made LUN's local_id: stage, write, expand, DeleteVolume keeps it."""
    target = f"static-{secrets.token_hex(3)}"
    lun = _zbs_lun(cluster.zl, tmp_path, target, "db", "1GiB")
    vid = lun["local_id"]
    ctl = cluster.ctrl.controller
    cap = mount_cap("xfs")
    a, b = Kubelet(cluster, NODE_A, tmp_path), Kubelet(cluster, NODE_B, tmp_path)
    try:
        mnt = a.attach(vid, cap, "static")
        want = write_data(mnt / "data.bin", 8 << 20)
        grown = ctl.ControllerExpandVolume(
            csi.ControllerExpandVolumeRequest(volume_id=vid, capacity_range=csi.CapacityRange(required_bytes=2 * GiB)),
            timeout=120,
        )
        assert grown.capacity_bytes == 2 * GiB and grown.node_expansion_required
        node = cluster.a.node.NodeExpandVolume(
            csi.NodeExpandVolumeRequest(
                volume_id=vid, volume_path=str(mnt), capacity_range=csi.CapacityRange(required_bytes=2 * GiB)
            ),
            timeout=300,
        )
        assert node.capacity_bytes == 2 * GiB
        stats = cluster.a.node.NodeGetVolumeStats(
            csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(mnt)), timeout=60
        )
        assert stats.usage[0].total > 1.5 * GiB and digest(mnt / "data.bin") == want
        assert vid not in _listed(cluster.ctrl), "static volumes are not this driver's to list"
        a.detach(vid, "static")
        # Kubernetes deletes the PV (reclaimPolicy Delete): the LUN was not the driver's to delete.
        ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=120)
        kept = cluster.client().luns.get(local_id=vid)
        assert kept is not None and kept["name"] == "db" and kept["assigned_size"] == 2 * GiB
        assert kept["iscsi_target"]["name"] == target
        # Imported again (a new PV on node B): the data is there.
        assert digest(b.attach(vid, cap, "static-again") / "data.bin") == want
        b.detach(vid, "static-again")
    finally:
        a.release_all()
        b.release_all()
        _zbs_lun(cluster.zl, tmp_path, target, "db", "1GiB", state="absent")
    assert host_leftovers([cluster.a.state_dir, cluster.b.state_dir], tmp_path) == []


# ---------------------------------------------------------------------------------- SmartX's StorageClass
def test_smartx_storage_class_verbatim_and_ext2_ext3(cluster: Cluster, tmp_path: Path) -> None:
    """SmartX's documented example StorageClass's parameters, as CreateVolumeRequest.parameters.

    (Their docs: "These parameters will be passed to CreateVolumeRequest.parameters map".)
    """
    smartx = {"csi.storage.k8s.io/fstype": "ext4", "replicaFactor": "1", "thinProvision": "true"}
    a = Kubelet(cluster, NODE_A, tmp_path)
    vid = _new_volume(cluster.ctrl, "pvc-smartx", **smartx)
    lun = cluster.client().luns.get(local_id=vid)
    assert lun is not None and (lun["replica_num"], lun["thin_provision"]) == (1, True)
    thick = _new_volume(cluster.ctrl, "pvc-smartx-thick", replicaFactor="1", thinProvision="false")
    assert cluster.client().luns.get(local_id=thick)["thin_provision"] is False  # type: ignore[index]
    conflict = csi.CreateVolumeRequest(
        name="pvc-two-spellings",
        volume_capabilities=[mount_cap()],
        parameters={"replicaFactor": "1", "replication.n": "2"},
    )
    err = _rpc_error(cluster.ctrl.controller.CreateVolume, conflict)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "replicaFactor" in (err.details() or "")
    # ext2 and ext3 (SmartX's driver offers them): formatted, mounted, written, and on a second
    # stage found and kept, never reformatted.
    try:
        for fs, name in (("ext4", "pvc-smartx"), ("ext3", "pvc-ext3"), ("ext2", "pvc-ext2")):
            volume = (
                vid
                if name == "pvc-smartx"
                else _new_volume(cluster.ctrl, name, **{**smartx, "csi.storage.k8s.io/fstype": fs})
            )
            mnt = a.attach(volume, mount_cap(fs), f"pod-{fs}")
            mounted = find_mount(str(mnt))
            assert mounted is not None and mounted.fs_type == fs
            want = write_data(mnt / "f", 1 << 20)
            a.detach(volume, f"pod-{fs}", controller=False)
            assert digest(a.attach(volume, mount_cap(fs), f"pod-{fs}") / "f") == want
            a.detach(volume, f"pod-{fs}")
            cluster.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume), timeout=120)
    finally:
        a.release_all()
    cluster.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=thick), timeout=120)
    assert cluster.our_luns() == []


# ---------------------------------------------------------------------------------- per-StorageClass CHAP
GOLD = {"node.session.auth.username": "gold-node", "node.session.auth.password": "GoldSecret12345"}
PLATINUM = {
    "node.session.auth.username": "plat-node",
    "node.session.auth.password": "PlatSecret12345",
    "node.session.auth.username_in": "plat-target",
    "node.session.auth.password_in": "TargetSecret99",
}
ALL_SECRETS = ("GoldSecret12345", "PlatSecret12345", "TargetSecret99", "WrongSecret1234", "WrongTarget123")


class ChapRig:
    """The sidecars and kubelet of one StorageClass's CHAP Secret, for block volumes on node A."""

    def __init__(self, cluster: Cluster, work: Path) -> None:
        self.ctl = cluster.ctrl.controller
        self.node = cluster.a.node
        self.work = work
        self.staged: set[str] = set()

    def create(self, name: str, sc_secret: dict[str, str]) -> str:
        req = csi.CreateVolumeRequest(
            name=name,
            capacity_range=csi.CapacityRange(required_bytes=GiB),
            volume_capabilities=[block_cap()],
            secrets=sc_secret,
        )
        return self.ctl.CreateVolume(req, timeout=300).volume.volume_id

    def publish_code(self, vid: str, sc_secret: dict[str, str], node: str = NODE_A) -> grpc.StatusCode:
        return code_of(self.ctl.ControllerPublishVolume, self._publish_req(vid, sc_secret, node))

    def publish(self, vid: str, sc_secret: dict[str, str]) -> Any:
        return self.ctl.ControllerPublishVolume(self._publish_req(vid, sc_secret, NODE_A), timeout=120).publish_context

    @staticmethod
    def _publish_req(vid: str, sc_secret: dict[str, str], node: str) -> csi.ControllerPublishVolumeRequest:
        return csi.ControllerPublishVolumeRequest(
            volume_id=vid, node_id=node, volume_capability=block_cap(), secrets=sc_secret
        )

    def stage(self, vid: str, ctx: Any, node_secret: dict[str, str]) -> grpc.StatusCode:
        self.staged.add(vid)
        req = csi.NodeStageVolumeRequest(
            volume_id=vid,
            staging_target_path=str(self.work / f"stage-{vid}"),
            publish_context=ctx,
            volume_capability=block_cap(),
            secrets=node_secret,
        )
        return code_of(self.node.NodeStageVolume, req, timeout=300)

    def unstage(self, vid: str) -> None:
        req = csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(self.work / f"stage-{vid}"))
        self.node.NodeUnstageVolume(req, timeout=300)
        self.staged.discard(vid)


def test_per_storage_class_chap_one_way_and_mutual(cluster: Cluster, tmp_path: Path) -> None:
    """Two StorageClasses with their own CHAP Secret (one-way, mutual) next to one without CHAP.

    The Secret is each StorageClass's provisioner, controller-publish and node-stage secret, as
    the zbs_csi role renders it. Real logins through zbs-lite decide every case.
    """
    rig, client = ChapRig(cluster, tmp_path), cluster.client()
    try:
        gold, plat, plain = rig.create("pvc-gold", GOLD), rig.create("pvc-plat", PLATINUM), rig.create("pvc-plain", {})
        targets = {v: client.luns.get(local_id=v)["iscsi_target"]["name"] for v in (gold, plat, plain)}  # type: ignore[index]
        assert len(set(targets.values())) == 3, "each CHAP class has targets of its own"
        chap_on = {v: client.targets.get(name=t)["chap_enabled"] for v, t in targets.items()}  # type: ignore[index]
        assert chap_on == {gold: True, plat: True, plain: False}

        # One-way: a wrong password and no credentials fail at the login; the right one stages.
        ctx = rig.publish(gold, GOLD)
        assert rig.stage(gold, ctx, {**GOLD, "node.session.auth.password": "WrongSecret1234"}) == UNAVAILABLE
        assert rig.stage(gold, ctx, {}) == UNAVAILABLE
        assert rig.stage(gold, ctx, GOLD) == OK
        rig.unstage(gold)

        # Mutual: the controller refuses target credentials the target does not have; the node
        # refuses a target that cannot prove the ones it was given (libiscsi checks CHAP_R).
        bad_target = {**PLATINUM, "node.session.auth.password_in": "WrongTarget123"}
        assert rig.publish_code(plat, bad_target) == PRECONDITION
        ctx = rig.publish(plat, PLATINUM)
        assert rig.stage(plat, ctx, bad_target) == UNAVAILABLE
        assert rig.stage(plat, ctx, {**PLATINUM, "node.session.auth.password": "WrongSecret1234"}) == UNAVAILABLE
        assert rig.stage(plat, ctx, PLATINUM) == OK
        rig.unstage(plat)

        # Credentials for a volume whose target has CHAP off would not be enforced: refused.
        assert rig.publish_code(plain, GOLD) == PRECONDITION
        assert rig.stage(plain, rig.publish(plain, {}), {}) == OK
        rig.unstage(plain)
        # The driver-wide default (CHAP off) needs nothing; a CHAP volume without its Secret is refused.
        assert rig.publish_code(gold, {}, NODE_B) == grpc.StatusCode.INVALID_ARGUMENT

        for vid in (gold, plat, plain):
            rig.ctl.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=vid), timeout=120)
            rig.ctl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=120)
    finally:
        for vid in list(rig.staged):
            rig.unstage(vid)
    assert host_leftovers([cluster.a.state_dir], tmp_path) == []
    for proc in (cluster.ctrl, cluster.a):
        text = proc.log_tail(10**8)
        leaked = [s for s in ALL_SECRETS if s in text]
        assert not leaked, f"{leaked} reached {proc.name}'s log"


# ---------------------------------------------------------------------------------- legacy volumes
def test_volumes_of_a_driver_without_cluster_ids(zbs_lite: ZbsLiteProcess, tmp_path: Path) -> None:
    """What the previous driver left (target <prefix>-0001, LUNs named lun_name_for(csi name)):
    with adopt_legacy, adopted on first touch by id or by CreateVolume's retry; without it, static."""
    prefix = f"e2e{secrets.token_hex(3)}"
    east = Cluster(tmp_path / "east", zbs_lite, prefix, cluster_id="east", ZBS_CSI_ADOPT_LEGACY="true")
    west = Cluster(tmp_path / "west", zbs_lite, prefix, cluster_id="west", ZBS_CSI_ADOPT_LEGACY="true")
    plain = Cluster(tmp_path / "plain", zbs_lite, prefix, cluster_id="plain")
    client = east.client()
    cluster_ref = client.clusters.default()["id"]
    legacy_target = client.targets.create(f"{prefix}-0001", cluster_ref, replica_num=1)
    old = {
        name: client.luns.create(lun_name_for(name), legacy_target["id"], GiB, replica_num=1, allowed_initiators="")
        for name in ("pvc-old-1", "pvc-old-2", "pvc-old-3")
    }
    for c in (east, west, plain):
        c.work.mkdir()
        c.ctrl.start()
    try:
        ids = {name: lun["local_id"] for name, lun in old.items()}
        # Not listed before it is touched: a list never adopts.
        assert _listed(east.ctrl) == set()
        # Touched by id (Kubernetes publishes its PV): adopted, renamed with east's id, listed.
        pub = east.ctrl.controller.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(
                volume_id=ids["pvc-old-1"], node_id=NODE_A, volume_capability=mount_cap()
            ),
            timeout=120,
        )
        assert pub.publish_context["targetIqn"].endswith(f":{prefix}-0001")
        assert client.luns.get(local_id=ids["pvc-old-1"])["name"] == "east." + lun_name_for("pvc-old-1")  # type: ignore[index]
        assert _listed(east.ctrl) == {ids["pvc-old-1"]}
        # A CreateVolume the old driver began, retried after the upgrade: the same volume, adopted.
        again = _new_volume(east.ctrl, "pvc-old-2")
        assert again == ids["pvc-old-2"] and _listed(east.ctrl) == {ids["pvc-old-1"], ids["pvc-old-2"]}
        # West, also adopting, is refused east's volumes and never lists them.
        err = _rpc_error(west.ctrl.controller.ControllerGetVolume, csi.ControllerGetVolumeRequest(volume_id=again))
        assert err.code() == PRECONDITION and "'east'" in (err.details() or "")
        assert _listed(west.ctrl) == set()
        # A driver that does not adopt treats a legacy LUN as static: usable, never deleted.
        plain.ctrl.controller.ControllerGetVolume(
            csi.ControllerGetVolumeRequest(volume_id=ids["pvc-old-3"]), timeout=60
        )
        plain.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=ids["pvc-old-3"]), timeout=60)
        assert client.luns.get(local_id=ids["pvc-old-3"])["name"] == lun_name_for("pvc-old-3")  # type: ignore[index]
        # Adopted volumes are east's own: DeleteVolume deletes them.
        for vid in (ids["pvc-old-1"], ids["pvc-old-2"]):
            east.ctrl.controller.ControllerUnpublishVolume(
                csi.ControllerUnpublishVolumeRequest(volume_id=vid), timeout=60
            )
            east.ctrl.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=60)
            assert client.luns.get(local_id=vid) is None
    finally:
        for c in (east, west, plain):
            c.ctrl.stop()
        for lun in client.luns.list({"iscsi_target": {"id": legacy_target["id"]}}):
            client.luns.delete(lun["id"])
        client.targets.delete(legacy_target["id"])
