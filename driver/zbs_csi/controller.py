"""The CSI Controller service: volumes are LUNs packed into driver-owned targets.

Ids: volume id = the LUN's ``local_id``, snapshot id = the snapshot's ``local_id`` (as in
SmartX's own driver), so an operator finds a PV's LUN in the ZBS UI by its id. Names map to
LUN/snapshot names deterministically (:meth:`Naming.lun_name`), which makes CreateVolume and
CreateSnapshot idempotent across retries, restarts and racing controller replicas.

Every lookup by id goes through :meth:`ControllerService._resolve`, which applies
ownership.py: another Kubernetes cluster's LUN is refused (FAILED_PRECONDITION, naming the
cluster), a LUN no zbs-csi made is a static volume (published, staged, expanded, never
deleted), and a legacy LUN is adopted or treated as static.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from . import caps as capmod
from .chap import PASSWORD_IN_KEY, PASSWORD_KEY, USER_IN_KEY, USER_KEY, Chap, chap_from_secrets
from .config import Config
from .errors import (
    CsiError,
    already_exists,
    exhausted,
    invalid,
    not_found,
    out_of_range,
    precondition,
)
from .ids import is_iqn, is_uuid, lun_name_for
from .listing import Item, Listing, page_limit, take
from .locks import KeyedLocks
from .ownership import Naming, Owner, Ownership
from .params import VolumeParams, k8s_objects, parse_mutable_params, parse_snapshot_params, parse_volume_params
from .proto import csi_pb2 as csi
from .targets import TargetClass, TargetPool, target_full
from .zbs import (
    DEFAULT_STRIPE_NUM,
    DEFAULT_STRIPE_SIZE,
    MAX_LUN_SIZE,
    ZbsClient,
    format_allowed_initiators,
    format_size,
    map_error,
    parse_allowed_initiators,
    round_up,
    target_iqn,
    zerr,
)

log = logging.getLogger(__name__)

GRANULE = 4096


def choose_size(required: int, limit: int, granularity: int) -> int:
    """The LUN size for a capacity range: rounded up to the granularity, within the limit."""
    if required < 0 or limit < 0:
        raise invalid("capacity_range bytes must not be negative")
    if limit and required > limit:
        raise invalid(f"required_bytes {required} is above limit_bytes {limit}")
    base = required or (granularity if not limit else min(granularity, limit))
    size = round_up(base, granularity)
    if limit and size > limit:
        size = round_up(base, GRANULE)
        if size > limit:
            raise out_of_range(f"no size that is a multiple of {GRANULE} fits within {required}..{limit} bytes")
    if size > MAX_LUN_SIZE:
        raise out_of_range(f"{size} bytes is above the {format_size(MAX_LUN_SIZE)} LUN maximum")
    return size


def _timestamp(text: str | None) -> Timestamp:
    ts = Timestamp()
    if text:
        try:
            ts.FromJsonString(text if text.endswith("Z") or "+" in text[10:] else text + "Z")
            return ts
        except ValueError:
            pass
    ts.GetCurrentTime()
    return ts


class ControllerService:
    def __init__(self, cfg: Config, client: ZbsClient) -> None:
        self.cfg = cfg
        self.client = client
        self.naming = Naming(cfg.target_prefix, cfg.kubernetes_cluster_id)
        self.pool = TargetPool(client, cfg, self.naming)
        self.listing = Listing(client, self.naming, adopt_legacy=cfg.adopt_legacy, luns_per_target=cfg.luns_per_target)
        self.locks = KeyedLocks()
        self._portal: str | None = None
        # readonly of each (volume, node) publish this process made: ZBS keeps no such flag,
        # so after a restart a repeated publish is taken as compatible.
        self._readonly: dict[tuple[str, str], bool] = {}
        self.locks_chap = threading.Lock()

    # ---------------------------------------------------------------- helpers
    def _zbs(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except zerr.ZbsError as exc:
            raise map_error(exc, doing) from exc

    def _resolve(self, volume_id: str, doing: str) -> tuple[dict[str, Any], Owner] | None:
        """The LUN a volume id names and whose it is (MINE or FOREIGN); None when there is none.

        Another cluster's LUN is refused, whatever the operation; a legacy LUN is adopted
        (``adopt_legacy``) or static; a retired LUN (deleted, snapshots kept) is gone.
        """
        if not is_uuid(volume_id):
            return None
        lun = self._zbs(f"looking up volume {volume_id}", self.client.luns.get, local_id=volume_id)
        if lun is None:
            return None
        own = self.naming.classify_lun(lun)
        if own.owner is Owner.LEGACY and self.cfg.adopt_legacy:
            lun, own = self._adopt(lun)
        self._refuse_other(own, lun, f"volume {volume_id}", doing)
        if own.retired:
            return None
        return lun, (Owner.FOREIGN if own.owner is Owner.LEGACY else own.owner)

    def _lun(self, volume_id: str, doing: str) -> dict[str, Any] | None:
        found = self._resolve(volume_id, doing)
        return found[0] if found else None

    def _refuse_other(self, own: Ownership, obj: dict[str, Any], what: str, doing: str) -> None:
        if own.owner is Owner.OTHER:
            raise precondition(
                f"{what} belongs to Kubernetes cluster {own.cluster_id!r} ({obj.get('name', '')!r} in target "
                f"{(obj.get('iscsi_target') or {}).get('name', '')!r}), not to this driver's cluster "
                f"{self.naming.cluster_id!r}: refusing to {doing}"
            )

    def _adopt(self, lun: dict[str, Any]) -> tuple[dict[str, Any], Ownership]:
        """Claim a legacy LUN for this cluster: its name takes our id (one rename, idempotent)."""
        new_name = self.naming.adopted_name(str(lun.get("name", "")))
        self._zbs(f"adopting legacy volume {lun['local_id']}", self.client.luns.update, lun["id"], name=new_name)
        lun = self._zbs(f"re-reading volume {lun['local_id']}", self.client.luns.get, id=lun["id"]) or lun
        log.info("adopted a legacy volume", extra={"fields": {"volume_id": lun["local_id"], "lun": new_name}})
        # Re-classified from what ZBS now says: a cluster that adopted it at the same moment wins.
        return lun, self.naming.classify_lun(lun)

    def _snapshot(self, snapshot_id: str, doing: str) -> dict[str, Any] | None:
        """Our snapshot with this id; None when there is none or it is not ours (never another's)."""
        if not is_uuid(snapshot_id):
            return None
        snap = self._zbs(f"looking up snapshot {snapshot_id}", self.client.snapshots.get, local_id=snapshot_id)
        if snap is None:
            return None
        own = self.naming.classify_snapshot(snap)
        self._refuse_other(own, snap, f"snapshot {snapshot_id}", doing)
        if own.owner is Owner.MINE or (own.owner is Owner.LEGACY and self._legacy_snapshot_ours(snap)):
            return snap
        return None

    def _legacy_snapshot_ours(self, snap: dict[str, Any]) -> bool:
        """A legacy snapshot is ours when its volume is (adopting that volume on the way)."""
        if not self.cfg.adopt_legacy:
            return False
        lun_ref = (snap.get("iscsi_lun") or {}).get("id", "")
        lun = self._zbs("reading a snapshot's volume", self.client.luns.get, id=lun_ref) if lun_ref else None
        if lun is None:
            return False
        own = self.naming.classify_lun(lun)
        if own.owner is Owner.LEGACY:
            lun, own = self._adopt(lun)
        self._refuse_other(own, lun, f"the volume of snapshot {snap.get('local_id')}", "use its snapshot")
        return own.owner is Owner.MINE

    def portal(self) -> str:
        if self._portal is None:
            if self.cfg.portal:
                self._portal = self.cfg.portal
            else:
                cluster = self._zbs("reading the cluster", self.client.clusters.get, id=self.pool.zbs_cluster_id())
                vip = (cluster or {}).get("iscsi_vip")
                if not vip:
                    raise precondition("no iSCSI portal: set ZBS_ISCSI_PORTAL or the cluster's iscsi_vip")
                self._portal = vip if ":" in vip else f"{vip}:3260"
        return self._portal

    def _volume(self, lun: dict[str, Any], source: csi.VolumeContentSource | None = None, fsck: str = "") -> csi.Volume:
        ctx = {
            "lunName": lun.get("name", ""),
            "targetName": (lun.get("iscsi_target") or {}).get("name", ""),
        }
        if fsck:
            ctx["fsck"] = fsck
        vol = csi.Volume(
            capacity_bytes=int(lun.get("assigned_size") or 0), volume_id=lun["local_id"], volume_context=ctx
        )
        if source is not None:
            vol.content_source.CopyFrom(source)
        return vol

    @staticmethod
    def _published(lun: dict[str, Any]) -> list[str]:
        allowed = parse_allowed_initiators(lun.get("allowed_initiators"))
        return sorted(allowed.iqns) if allowed.kind == "set" else []

    # ---------------------------------------------------------------- capabilities
    def get_capabilities(self) -> csi.ControllerGetCapabilitiesResponse:
        rpc = csi.ControllerServiceCapability.RPC
        types = [
            rpc.CREATE_DELETE_VOLUME,
            rpc.PUBLISH_UNPUBLISH_VOLUME,
            rpc.LIST_VOLUMES,
            rpc.GET_CAPACITY,
            rpc.CREATE_DELETE_SNAPSHOT,
            rpc.LIST_SNAPSHOTS,
            rpc.CLONE_VOLUME,
            rpc.PUBLISH_READONLY,
            rpc.EXPAND_VOLUME,
            rpc.LIST_VOLUMES_PUBLISHED_NODES,
            rpc.VOLUME_CONDITION,
            rpc.GET_VOLUME,
            rpc.SINGLE_NODE_MULTI_WRITER,
            rpc.MODIFY_VOLUME,
        ]
        if self.cfg.advertise_get_snapshot:
            types.append(rpc.GET_SNAPSHOT)
        return csi.ControllerGetCapabilitiesResponse(
            capabilities=[csi.ControllerServiceCapability(rpc=rpc(type=t)) for t in types]
        )

    # ---------------------------------------------------------------- volumes
    def create_volume(self, req: csi.CreateVolumeRequest) -> csi.CreateVolumeResponse:
        if not req.name:
            raise invalid("name is required")
        capmod.check_all(list(req.volume_capabilities))
        params = parse_volume_params(dict(req.parameters))
        if req.mutable_parameters:
            mutable = parse_mutable_params(dict(req.mutable_parameters))
            params = type(params)(**{**params.__dict__, **mutable})
        required = req.capacity_range.required_bytes if req.HasField("capacity_range") else 0
        limit = req.capacity_range.limit_bytes if req.HasField("capacity_range") else 0
        size = choose_size(required, limit, self.cfg.size_granularity)
        # The provisioner secret, when the StorageClass names its CHAP Secret as one, puts the
        # volume in targets of that CHAP class (chap.py).
        klass = TargetClass(
            (params.stripe_num or DEFAULT_STRIPE_NUM, params.stripe_size or DEFAULT_STRIPE_SIZE),
            chap_from_secrets(dict(req.secrets)),
        )
        lun_name = self.naming.lun_name(req.name)
        source = req.volume_content_source if req.HasField("volume_content_source") else None
        with self.locks.hold(f"name:{lun_name}"):
            existing = self._find_by_name(req.name)
            if existing is not None:
                vol = self._check_compatible(existing, required, limit, source)
                if params.fsck:
                    vol.volume_context["fsck"] = params.fsck
                return csi.CreateVolumeResponse(volume=vol)
            lun = self._create(req.name, size, params, klass, source, required, limit)
            lun = self._settle_race(req.name, lun)
            log.info(
                "created volume",
                extra={"fields": {"volume_id": lun["local_id"], "name": req.name, **k8s_objects(dict(req.parameters))}},
            )
            return csi.CreateVolumeResponse(volume=self._volume(lun, source, params.fsck))

    def _find_by_name(self, csi_name: str) -> dict[str, Any] | None:
        """This cluster's LUN for a CSI volume name (a legacy one is adopted when allowed)."""
        lun_name = self.naming.lun_name(csi_name)
        luns = self._zbs(f"looking up volume {lun_name}", self.client.luns.list, {"name": lun_name})
        luns = [lun for lun in luns if self.naming.classify_lun(lun) == Ownership(Owner.MINE)]
        if not luns and self.cfg.adopt_legacy:
            # A create the previous driver began and Kubernetes retries after the upgrade.
            legacy = self._zbs(
                f"looking up legacy volume {csi_name[:80]!r}",
                self.client.luns.list,
                {"name": lun_name_for(csi_name), "iscsi_target": {"name_starts_with": f"{self.naming.prefix}-"}},
            )
            for lun in legacy:
                if self.naming.classify_lun(lun).owner is Owner.LEGACY:
                    adopted, own = self._adopt(lun)
                    if own == Ownership(Owner.MINE):
                        luns.append(adopted)
        if not luns:
            return None
        return sorted(luns, key=lambda lun: (str(lun.get("local_created_at") or ""), lun["id"]))[0]

    def _settle_race(self, csi_name: str, mine: dict[str, Any]) -> dict[str, Any]:
        """Two replicas may each have made a LUN of one name in different targets: the oldest wins."""
        winner = self._find_by_name(csi_name) or mine
        if winner["id"] != mine["id"]:
            log.warning("lost a create race; removing our duplicate", extra={"fields": {"lun": mine["id"]}})
            self._zbs("removing a duplicate LUN", self.client.luns.delete, mine["id"])
            self.pool.forget((mine.get("iscsi_target") or {}).get("id", ""))
        return winner

    def _check_compatible(
        self, lun: dict[str, Any], required: int, limit: int, source: csi.VolumeContentSource | None
    ) -> csi.Volume:
        size = int(lun.get("assigned_size") or 0)
        if size < required or (limit and size > limit):
            raise already_exists(
                f"a volume of this name exists with {size} bytes, outside {required}..{limit or 'any'}"
            )
        return self._volume(lun, source)

    def _create(
        self,
        csi_name: str,
        size: int,
        params: VolumeParams,
        klass: TargetClass,
        source: csi.VolumeContentSource | None,
        required: int,
        limit: int,
    ) -> dict[str, Any]:
        lun_name = self.naming.lun_name(csi_name)
        src_kind, src_obj = "", None
        if source is not None:
            if source.HasField("snapshot"):
                src_kind = "snapshot"
                src_obj = self._snapshot(source.snapshot.snapshot_id, "restore from it")
                if src_obj is None:
                    raise not_found(f"snapshot {source.snapshot.snapshot_id[:80]!r} does not exist")
            elif source.HasField("volume"):
                src_kind = "volume"
                # A static volume may be cloned too: the copy is ours, in our targets.
                src_obj = self._lun(source.volume.volume_id, "clone it")
                if src_obj is None:
                    raise not_found(f"volume {source.volume.volume_id[:80]!r} does not exist")
            else:
                raise invalid("volume_content_source names neither a snapshot nor a volume")
        tried: set[str] = set()
        for _ in range(4):
            slot = self.pool.reserve(klass, tried)
            made = False
            try:
                if src_kind == "snapshot":
                    assert src_obj is not None
                    lun = self.client.luns.clone_from_snapshot(src_obj["id"], slot.id, lun_name)
                elif src_kind == "volume":
                    assert src_obj is not None
                    lun = self.client.luns.copy(src_obj["id"], lun_name, slot.id)
                else:
                    fields = params.lun_fields()
                    lun = self.client.luns.create(
                        lun_name,
                        slot.id,
                        size,
                        replica_num=params.replica_num or self.cfg.default_replica_num,
                        allowed_initiators="",
                        **fields,
                    )
                made = True
            except zerr.ZbsValidationError as exc:
                raise invalid(f"creating volume {lun_name}: {exc}") from exc
            except zerr.ZbsNotFound as exc:
                self.pool.invalidate()  # the target may be gone (retired when empty): the retry places afresh
                raise not_found(f"creating volume {lun_name}: {exc}") from exc
            except (zerr.ZbsApiError, zerr.ZbsTaskFailed) as exc:
                # The name may exist (a racing replica) or the target may be full.
                existing = self._find_by_name(csi_name)
                if existing is not None:
                    return existing
                if isinstance(exc, zerr.ZbsApiError) and exc.status >= 500:
                    raise map_error(exc, f"creating volume {lun_name}") from exc
                if not target_full(exc):
                    raise CsiError(
                        grpc.StatusCode.INVALID_ARGUMENT
                        if isinstance(exc, zerr.ZbsApiError) and exc.status == 400
                        else grpc.StatusCode.INTERNAL,
                        f"creating volume {lun_name}: {exc}",
                    ) from exc
                log.warning("target refused a LUN, trying another: %s", exc)
                self.pool.mark_full(slot.id)
                tried.add(slot.id)
                continue
            except zerr.ZbsError as exc:
                raise map_error(exc, f"creating volume {lun_name}") from exc
            finally:
                self.pool.release(slot.id, made)
            if src_kind:
                lun = self._fit_clone(lun, size, required, limit)
            return lun
        raise precondition(f"no driver target would take volume {lun_name}")

    def _fit_clone(self, lun: dict[str, Any], size: int, required: int, limit: int) -> dict[str, Any]:
        have = int(lun.get("assigned_size") or 0)
        if limit and have > limit:
            self._zbs("removing a clone that is too big", self.client.luns.delete, lun["id"])
            raise out_of_range(f"the source is {have} bytes, above limit_bytes {limit}")
        if required > have:
            lun = self._zbs("growing the clone", self.client.luns.update, lun["id"], assigned_size=size)
        return lun

    def delete_volume(self, req: csi.DeleteVolumeRequest) -> csi.DeleteVolumeResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        with self.locks.hold(req.volume_id):
            found = self._resolve(req.volume_id, "delete it")
            if found is None:
                return csi.DeleteVolumeResponse()
            lun, owner = found
            if owner is Owner.FOREIGN:
                # A static volume (Retain-style import): Kubernetes forgets it, ZBS keeps it.
                target = (lun.get("iscsi_target") or {}).get("name")
                log.info(
                    "not deleting a LUN this driver did not create (static volume)",
                    extra={"fields": {"lun": lun.get("name", ""), "target": target}},
                )
                return csi.DeleteVolumeResponse()
            snaps = self._zbs("listing snapshots", self.client.snapshots.list, {"iscsi_lun": {"id": lun["id"]}})
            if snaps:
                # ZBS snapshots belong to their LUN, CSI snapshots outlive their volume: keep the
                # LUN, fenced and out of sight, until DeleteSnapshot removes its last snapshot.
                self._zbs(
                    f"retiring volume {req.volume_id} (it has snapshots)",
                    self.client.luns.update,
                    lun["id"],
                    name=self.naming.trash_name(lun["local_id"]),
                    allowed_initiators="",
                )
                log.info("volume retired until its %d snapshot(s) are deleted", len(snaps))
                return csi.DeleteVolumeResponse()
            self._zbs(f"deleting volume {req.volume_id}", self.client.luns.delete, lun["id"])
            self.pool.forget((lun.get("iscsi_target") or {}).get("id", ""))
            self.pool.retire_if_empty(lun.get("iscsi_target") or {})
            log.info("deleted volume")
        return csi.DeleteVolumeResponse()

    def publish(self, req: csi.ControllerPublishVolumeRequest) -> csi.ControllerPublishVolumeResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        if not req.node_id:
            raise invalid("node_id is required")
        if not req.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        cap = capmod.parse(req.volume_capability, self.cfg.default_fstype)
        chap = chap_from_secrets(dict(req.secrets))
        with self.locks.hold(req.volume_id):
            lun = self._lun(req.volume_id, f"publish it to {req.node_id[:80]}")
            if lun is None:
                raise not_found(f"volume {req.volume_id[:80]!r} does not exist")
            if not is_iqn(req.node_id):
                raise not_found(f"node {req.node_id[:80]!r} does not exist (node ids are initiator IQNs)")
            target_id = (lun.get("iscsi_target") or {}).get("id", "")
            target = self._zbs("reading the volume's target", self.client.targets.get, id=target_id)
            if target is None:
                raise not_found(f"the target of volume {req.volume_id} is gone")
            self._check_chap(target, req.node_id, chap, lun)
            allowed = parse_allowed_initiators(lun.get("allowed_initiators"))
            key = (req.volume_id, req.node_id)
            if allowed.kind == "set" and req.node_id in allowed.iqns:
                if self._readonly.get(key, req.readonly) != req.readonly:
                    raise already_exists(
                        f"volume {req.volume_id} is already published to {req.node_id} with readonly="
                        f"{self._readonly[key]}"
                    )
            else:
                others = sorted(allowed.iqns) if allowed.kind == "set" else []
                if others and not cap.multi_node:
                    raise precondition(f"volume {req.volume_id} is published to {others[0]} and is single-node")
                self._check_attach_limit(req.node_id)
                self._zbs(
                    f"publishing volume {req.volume_id} to {req.node_id}",
                    self.client.luns.update,
                    lun["id"],
                    allowed_initiators=format_allowed_initiators(
                        allowed.with_added(req.node_id) if allowed.kind != "all" else [req.node_id]
                    ),
                )
                log.info("published", extra={"fields": {"node": req.node_id}})
            self._readonly[key] = req.readonly
            iqn = target.get("iqn_name") or target_iqn(target["name"])
            context = {"portal": self.portal(), "targetIqn": iqn, "lun": str(lun["lun_id"])}
            if self.cfg.data_portals:
                context["portals"] = ",".join(self.cfg.data_portal_list)
            return csi.ControllerPublishVolumeResponse(publish_context=context)

    def _check_attach_limit(self, node_id: str) -> None:
        """RESOURCE_EXHAUSTED when the node already has ``max_volumes_per_node`` volumes published.

        Every LUN published to the node counts, static ones too: the limit is the node's. The
        count answers first (no rows move; an IQN that is a prefix of another only adds to it):
        the LUNs themselves are read only when the node may be at its limit.
        """
        where = {"allowed_initiators_contains": node_id}
        count = self._zbs(f"counting the volumes of {node_id}", self.client.luns.count, where)
        if count < self.cfg.max_volumes_per_node:
            return
        published = self._zbs(
            f"counting the volumes of {node_id}",
            self.client.luns.list,
            where,
        )
        mine = [lun for lun in published if node_id in self._published(lun)]
        if len(mine) >= self.cfg.max_volumes_per_node:
            raise exhausted(f"node {node_id} already has {len(mine)} volumes published (max_volumes_per_node)")

    def _check_chap(self, target: dict[str, Any], node_id: str, chap: Chap | None, lun: dict[str, Any]) -> None:
        """The publish's CHAP secrets against the target's CHAP; the node's credentials registered.

        Refused: no credentials for a CHAP target the node has none on; credentials for a target
        with CHAP off (they would silently not be enforced); mutual credentials the target does
        not answer with. The messages name keys and targets, never a secret.
        """
        name = target.get("name", "")
        if chap is None:
            known = any(e.get("initiator_iqn") == node_id for e in target.get("initiator_chaps") or [])
            if target.get("chap_enabled") and not known:
                raise invalid(
                    f"target {name} requires CHAP: the controller-publish secrets must carry the node's CHAP "
                    f"credentials ({USER_KEY}, {PASSWORD_KEY})"
                )
            return
        if not target.get("chap_enabled"):
            raise precondition(
                f"the secrets carry CHAP credentials but target {name} of volume {lun['local_id']} has CHAP off, "
                "so they would not be enforced: give the StorageClass the same Secret as its provisioner secret "
                "(csi.storage.k8s.io/provisioner-secret-name/-namespace), so its volumes are made in CHAP targets"
            )
        if chap.username_in and (
            target.get("chap_name") != chap.username_in or target.get("chap_secret") != chap.password_in
        ):
            raise precondition(
                f"target {name} answers mutual CHAP with other credentials than the secrets' {USER_IN_KEY} and "
                f"{PASSWORD_IN_KEY}: volumes with mutual CHAP must be created with that Secret as provisioner secret"
            )
        self._register_chap(target, node_id, chap, lun)

    def _register_chap(self, target: dict[str, Any], node_id: str, chap: Chap, lun: dict[str, Any]) -> None:
        """Make ``chap`` the node's credentials on the target (targets are shared, so upsert).

        ZBS keeps one entry per initiator and target: replacing it while another of the node's
        volumes uses that target would break that volume's next login, so that is refused.
        """
        with self.locks_chap:
            target = self._zbs("reading the target", self.client.targets.get, id=target["id"]) or target
            entries = [dict(e) for e in target.get("initiator_chaps") or []]
            current = [e for e in entries if e.get("initiator_iqn") == node_id]
            if current and all(
                (e.get("chap_name"), e.get("chap_secret")) == (chap.username, chap.password) for e in current
            ):
                return
            if current:
                users = self._zbs(
                    "listing the target's volumes",
                    self.client.luns.list,
                    {"iscsi_target": {"id": target["id"]}, "allowed_initiators_contains": node_id},
                )
                busy = [u for u in users if u["id"] != lun["id"] and node_id in self._published(u)]
                if busy:
                    raise precondition(
                        f"node {node_id} logs in to target {target.get('name', '')} with other CHAP credentials, "
                        f"for volume {busy[0].get('local_id')}: volumes sharing a target must share one CHAP Secret "
                        "(to change it, move the node's volumes off first)"
                    )
            mine = {"initiator_iqn": node_id, "chap_name": chap.username, "chap_secret": chap.password}
            entries = [e for e in entries if e.get("initiator_iqn") != node_id] + [mine]
            self._zbs(
                f"registering CHAP for {node_id}", self.client.targets.update, target["id"], initiator_chaps=entries
            )

    def unpublish(self, req: csi.ControllerUnpublishVolumeRequest) -> csi.ControllerUnpublishVolumeResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        with self.locks.hold(req.volume_id):
            lun = self._lun(req.volume_id, f"unpublish it from {req.node_id[:80] or 'every node'}")
            if lun is None:
                return csi.ControllerUnpublishVolumeResponse()
            allowed = parse_allowed_initiators(lun.get("allowed_initiators"))
            if req.node_id:
                if allowed.kind == "set" and req.node_id in allowed.iqns:
                    new = format_allowed_initiators(allowed.without(req.node_id))
                else:
                    return csi.ControllerUnpublishVolumeResponse()
            else:
                new = ""
                if allowed.kind == "none":
                    return csi.ControllerUnpublishVolumeResponse()
            self._zbs(
                f"unpublishing volume {req.volume_id} from {req.node_id or 'every node'}",
                self.client.luns.update,
                lun["id"],
                allowed_initiators=new,
            )
            for key in [
                k for k in self._readonly if k[0] == req.volume_id and (not req.node_id or k[1] == req.node_id)
            ]:
                self._readonly.pop(key, None)
            log.info("unpublished (fenced)", extra={"fields": {"node": req.node_id or "*"}})
        return csi.ControllerUnpublishVolumeResponse()

    def validate(self, req: csi.ValidateVolumeCapabilitiesRequest) -> csi.ValidateVolumeCapabilitiesResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        if not req.volume_capabilities:
            raise invalid("volume_capabilities is required")
        if self._lun(req.volume_id, "validate it") is None:
            raise not_found(f"volume {req.volume_id[:80]!r} does not exist")
        try:
            parse_volume_params(dict(req.parameters))
        except CsiError as exc:
            return csi.ValidateVolumeCapabilitiesResponse(message=exc.message)
        for cap in req.volume_capabilities:
            reason = capmod.unsupported_reason(cap)
            if reason:
                return csi.ValidateVolumeCapabilitiesResponse(message=reason)
        return csi.ValidateVolumeCapabilitiesResponse(
            confirmed=csi.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=dict(req.volume_context),
                volume_capabilities=list(req.volume_capabilities),
                parameters=dict(req.parameters),
                mutable_parameters=dict(req.mutable_parameters),
            )
        )

    @staticmethod
    def _condition(lun: dict[str, Any]) -> csi.VolumeCondition:
        status = lun.get("entityAsyncStatus")
        if status:
            return csi.VolumeCondition(abnormal=True, message=f"the LUN is {str(status).lower()}")
        return csi.VolumeCondition(abnormal=False, message="healthy")

    def list_volumes(self, req: csi.ListVolumesRequest) -> csi.ListVolumesResponse:
        limit = page_limit(req.max_entries)
        entries, token = take(self.listing.volumes(req.starting_token, limit), limit, self._volume_entry)
        return csi.ListVolumesResponse(entries=entries, next_token=token)

    def _volume_entry(self, item: Item) -> csi.ListVolumesResponse.Entry:
        lun = item.obj or {}
        return csi.ListVolumesResponse.Entry(
            volume=self._volume(lun),
            status=csi.ListVolumesResponse.VolumeStatus(
                published_node_ids=self._published(lun), volume_condition=self._condition(lun)
            ),
        )

    def get_volume(self, req: csi.ControllerGetVolumeRequest) -> csi.ControllerGetVolumeResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        lun = self._lun(req.volume_id, "read it")
        if lun is None:
            raise not_found(f"volume {req.volume_id[:80]!r} does not exist")
        return csi.ControllerGetVolumeResponse(
            volume=self._volume(lun),
            status=csi.ControllerGetVolumeResponse.VolumeStatus(
                published_node_ids=self._published(lun), volume_condition=self._condition(lun)
            ),
        )

    def get_capacity(self, req: csi.GetCapacityRequest) -> csi.GetCapacityResponse:
        for cap in req.volume_capabilities:
            if capmod.unsupported_reason(cap):
                return csi.GetCapacityResponse(available_capacity=0)
        parse_volume_params(dict(req.parameters))
        cluster = self._zbs("reading the cluster", self.client.clusters.get, id=self.pool.zbs_cluster_id()) or {}
        total = int(cluster.get("total_data_capacity") or 0)
        used = int(cluster.get("used_data_space") or 0)
        replicas = parse_volume_params(dict(req.parameters)).replica_num or self.cfg.default_replica_num
        available = max(0, total - used) // max(1, replicas)
        resp = csi.GetCapacityResponse(available_capacity=available)
        resp.maximum_volume_size.value = min(MAX_LUN_SIZE, available) if available else MAX_LUN_SIZE
        return resp

    def expand(self, req: csi.ControllerExpandVolumeRequest) -> csi.ControllerExpandVolumeResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        if not req.HasField("capacity_range"):
            raise invalid("capacity_range is required")
        required, limit = req.capacity_range.required_bytes, req.capacity_range.limit_bytes
        size = choose_size(required, limit, self.cfg.size_granularity)
        with self.locks.hold(req.volume_id):
            lun = self._lun(req.volume_id, "expand it")
            if lun is None:
                raise not_found(f"volume {req.volume_id[:80]!r} does not exist")
            have = int(lun.get("assigned_size") or 0)
            if have < required:
                lun = self._zbs(
                    f"expanding volume {req.volume_id}", self.client.luns.update, lun["id"], assigned_size=size
                )
                have = int(lun.get("assigned_size") or size)
                log.info("expanded volume", extra={"fields": {"bytes": have}})
        return csi.ControllerExpandVolumeResponse(capacity_bytes=have, node_expansion_required=True)

    def modify(self, req: csi.ControllerModifyVolumeRequest) -> csi.ControllerModifyVolumeResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        changes = parse_mutable_params(dict(req.mutable_parameters))
        with self.locks.hold(req.volume_id):
            lun = self._lun(req.volume_id, "modify it")
            if lun is None:
                raise not_found(f"volume {req.volume_id[:80]!r} does not exist")
            if changes:
                self._zbs(f"modifying volume {req.volume_id}", self.client.luns.update, lun["id"], **changes)
                log.info("modified volume", extra={"fields": {**changes, **k8s_objects(dict(req.mutable_parameters))}})
        return csi.ControllerModifyVolumeResponse()

    # ---------------------------------------------------------------- snapshots
    def _snapshot_msg(self, snap: dict[str, Any], size: int | None = None) -> csi.Snapshot:
        lun_ref = snap.get("iscsi_lun") or {}
        source_local = lun_ref.get("local_id", "")
        if size is None or not source_local:
            src = (
                self._zbs("reading a snapshot's volume", self.client.luns.get, id=lun_ref["id"])
                if lun_ref.get("id")
                else None
            )
            source_local = (src or {}).get("local_id", source_local)
            size = int((src or {}).get("assigned_size") or 0) if size is None else size
        return csi.Snapshot(
            size_bytes=int(snap.get("size") or size or 0),
            snapshot_id=snap["local_id"],
            source_volume_id=source_local,
            creation_time=_timestamp(snap.get("local_created_at")),
            ready_to_use=not snap.get("entityAsyncStatus"),
        )

    def create_snapshot(self, req: csi.CreateSnapshotRequest) -> csi.CreateSnapshotResponse:
        if not req.name:
            raise invalid("name is required")
        if not req.source_volume_id:
            raise invalid("source_volume_id is required")
        parse_snapshot_params(dict(req.parameters))
        snap_name = self.naming.lun_name(req.name)
        with self.locks.hold(f"snap:{snap_name}"):
            existing = self._find_snapshot_by_name(req.name)
            # A static volume may be snapshotted too: the snapshot is ours (named with our id).
            lun = self._lun(req.source_volume_id, "snapshot it")
            if existing is not None:
                if lun is None or (existing.get("iscsi_lun") or {}).get("id") != lun["id"]:
                    raise already_exists(f"snapshot {req.name[:80]!r} exists for another volume")
                return csi.CreateSnapshotResponse(
                    snapshot=self._snapshot_msg(existing, int(lun.get("assigned_size") or 0))
                )
            if lun is None:
                raise not_found(f"volume {req.source_volume_id[:80]!r} does not exist")
            snap = self._zbs(
                f"snapshotting volume {req.source_volume_id}",
                self.client.snapshots.create,
                lun["id"],
                lun["iscsi_target"]["id"],
                snap_name,
            )
            log.info(
                "created snapshot",
                extra={"fields": {"snapshot_id": snap.get("local_id"), **k8s_objects(dict(req.parameters))}},
            )
            msg = self._snapshot_msg(snap, int(lun.get("assigned_size") or 0))
            msg.source_volume_id = lun["local_id"]
            return csi.CreateSnapshotResponse(snapshot=msg)

    def _find_snapshot_by_name(self, csi_name: str) -> dict[str, Any] | None:
        name = self.naming.lun_name(csi_name)
        found = self._zbs("looking up snapshots", self.client.snapshots.list, {"name": name})
        found = [s for s in found if self.naming.classify_snapshot(s).owner is Owner.MINE]
        if not found and self.cfg.adopt_legacy:
            legacy = self._zbs(
                "looking up legacy snapshots",
                self.client.snapshots.list,
                {"name": lun_name_for(csi_name), "iscsi_target": {"name_starts_with": f"{self.naming.prefix}-"}},
            )
            found = [
                s
                for s in legacy
                if self.naming.classify_snapshot(s).owner is Owner.LEGACY and self._legacy_snapshot_ours(s)
            ]
        return found[0] if found else None

    def delete_snapshot(self, req: csi.DeleteSnapshotRequest) -> csi.DeleteSnapshotResponse:
        if not req.snapshot_id:
            raise invalid("snapshot_id is required")
        with self.locks.hold(req.snapshot_id):
            snap = self._snapshot(req.snapshot_id, "delete it")
            if snap is not None:
                self._zbs(f"deleting snapshot {req.snapshot_id}", self.client.snapshots.delete, snap["id"])
                log.info("deleted snapshot", extra={"fields": {"snapshot_id": req.snapshot_id}})
                self._purge_retired((snap.get("iscsi_lun") or {}).get("id", ""))
        return csi.DeleteSnapshotResponse()

    def _purge_retired(self, lun_id: str) -> None:
        """Delete a retired volume's LUN once its last snapshot is gone."""
        if not lun_id:
            return
        lun = self._zbs("reading a snapshot's volume", self.client.luns.get, id=lun_id)
        if lun is None or self.naming.classify_lun(lun) != Ownership(Owner.MINE, retired=True):
            return
        if self._zbs("listing snapshots", self.client.snapshots.list, {"iscsi_lun": {"id": lun_id}}):
            return
        self._zbs(f"deleting retired volume {lun.get('local_id')}", self.client.luns.delete, lun_id)
        self.pool.forget((lun.get("iscsi_target") or {}).get("id", ""))
        self.pool.retire_if_empty(lun.get("iscsi_target") or {})
        log.info("deleted a retired volume with its last snapshot", extra={"fields": {"lun": lun.get("local_id")}})

    def list_snapshots(self, req: csi.ListSnapshotsRequest) -> csi.ListSnapshotsResponse:
        limit = page_limit(req.max_entries)
        where: dict[str, Any] = {}
        if req.snapshot_id:
            if not is_uuid(req.snapshot_id):
                return csi.ListSnapshotsResponse()
            where["local_id"] = req.snapshot_id
        if req.source_volume_id:
            lun = self._lun(req.source_volume_id, "list its snapshots")
            if lun is None:
                return csi.ListSnapshotsResponse()
            where["iscsi_lun"] = {"id": lun["id"]}
        items = self.listing.snapshots(where or self.listing.snapshot_scope(), req.starting_token, limit)
        entries, token = take(items, limit, self._snapshot_entry)
        return csi.ListSnapshotsResponse(entries=entries, next_token=token)

    @staticmethod
    def _snapshot_entry(item: Item) -> csi.ListSnapshotsResponse.Entry:
        snap, src = item.obj or {}, item.related or {}
        return csi.ListSnapshotsResponse.Entry(
            snapshot=csi.Snapshot(
                size_bytes=int(src.get("assigned_size") or 0),
                snapshot_id=snap["local_id"],
                source_volume_id=src.get("local_id", ""),
                creation_time=_timestamp(snap.get("local_created_at")),
                ready_to_use=not snap.get("entityAsyncStatus"),
            )
        )

    def get_snapshot(self, req: csi.GetSnapshotRequest) -> csi.GetSnapshotResponse:
        if not req.snapshot_id:
            raise invalid("snapshot_id is required")
        snap = self._snapshot(req.snapshot_id, "read it")
        if snap is None:
            raise not_found(f"snapshot {req.snapshot_id[:80]!r} does not exist")
        return csi.GetSnapshotResponse(snapshot=self._snapshot_msg(snap))
