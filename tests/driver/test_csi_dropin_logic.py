"""Drop-in for SmartX's driver, pure logic: StorageClass aliases, cluster-id names, CHAP secrets, tuning config.

What these rules do against a real zbs-lite (two clusters racing, static volumes, CHAP
logins) is in tests/e2e/test_csi_dropin.py; this file pins the names and rules themselves.
"""

from __future__ import annotations

import grpc
import pytest
from zbs_csi.chap import chap_from_secrets
from zbs_csi.config import ConfigError, load_config
from zbs_csi.errors import CsiError
from zbs_csi.ids import lun_name_for
from zbs_csi.node.connectors.kernel import SessionTuning
from zbs_csi.ownership import Naming, Owner, Ownership, chap_class, check_cluster_id
from zbs_csi.params import parse_volume_params

# SmartX's documented StorageClass (iomesh/docs docs/zbs-csi-driver/overview.md), its parameters verbatim.
SMARTX_EXAMPLE = {"csi.storage.k8s.io/fstype": "ext4", "replicaFactor": "1", "thinProvision": "true"}


def _refused(params: dict[str, str]) -> str:
    with pytest.raises(CsiError) as exc:
        parse_volume_params(params)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return exc.value.message


def test_smartx_storage_class_names_are_aliases() -> None:
    p = parse_volume_params(SMARTX_EXAMPLE)
    assert (p.fs_type, p.replica_num, p.thin_provision) == ("ext4", 1, True)
    thick = parse_volume_params({"replicaFactor": "3", "thinProvision": "false"})
    assert thick.lun_fields() == {"thin_provision": False}
    assert parse_volume_params({"replicaFactor": "3"}).replica_num == 3
    # Both spellings: fine when they agree (also "true" vs "TRUE"), an error naming both when not.
    assert parse_volume_params({"replicaFactor": "2", "replication.n": "2"}).replica_num == 2
    assert parse_volume_params({"thinProvision": "TRUE", "thinProvisioning": "true"}).thin_provision is True
    msg = _refused({"replicaFactor": "2", "replication.n": "3"})
    assert "replicaFactor" in msg and "replication.n" in msg
    msg = _refused({"thinProvision": "true", "thinProvisioning": "false"})
    assert "thinProvision" in msg and "thinProvisioning" in msg
    # The aliases take exactly the values the canonical names take.
    assert "replicaFactor" in _refused({"replicaFactor": "4"})
    assert "thinProvision" in _refused({"thinProvision": "perhaps"})


def test_smartx_filesystems() -> None:
    for fs in ("ext2", "ext3", "ext4", "xfs"):
        assert parse_volume_params({"csi.storage.k8s.io/fstype": fs}).fs_type == fs
    assert "btrfs" in _refused({"csi.storage.k8s.io/fstype": "btrfs"})


def test_cluster_ids() -> None:
    for good in ("a", "k8s-3f2a1b2c3d4e", "prod-east-1", "x" * 32):
        assert check_cluster_id(good) == good
    for bad in ("", "Prod", "-a", "a-", "a.b", "a_b", "x" * 33, "a b"):
        with pytest.raises(ValueError):
            check_cluster_id(bad)


def test_names_carry_the_cluster_id_and_cannot_collide() -> None:
    east, west = Naming("zbs-csi", "east"), Naming("zbs-csi", "west")
    assert east.target_name(1) == "zbs-csi-east.0001"
    assert east.target_name(12, chap_class("node", "")) == f"zbs-csi-east.{chap_class('node')}.0012"
    assert east.lun_name("pvc-1") == "east." + lun_name_for("pvc-1")
    assert east.trash_name("0f0e0d0c-0b0a-0908-0706-050403020100") == "east.trash.0f0e0d0c-0b0a-0908-0706-050403020100"
    assert east.parse_target("zbs-csi-east.0007").counter == 7  # type: ignore[union-attr]
    assert east.parse_target("zbs-csi-east.c0123abcd.0007").chap_class == "c0123abcd"  # type: ignore[union-attr]
    # A cluster whose id extends another's, or a legacy target, never parses as ours.
    for other in ("zbs-csi-east-1.0001", "zbs-csi-0001", "zbs-csi-west.0001", "zbs-csi-east.0001x", "app"):
        assert east.parse_target(other) is None
    assert Naming("zbs-csi", "east-1").parse_target("zbs-csi-east.0001") is None
    assert west.target_owner({"name": "zbs-csi-east.0001"}) == Ownership(Owner.OTHER, "east")
    assert west.target_owner({"name": "zbs-csi-0001"}) == Ownership(Owner.LEGACY)
    assert west.target_owner({"name": "app"}) == Ownership(Owner.FOREIGN)
    # Another prefix, found by the description every driver target carries.
    other_prefix = {"name": "team-east.0001", "description": Naming("team", "east").target_description}
    assert west.target_owner(other_prefix) == Ownership(Owner.OTHER, "east")


def _lun(name: str, target: str) -> dict[str, object]:
    return {"name": name, "iscsi_target": {"id": "t", "name": target}}


def test_who_owns_a_lun() -> None:
    n = Naming("zbs-csi", "east")
    vol = "0f0e0d0c-0b0a-0908-0706-050403020100"
    assert n.classify_lun(_lun(n.lun_name("pvc-1"), "zbs-csi-east.0001")) == Ownership(Owner.MINE)
    assert n.classify_lun(_lun(n.trash_name(vol), "zbs-csi-east.0001")) == Ownership(Owner.MINE, retired=True)
    # Put into our target by hand: not ours to delete.
    assert n.classify_lun(_lun("by-hand", "zbs-csi-east.0001")) == Ownership(Owner.FOREIGN)
    # Another cluster's, by target or (in a legacy target it adopted) by name.
    assert n.classify_lun(_lun("west.x", "zbs-csi-west.0001")) == Ownership(Owner.OTHER, "west")
    assert n.classify_lun(_lun("west.x", "zbs-csi-0001")) == Ownership(Owner.OTHER, "west")
    # Legacy, waiting for adoption; adoption renames (a retired one stays retired).
    assert n.classify_lun(_lun("pvc-1-abc", "zbs-csi-0001")) == Ownership(Owner.LEGACY)
    assert n.classify_lun(_lun(f"trash-{vol}", "zbs-csi-0001")) == Ownership(Owner.LEGACY, retired=True)
    assert n.adopted_name("pvc-1-abc") == "east.pvc-1-abc"
    assert n.adopted_name(f"trash-{vol}") == n.trash_name(vol)
    assert n.classify_lun(_lun(n.adopted_name("pvc-1-abc"), "zbs-csi-0001")) == Ownership(Owner.MINE)
    # An admin's LUN, whatever its name looks like: static, never another cluster's or ours.
    assert n.classify_lun(_lun("east.db", "app")) == Ownership(Owner.FOREIGN)
    assert n.classify_lun(_lun("west.db", "app")) == Ownership(Owner.FOREIGN)
    # A snapshot we took of a static volume lives in the admin's target and is ours.
    assert n.classify_snapshot(_lun(n.lun_name("snap-1"), "app")) == Ownership(Owner.MINE)
    assert n.classify_snapshot(_lun("nightly", "app")) == Ownership(Owner.FOREIGN)


def test_chap_classes_hold_no_secret() -> None:
    assert chap_class("node", "") != chap_class("node", "tgt") != chap_class("other", "")
    assert chap_class("node", "tgt") == chap_class("node", "tgt")
    assert len(chap_class("node")) == 9 and chap_class("node").startswith("c")


def test_chap_secrets_one_way_and_mutual() -> None:
    user = {"node.session.auth.username": "node-a", "node.session.auth.password": "GoodSecret12345"}
    one_way = chap_from_secrets(user)
    assert one_way is not None and not one_way.username_in
    mutual = chap_from_secrets(
        {**user, "node.session.auth.username_in": "tgt", "node.session.auth.password_in": "TargetSecret12"}
    )
    assert mutual is not None and (mutual.username_in, mutual.password_in) == ("tgt", "TargetSecret12")
    assert "TargetSecret12" not in repr(mutual) and "GoodSecret12345" not in repr(mutual)
    # Other keys of a kubernetes.io/iscsi-chap Secret are ignored.
    assert chap_from_secrets({**user, "discovery.sendtargets.auth.username": "d"}) == one_way
    for bad in (
        {**user, "node.session.auth.username_in": "tgt"},  # half a mutual pair
        {**user, "node.session.auth.username_in": "tgt", "node.session.auth.password_in": "x" * 17},  # ZBS: 12-16
        {**user, "node.session.auth.username_in": "t g", "node.session.auth.password_in": "TargetSecret12"},
        {"node.session.auth.username": "node a", "node.session.auth.password": "GoodSecret12345"},
    ):
        with pytest.raises(CsiError) as exc:
            chap_from_secrets(bad)
        assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "TargetSecret12" not in exc.value.message and "GoodSecret12345" not in exc.value.message


def test_config_needs_a_cluster_id_for_the_controller() -> None:
    with pytest.raises(ConfigError, match="kubernetes_cluster_id is required"):
        load_config(None, env={"ZBS_CSI_MODE": "controller"})
    with pytest.raises(ConfigError, match="lower-case"):
        load_config(None, env={"ZBS_CSI_MODE": "all", "ZBS_CSI_KUBERNETES_CLUSTER_ID": "Prod_1"})
    assert load_config(None, env={"ZBS_CSI_MODE": "node"}).kubernetes_cluster_id == ""
    cfg = load_config(None, env={"ZBS_CSI_KUBERNETES_CLUSTER_ID": "prod", "ZBS_CSI_ADOPT_LEGACY": "true"})
    assert (cfg.kubernetes_cluster_id, cfg.adopt_legacy) == ("prod", True)


def test_session_tuning_config() -> None:
    node = {"ZBS_CSI_MODE": "node"}
    cfg = load_config(None, env=node)
    assert (cfg.iscsi_queue_depth, cfg.iscsi_cmds_max, cfg.iscsi_replacement_timeout) == (128, 1024, 120)
    cfg = load_config(
        None,
        env={
            **node,
            "ZBS_CSI_ISCSI_QUEUE_DEPTH": "64",
            "ZBS_CSI_ISCSI_CMDS_MAX": "256",
            "ZBS_CSI_ISCSI_REPLACEMENT_TIMEOUT": "15",
        },
    )
    assert SessionTuning(cfg.iscsi_queue_depth, cfg.iscsi_cmds_max, cfg.iscsi_replacement_timeout).settings() == (
        ("node.session.queue_depth", "64"),
        ("node.session.cmds_max", "256"),
        ("node.session.timeo.replacement_timeout", "15"),
    )
    for key, value in (("QUEUE_DEPTH", "0"), ("CMDS_MAX", "1000"), ("CMDS_MAX", "4096"), ("REPLACEMENT_TIMEOUT", "0")):
        with pytest.raises(ConfigError, match=key.lower()):
            load_config(None, env={**node, f"ZBS_CSI_ISCSI_{key}": value})
