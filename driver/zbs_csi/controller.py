"""The CSI Controller service: volumes are LUNs packed into driver-owned targets.

Ids: volume id = the LUN's ``local_id``, snapshot id = the snapshot's ``local_id`` (as in
SmartX's own driver), so an operator finds a PV's LUN in the ZBS UI by its id. Names map to
LUN/snapshot names deterministically (:func:`lun_name_for`), which makes CreateVolume and
CreateSnapshot idempotent across retries, restarts and racing controller replicas.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from . import caps as capmod
from .chap import chap_from_secrets
from .config import Config
from .errors import (
    CsiError,
    aborted,
    already_exists,
    exhausted,
    invalid,
    not_found,
    out_of_range,
    precondition,
)
from .ids import is_iqn, is_uuid, lun_name_for
from .locks import KeyedLocks
from .params import VolumeParams, parse_mutable_params, parse_volume_params
from .proto import csi_pb2 as csi
from .targets import TargetPool, target_full
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
    zerr,
)

log = logging.getLogger(__name__)

# A deleted volume whose snapshots live on: renamed, fenced and hidden until they are gone.
TRASH_PREFIX = "trash-"
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


def _page(token: str, total: int) -> int:
    if not token:
        return 0
    if not token.isdigit() or int(token) > total:
        raise aborted(f"starting_token {token[:40]!r} is not valid (lists may have changed; start over)")
    return int(token)


class ControllerService:
    def __init__(self, cfg: Config, client: ZbsClient) -> None:
        self.cfg = cfg
        self.client = client
        self.pool = TargetPool(client, cfg)
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

    def _lun(self, volume_id: str) -> dict[str, Any] | None:
        """Our LUN with this volume id, or None (also for ids that cannot be ours)."""
        if not is_uuid(volume_id):
            return None
        lun = self._zbs(f"looking up volume {volume_id}", self.client.luns.get, local_id=volume_id)
        if lun is None or not self.pool.owns((lun.get("iscsi_target") or {}).get("name", "")):
            return None
        if str(lun.get("name", "")).startswith(TRASH_PREFIX):
            return None
        return lun

    def _snapshot(self, snapshot_id: str) -> dict[str, Any] | None:
        if not is_uuid(snapshot_id):
            return None
        snap = self._zbs(f"looking up snapshot {snapshot_id}", self.client.snapshots.get, local_id=snapshot_id)
        if snap is None or not self.pool.owns((snap.get("iscsi_target") or {}).get("name", "")):
            return None
        return snap

    def portal(self) -> str:
        if self._portal is None:
            if self.cfg.portal:
                self._portal = self.cfg.portal
            else:
                cluster = self._zbs("reading the cluster", self.client.clusters.get, id=self.pool.cluster_id())
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
        lun_name = lun_name_for(req.name)
        source = req.volume_content_source if req.HasField("volume_content_source") else None
        with self.locks.hold(f"name:{lun_name}"):
            existing = self._find_by_name(lun_name)
            if existing is not None:
                vol = self._check_compatible(existing, required, limit, source)
                if params.fsck:
                    vol.volume_context["fsck"] = params.fsck
                return csi.CreateVolumeResponse(volume=vol)
            lun = self._create(lun_name, size, params, source, required, limit)
            lun = self._settle_race(lun_name, lun)
            log.info("created volume", extra={"fields": {"volume_id": lun["local_id"], "name": req.name}})
            return csi.CreateVolumeResponse(volume=self._volume(lun, source, params.fsck))

    def _find_by_name(self, lun_name: str) -> dict[str, Any] | None:
        luns = self._zbs(
            f"looking up volume {lun_name}",
            self.client.luns.list,
            {"name": lun_name, "iscsi_target": {"name_starts_with": f"{self.pool.prefix}-"}},
        )
        luns = [lun for lun in luns if self.pool.owns((lun.get("iscsi_target") or {}).get("name", ""))]
        if not luns:
            return None
        return sorted(luns, key=lambda lun: (str(lun.get("local_created_at") or ""), lun["id"]))[0]

    def _settle_race(self, lun_name: str, mine: dict[str, Any]) -> dict[str, Any]:
        """Two replicas may each have made a LUN of one name in different targets: the oldest wins."""
        winner = self._find_by_name(lun_name) or mine
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
        lun_name: str,
        size: int,
        params: VolumeParams,
        source: csi.VolumeContentSource | None,
        required: int,
        limit: int,
    ) -> dict[str, Any]:
        src_kind, src_obj = "", None
        if source is not None:
            if source.HasField("snapshot"):
                src_kind = "snapshot"
                src_obj = self._snapshot(source.snapshot.snapshot_id)
                if src_obj is None:
                    raise not_found(f"snapshot {source.snapshot.snapshot_id[:80]!r} does not exist")
            elif source.HasField("volume"):
                src_kind = "volume"
                src_obj = self._lun(source.volume.volume_id)
                if src_obj is None:
                    raise not_found(f"volume {source.volume.volume_id[:80]!r} does not exist")
            else:
                raise invalid("volume_content_source names neither a snapshot nor a volume")
        tried: set[str] = set()
        stripe = (params.stripe_num or DEFAULT_STRIPE_NUM, params.stripe_size or DEFAULT_STRIPE_SIZE)
        for _ in range(4):
            slot = self.pool.reserve(stripe, tried)
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
                existing = self._find_by_name(lun_name)
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
            lun = self._lun(req.volume_id)
            if lun is None:
                return csi.DeleteVolumeResponse()
            snaps = self._zbs("listing snapshots", self.client.snapshots.list, {"iscsi_lun": {"id": lun["id"]}})
            if snaps:
                # ZBS snapshots belong to their LUN, CSI snapshots outlive their volume: keep the
                # LUN, fenced and out of sight, until DeleteSnapshot removes its last snapshot.
                self._zbs(
                    f"retiring volume {req.volume_id} (it has snapshots)",
                    self.client.luns.update,
                    lun["id"],
                    name=f"{TRASH_PREFIX}{lun['local_id']}",
                    allowed_initiators="",
                )
                log.info("volume retired until its %d snapshot(s) are deleted", len(snaps))
                return csi.DeleteVolumeResponse()
            self._zbs(f"deleting volume {req.volume_id}", self.client.luns.delete, lun["id"])
            self.pool.forget((lun.get("iscsi_target") or {}).get("id", ""))
            self.pool.retire_if_empty((lun.get("iscsi_target") or {}).get("id", ""))
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
            lun = self._lun(req.volume_id)
            if lun is None:
                raise not_found(f"volume {req.volume_id[:80]!r} does not exist")
            if not is_iqn(req.node_id):
                raise not_found(f"node {req.node_id[:80]!r} does not exist (node ids are initiator IQNs)")
            target_id = (lun.get("iscsi_target") or {}).get("id", "")
            if chap is not None:
                self._register_chap(target_id, req.node_id, chap)
            elif self.cfg.chap:
                raise invalid("CHAP is on: the controller-publish secrets must carry the node's CHAP credentials")
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
            target = self.pool.slot(target_id)
            if target is None:
                raise not_found(f"the target of volume {req.volume_id} is gone")
            return csi.ControllerPublishVolumeResponse(
                publish_context={"portal": self.portal(), "targetIqn": target.iqn, "lun": str(lun["lun_id"])}
            )

    def _check_attach_limit(self, node_id: str) -> None:
        """RESOURCE_EXHAUSTED when the node already has ``max_volumes_per_node`` of our volumes."""
        published = self._zbs(
            f"counting the volumes of {node_id}",
            self.client.luns.list,
            {
                "allowed_initiators_contains": node_id,
                "iscsi_target": {"name_starts_with": f"{self.pool.prefix}-"},
            },
        )
        mine = [
            lun
            for lun in published
            if node_id in self._published(lun) and self.pool.owns((lun.get("iscsi_target") or {}).get("name", ""))
        ]
        if len(mine) >= self.cfg.max_volumes_per_node:
            raise exhausted(f"node {node_id} already has {len(mine)} volumes published (max_volumes_per_node)")

    def _register_chap(self, target_id: str, node_id: str, chap: Any) -> None:
        """Make ``chap`` the node's credentials on the target (targets are shared, so upsert)."""
        with self.locks_chap:
            target = self._zbs("reading the target", self.client.targets.get, id=target_id)
            if target is None:
                raise not_found(f"target {target_id} is gone")
            entries = [dict(e) for e in target.get("initiator_chaps") or []]
            mine = {"initiator_iqn": node_id, "chap_name": chap.username, "chap_secret": chap.password}
            if mine in entries:
                return
            entries = [e for e in entries if e.get("initiator_iqn") != node_id] + [mine]
            self._zbs(f"registering CHAP for {node_id}", self.client.targets.update, target_id, initiator_chaps=entries)

    def unpublish(self, req: csi.ControllerUnpublishVolumeRequest) -> csi.ControllerUnpublishVolumeResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        with self.locks.hold(req.volume_id):
            lun = self._lun(req.volume_id)
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
        if self._lun(req.volume_id) is None:
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

    def _all_luns(self, *, retired: bool = False) -> list[dict[str, Any]]:
        luns = self._zbs(
            "listing volumes",
            self.client.luns.list,
            {"iscsi_target": {"name_starts_with": f"{self.pool.prefix}-"}},
        )
        luns = [
            lun
            for lun in luns
            if self.pool.owns((lun.get("iscsi_target") or {}).get("name", ""))
            and (retired or not str(lun.get("name", "")).startswith(TRASH_PREFIX))
        ]
        return sorted(luns, key=lambda lun: lun["local_id"])

    @staticmethod
    def _condition(lun: dict[str, Any]) -> csi.VolumeCondition:
        status = lun.get("entityAsyncStatus")
        if status:
            return csi.VolumeCondition(abnormal=True, message=f"the LUN is {str(status).lower()}")
        return csi.VolumeCondition(abnormal=False, message="healthy")

    def list_volumes(self, req: csi.ListVolumesRequest) -> csi.ListVolumesResponse:
        if req.max_entries < 0:
            raise invalid("max_entries must not be negative")
        luns = self._all_luns()
        start = _page(req.starting_token, len(luns))
        end = len(luns) if req.max_entries == 0 else min(len(luns), start + req.max_entries)
        entries = []
        for lun in luns[start:end]:
            entries.append(
                csi.ListVolumesResponse.Entry(
                    volume=self._volume(lun),
                    status=csi.ListVolumesResponse.VolumeStatus(
                        published_node_ids=self._published(lun), volume_condition=self._condition(lun)
                    ),
                )
            )
        return csi.ListVolumesResponse(entries=entries, next_token=str(end) if end < len(luns) else "")

    def get_volume(self, req: csi.ControllerGetVolumeRequest) -> csi.ControllerGetVolumeResponse:
        if not req.volume_id:
            raise invalid("volume_id is required")
        lun = self._lun(req.volume_id)
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
        cluster = self._zbs("reading the cluster", self.client.clusters.get, id=self.pool.cluster_id()) or {}
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
            lun = self._lun(req.volume_id)
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
            lun = self._lun(req.volume_id)
            if lun is None:
                raise not_found(f"volume {req.volume_id[:80]!r} does not exist")
            if changes:
                self._zbs(f"modifying volume {req.volume_id}", self.client.luns.update, lun["id"], **changes)
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
        if req.parameters:
            raise invalid(f"unknown snapshot parameter {sorted(req.parameters)[0][:80]!r}")
        snap_name = lun_name_for(req.name)
        with self.locks.hold(f"snap:{snap_name}"):
            existing = self._zbs("looking up snapshots", self.client.snapshots.list, {"name": snap_name})
            existing = [s for s in existing if self.pool.owns((s.get("iscsi_target") or {}).get("name", ""))]
            lun = self._lun(req.source_volume_id)
            if existing:
                snap = existing[0]
                if lun is None or (snap.get("iscsi_lun") or {}).get("id") != lun["id"]:
                    raise already_exists(f"snapshot {req.name[:80]!r} exists for another volume")
                return csi.CreateSnapshotResponse(snapshot=self._snapshot_msg(snap, int(lun.get("assigned_size") or 0)))
            if lun is None:
                raise not_found(f"volume {req.source_volume_id[:80]!r} does not exist")
            snap = self._zbs(
                f"snapshotting volume {req.source_volume_id}",
                self.client.snapshots.create,
                lun["id"],
                lun["iscsi_target"]["id"],
                snap_name,
            )
            log.info("created snapshot", extra={"fields": {"snapshot_id": snap.get("local_id")}})
            msg = self._snapshot_msg(snap, int(lun.get("assigned_size") or 0))
            msg.source_volume_id = lun["local_id"]
            return csi.CreateSnapshotResponse(snapshot=msg)

    def delete_snapshot(self, req: csi.DeleteSnapshotRequest) -> csi.DeleteSnapshotResponse:
        if not req.snapshot_id:
            raise invalid("snapshot_id is required")
        with self.locks.hold(req.snapshot_id):
            snap = self._snapshot(req.snapshot_id)
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
        if lun is None or not str(lun.get("name", "")).startswith(TRASH_PREFIX):
            return
        if self._zbs("listing snapshots", self.client.snapshots.list, {"iscsi_lun": {"id": lun_id}}):
            return
        self._zbs(f"deleting retired volume {lun.get('local_id')}", self.client.luns.delete, lun_id)
        self.pool.forget((lun.get("iscsi_target") or {}).get("id", ""))
        self.pool.retire_if_empty((lun.get("iscsi_target") or {}).get("id", ""))
        log.info("deleted a retired volume with its last snapshot", extra={"fields": {"lun": lun.get("local_id")}})

    def list_snapshots(self, req: csi.ListSnapshotsRequest) -> csi.ListSnapshotsResponse:
        if req.max_entries < 0:
            raise invalid("max_entries must not be negative")
        where: dict[str, Any] = {"iscsi_target": {"name_starts_with": f"{self.pool.prefix}-"}}
        if req.snapshot_id:
            if not is_uuid(req.snapshot_id):
                return csi.ListSnapshotsResponse()
            where["local_id"] = req.snapshot_id
        if req.source_volume_id:
            lun = self._lun(req.source_volume_id)
            if lun is None:
                return csi.ListSnapshotsResponse()
            where["iscsi_lun"] = {"id": lun["id"]}
        snaps = self._zbs("listing snapshots", self.client.snapshots.list, where)
        snaps = sorted(
            (s for s in snaps if self.pool.owns((s.get("iscsi_target") or {}).get("name", ""))),
            key=lambda s: s["local_id"],
        )
        start = _page(req.starting_token, len(snaps))
        end = len(snaps) if req.max_entries == 0 else min(len(snaps), start + req.max_entries)
        luns = {lun["id"]: lun for lun in self._all_luns(retired=True)} if snaps[start:end] else {}
        entries = []
        for s in snaps[start:end]:
            src = luns.get((s.get("iscsi_lun") or {}).get("id", ""), {})
            msg = csi.Snapshot(
                size_bytes=int(src.get("assigned_size") or 0),
                snapshot_id=s["local_id"],
                source_volume_id=src.get("local_id", ""),
                creation_time=_timestamp(s.get("local_created_at")),
                ready_to_use=not s.get("entityAsyncStatus"),
            )
            entries.append(csi.ListSnapshotsResponse.Entry(snapshot=msg))
        return csi.ListSnapshotsResponse(entries=entries, next_token=str(end) if end < len(snaps) else "")

    def get_snapshot(self, req: csi.GetSnapshotRequest) -> csi.GetSnapshotResponse:
        if not req.snapshot_id:
            raise invalid("snapshot_id is required")
        snap = self._snapshot(req.snapshot_id)
        if snap is None:
            raise not_found(f"snapshot {req.snapshot_id[:80]!r} does not exist")
        return csi.GetSnapshotResponse(snapshot=self._snapshot_msg(snap))
