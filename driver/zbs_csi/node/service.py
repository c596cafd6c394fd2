"""The CSI Node service: stage/unstage, publish/unpublish, expand, stats, volume condition.

Above the connector everything is shared and the rules of csi.md apply: format only a blank
device, xfs always ``nouuid``, one operation per volume at a time (ABORTED otherwise), and
stage state persisted before any step that leaves something behind on the host, so a crash
or restart at any point can be finished or undone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import grpc

from .. import caps as capmod
from ..chap import chap_from_secrets
from ..config import Config
from ..errors import CsiError, already_exists, exhausted, internal, invalid, not_found, precondition
from ..ids import is_iqn, is_uuid
from ..locks import KeyedLocks
from ..proto import csi_pb2 as csi
from .connectors import AttachTarget, Connector, ConnectorError
from .fs import EXT, Filesystems, FsError
from .mounts import find_mount, read_mounts
from .publish_rules import check_publish
from .runner import CommandError, Runner
from .state import StageRecord, StateStore

log = logging.getLogger(__name__)

WATCH_PERIOD = 5.0  # seconds between looks at the staged volumes' iSCSI sessions


def _path_arg(value: str, field: str) -> str:
    if not value:
        raise invalid(f"{field} is required")
    if not value.startswith("/") or "\0" in value or any(p == ".." for p in value.split("/")):
        raise invalid(f"{field} must be an absolute path without '..'")
    return os.path.normpath(value)


def _volume_arg(value: str) -> str:
    if not value:
        raise invalid("volume_id is required")
    return value


def _remove_path(path: str) -> None:
    """Remove an unmounted target path (directory, block device file or symlink), if any.

    No stat first: a path over a dead FUSE export answers ENOTCONN to it. A directory that
    is not empty is left alone and reported (it holds data that is not this volume's).
    """
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)


class NodeService:
    def __init__(self, cfg: Config, runner: Runner, connector: Connector) -> None:
        self.cfg = cfg
        self.runner = runner
        self.connector = connector
        self.fs = Filesystems(runner)
        self.store = StateStore(cfg.state_dir)
        self.locks = KeyedLocks()

    # ---------------------------------------------------------------- startup
    def check_node_id(self) -> None:
        if not is_iqn(self.cfg.node_id):
            raise ValueError(f"node id {self.cfg.node_id!r} is not a valid initiator IQN")

    def reconcile(self) -> None:
        """Finish or undo what a previous run left half-done; forget publishes that are gone."""
        mounts = read_mounts()
        for rec in self.store.all():
            if not rec.complete:
                log.warning("undoing an interrupted stage", extra={"fields": {"volume_id": rec.volume_id}})
                try:
                    self._undo_stage(rec)
                except (CsiError, ConnectorError, CommandError, FsError) as exc:
                    log.error("could not undo an interrupted stage: %s", exc)
                continue
            gone = [p for p in rec.published if find_mount(p, mounts) is None]
            for p in gone:
                rec.published.pop(p)
            if gone:
                self.store.put(rec)
            problem = self.connector.condition(rec.attach, rec.volume_id)
            if rec.access_type == "mount" and find_mount(rec.staging_path, mounts) is None:
                problem = problem or f"staging path {rec.staging_path} is not mounted"
            if problem:
                log.warning("staged volume is unhealthy: %s", problem, extra={"fields": {"volume_id": rec.volume_id}})

    def watch_sessions(self, stop: threading.Event, period: float = WATCH_PERIOD) -> None:
        """Bound the I/O of staged volumes whose iSCSI session is lost, until ``stop`` is set.

        open-iscsi fails a lost session's I/O after its replacement_timeout; libiscsi never
        does, so for the userspace connector this loop does (the kernel's needs nothing).
        Without it, a pod writing to a volume whose target is gone would wait forever.
        """
        while not stop.wait(period):
            for rec in self.store.all():
                if not (rec.complete and rec.attach):
                    continue
                try:
                    self.connector.fail_io_if_lost(rec.attach, wait=False)
                except (OSError, CommandError, ConnectorError) as exc:
                    log.warning("watching the session of %s: %s", rec.volume_id, exc)

    def start_session_watch(self) -> threading.Event:
        """Run :meth:`watch_sessions` in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        threading.Thread(target=self.watch_sessions, args=(stop,), name="session-watch", daemon=True).start()
        return stop

    # ---------------------------------------------------------------- identity
    def get_info(self) -> csi.NodeGetInfoResponse:
        return csi.NodeGetInfoResponse(node_id=self.cfg.node_id, max_volumes_per_node=self.cfg.max_volumes_per_node)

    def get_capabilities(self) -> csi.NodeGetCapabilitiesResponse:
        rpc = csi.NodeServiceCapability.RPC
        types = [rpc.STAGE_UNSTAGE_VOLUME, rpc.GET_VOLUME_STATS, rpc.EXPAND_VOLUME, rpc.VOLUME_CONDITION]
        types.append(rpc.SINGLE_NODE_MULTI_WRITER)
        return csi.NodeGetCapabilitiesResponse(capabilities=[csi.NodeServiceCapability(rpc=rpc(type=t)) for t in types])

    # ---------------------------------------------------------------- stage
    def stage(self, req: csi.NodeStageVolumeRequest) -> csi.NodeStageVolumeResponse:
        volume_id = _volume_arg(req.volume_id)
        staging = _path_arg(req.staging_target_path, "staging_target_path")
        if not req.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        cap = capmod.parse(req.volume_capability, self.cfg.default_fstype)
        if not is_uuid(volume_id):
            raise not_found(f"volume {volume_id[:80]!r} does not exist")
        chap = chap_from_secrets(dict(req.secrets))
        try:
            target = AttachTarget.from_context(volume_id, dict(req.publish_context), readonly=cap.readonly)
        except ConnectorError as exc:
            raise invalid(str(exc)) from exc
        with self.locks.hold(volume_id):
            rec = self.store.get(volume_id)
            if rec is not None and rec.complete:
                same = (
                    rec.staging_path == staging
                    and rec.access_type == cap.access_type
                    and (
                        cap.access_type == "block"
                        or (rec.fs_type == cap.fs_type and rec.mount_flags == list(cap.mount_flags))
                    )
                )
                if not same:
                    raise already_exists(f"volume {volume_id} is already staged at {rec.staging_path} differently")
                problem = self._condition(rec)
                if problem is None:
                    return csi.NodeStageVolumeResponse()
                # Recorded but broken (a host reboot, a killed daemon): stage it afresh.
                log.warning("restaging an unhealthy volume: %s", problem)
            if rec is not None:
                try:
                    self._undo_stage(rec)
                except (ConnectorError, CommandError, FsError) as exc:
                    raise CsiError(
                        grpc.StatusCode.UNAVAILABLE, f"cleaning up {volume_id} before staging: {exc}"
                    ) from exc
            if len(self.store.all()) >= self.cfg.max_volumes_per_node:
                raise exhausted(f"this node already has {self.cfg.max_volumes_per_node} volumes staged")
            Path(staging).mkdir(parents=True, exist_ok=True)
            rec = StageRecord(
                volume_id=volume_id,
                staging_path=staging,
                access_type=cap.access_type,
                fs_type=cap.fs_type,
                mount_flags=list(cap.mount_flags),
                readonly=cap.readonly,
                access_mode=cap.mode,
                connector=self.connector.name,
                publish_context=dict(req.publish_context),
            )
            self.store.put(rec)

            def checkpoint(data: dict[str, Any]) -> None:
                rec.attach = dict(data)
                self.store.put(rec)

            try:
                att = self.connector.attach(target, chap, checkpoint)
                rec.device, rec.attach = att.device, att.data
                self.store.put(rec)
                if cap.access_type == "mount":
                    self._format_and_mount(rec, preen=req.volume_context.get("fsck") == "preen")
            except ConnectorError as exc:
                self._undo_stage(rec)
                code = grpc.StatusCode.UNAVAILABLE if exc.retryable else grpc.StatusCode.FAILED_PRECONDITION
                raise CsiError(code, str(exc)) from exc
            except (CommandError, FsError) as exc:
                self._undo_stage(rec)
                raise internal(f"staging volume {volume_id}: {exc}") from exc
            except CsiError:
                self._undo_stage(rec)
                raise
            rec.complete = True
            self.store.put(rec)
            log.info("staged", extra={"fields": {"device": rec.device, "staging": staging, "fs": rec.fs_type}})
        return csi.NodeStageVolumeResponse()

    def _format_and_mount(self, rec: StageRecord, preen: bool = False) -> None:
        # Identity on the very node that is probed (and formatted), then a probe that either
        # concludes or refuses: a volume holding data must never be taken for a blank one.
        self.connector.verify(rec.device, rec.attach, rec.volume_id)
        try:
            found = self.fs.probe(rec.device)
        except FsError as exc:
            message = f"volume {rec.volume_id}: cannot tell whether it is blank ({exc}); not formatting"
            raise CsiError(grpc.StatusCode.UNAVAILABLE, message) from exc
        if found.startswith("ptable:"):
            raise precondition(f"volume {rec.volume_id} holds a partition table, not a filesystem; refusing to format")
        if found.startswith("usage:"):
            raise precondition(f"volume {rec.volume_id} holds a {found[6:]} signature, no filesystem; not formatting")
        if not found:
            if rec.readonly:
                raise precondition(f"volume {rec.volume_id} is blank and staged read-only: nothing to mount")
            self.connector.verify(rec.device, rec.attach, rec.volume_id)
            log.info("formatting blank device", extra={"fields": {"device": rec.device, "fs": rec.fs_type}})
            self.fs.mkfs(rec.device, rec.fs_type)
        elif found != rec.fs_type:
            raise precondition(f"volume {rec.volume_id} holds {found}, not the requested {rec.fs_type}")
        elif preen and found in EXT and not rec.readonly:
            # Opt-in (StorageClass fsck: preen). xfs is never repaired automatically.
            problem = self.fs.preen(rec.device)
            if problem:
                raise precondition(f"volume {rec.volume_id}: {problem}")
        opts = self.fs.mount_options(rec.fs_type, rec.mount_flags, rec.readonly)
        self.fs.mount(rec.device, rec.staging_path, rec.fs_type, opts)

    def _undo_stage(self, rec: StageRecord) -> None:
        if rec.access_type == "mount" and find_mount(rec.staging_path) is not None:
            self._unmount_staging(rec)
        if rec.attach:
            target = self._target_of(rec)
            others = [
                self._target_of(r) for r in self.store.all() if r.volume_id != rec.volume_id and r.publish_context
            ]
            self.connector.detach(target, rec.attach, [t for t in others if t is not None])
        self.store.delete(rec.volume_id)

    def _unmount_staging(self, rec: StageRecord) -> None:
        """Unmount the staged filesystem: never forced while its device works, never hung when it is lost.

        Unmounting flushes to the device. When the iSCSI session is gone for good the
        connector fails the device's I/O first (``fail_io_if_lost``), so the flush ends in
        I/O errors instead of a ``umount`` stuck in the kernel; a session lost during the
        unmount is caught when the unmount times out.
        """
        lost = bool(rec.attach) and self.connector.fail_io_if_lost(rec.attach)
        for attempt in range(3):
            try:
                self.fs.umount(rec.staging_path, lazy=attempt == 2)
            except CommandError:
                if find_mount(rec.staging_path) is None:
                    return  # a slow unmount finished after all
                if not lost:
                    lost = bool(rec.attach) and self.connector.fail_io_if_lost(rec.attach)
                if not lost and self._condition(rec) is None:
                    raise  # a healthy volume that is busy: never detach under a live mount
                if attempt == 2:
                    raise
                continue
            if find_mount(rec.staging_path) is None:
                return

    @staticmethod
    def _target_of(rec: StageRecord) -> AttachTarget:
        try:
            return AttachTarget.from_context(rec.volume_id, rec.publish_context, readonly=rec.readonly)
        except ConnectorError:
            return AttachTarget(rec.volume_id, "", "", 0, rec.readonly)

    def unstage(self, req: csi.NodeUnstageVolumeRequest) -> csi.NodeUnstageVolumeResponse:
        volume_id = _volume_arg(req.volume_id)
        staging = _path_arg(req.staging_target_path, "staging_target_path")
        if not is_uuid(volume_id):
            return csi.NodeUnstageVolumeResponse()
        with self.locks.hold(volume_id):
            rec = self.store.get(volume_id)
            if rec is None:
                return csi.NodeUnstageVolumeResponse()
            if rec.staging_path != staging:
                raise invalid(f"volume {volume_id} is staged at {rec.staging_path}, not {staging}")
            still = [p for p in rec.published if find_mount(p) is not None]
            if still:
                raise precondition(f"volume {volume_id} is still published at {still[0]}: unpublish it first")
            try:
                self._undo_stage(rec)
            except ConnectorError as exc:
                raise CsiError(grpc.StatusCode.UNAVAILABLE, f"unstaging {volume_id}: {exc}") from exc
            except (CommandError, FsError, OSError) as exc:
                raise internal(f"unstaging {volume_id}: {exc}") from exc
            log.info("unstaged")
        return csi.NodeUnstageVolumeResponse()

    # ---------------------------------------------------------------- publish
    def publish(self, req: csi.NodePublishVolumeRequest) -> csi.NodePublishVolumeResponse:
        volume_id = _volume_arg(req.volume_id)
        target_path = _path_arg(req.target_path, "target_path")
        if not req.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        cap = capmod.parse(req.volume_capability, self.cfg.default_fstype)
        staging = _path_arg(req.staging_target_path, "staging_target_path")
        if not is_uuid(volume_id):
            raise not_found(f"volume {volume_id[:80]!r} does not exist")
        readonly = req.readonly or cap.readonly
        with self.locks.hold(volume_id):
            rec = self.store.get(volume_id)
            if rec is None or not rec.complete:
                raise precondition(f"volume {volume_id} is not staged on this node")
            if rec.staging_path != staging:
                raise invalid(f"volume {volume_id} is staged at {rec.staging_path}, not {staging}")
            if rec.access_type != cap.access_type:
                raise invalid(f"volume {volume_id} was staged as {rec.access_type}, not {cap.access_type}")
            want: dict[str, Any] = {
                "readonly": readonly,
                "access_type": cap.access_type,
                "mode": cap.mode,
                "flags": list(cap.mount_flags),
            }
            live = {
                path: {"mode": rec.access_mode, **entry}
                for path, entry in rec.published.items()
                if find_mount(path) is not None
            }
            if check_publish(volume_id, target_path, want, live):
                return csi.NodePublishVolumeResponse()
            # Recorded before the bind: a crash in between leaves a publish the record knows
            # about (reconcile forgets it if the mount never happened), never an unknown one.
            rec.published[target_path] = want
            self.store.put(rec)
            try:
                self._bind(rec, target_path, readonly)
            except (CommandError, OSError) as exc:
                if find_mount(target_path) is None:  # else NodeUnpublish still has it to remove
                    rec.published.pop(target_path, None)
                    self.store.put(rec)
                raise internal(f"publishing {volume_id} at {target_path}: {exc}") from exc
            log.info("published", extra={"fields": {"target_path": target_path, "readonly": readonly}})
        return csi.NodePublishVolumeResponse()

    def _bind(self, rec: StageRecord, target_path: str, readonly: bool) -> None:
        """Bind-mount the volume at ``target_path``; on failure remove what this call created."""
        target = Path(target_path)
        created = not os.path.lexists(target_path)
        try:
            if rec.access_type == "mount":
                target.mkdir(parents=True, exist_ok=True)
                self.fs.bind(rec.staging_path, target_path, readonly)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch(exist_ok=True)
                self.fs.bind(rec.device, target_path, readonly)
        except (CommandError, OSError):
            if created and find_mount(target_path) is None:
                with contextlib.suppress(OSError):
                    _remove_path(target_path)
            raise

    def unpublish(self, req: csi.NodeUnpublishVolumeRequest) -> csi.NodeUnpublishVolumeResponse:
        volume_id = _volume_arg(req.volume_id)
        target_path = _path_arg(req.target_path, "target_path")
        with self.locks.hold(volume_id):
            try:
                for _ in range(8):  # mounts stacked by retried publishes come off one by one
                    if find_mount(target_path) is None:
                        break
                    self.fs.umount(target_path)
                if find_mount(target_path) is not None:
                    raise OSError(f"{target_path} is still mounted after 8 unmounts")
                _remove_path(target_path)
            except (CommandError, OSError) as exc:
                raise internal(f"unpublishing {volume_id} from {target_path}: {exc}") from exc
            if is_uuid(volume_id):
                rec = self.store.get(volume_id)
                if rec is not None and target_path in rec.published:
                    rec.published.pop(target_path)
                    self.store.put(rec)
            log.info("unpublished", extra={"fields": {"target_path": target_path}})
        return csi.NodeUnpublishVolumeResponse()

    # ---------------------------------------------------------------- stats / expand
    def _record_for_path(self, volume_id: str, path: str) -> StageRecord:
        """The volume's record when ``path`` is one of its paths; NOT_FOUND otherwise.

        ``path`` is only compared with recorded paths, never used before it matched one.
        """
        rec = self.store.get(volume_id) if is_uuid(volume_id) else None
        if rec is None or not rec.complete:
            raise not_found(f"volume {volume_id[:80]!r} is not staged on this node")
        path = os.path.normpath(path) if path.startswith("/") else path
        if path != rec.staging_path and path not in rec.published:
            raise not_found(f"{path} is not a path of volume {volume_id}")
        if not os.path.exists(path):
            raise not_found(f"{path} does not exist")
        return rec

    def stats(self, req: csi.NodeGetVolumeStatsRequest) -> csi.NodeGetVolumeStatsResponse:
        volume_id = _volume_arg(req.volume_id)
        if not req.volume_path:
            raise invalid("volume_path is required")
        rec = self._record_for_path(volume_id, req.volume_path)
        path = os.path.normpath(req.volume_path)
        condition = self._condition(rec)
        usage: list[csi.VolumeUsage] = []
        unit = csi.VolumeUsage.Unit
        if rec.access_type == "block":
            try:
                total = self.fs.device_size(rec.device)
                usage.append(csi.VolumeUsage(unit=unit.BYTES, total=total))
            except (CommandError, ValueError) as exc:
                condition = condition or f"cannot read the device size: {exc}"
        else:
            try:
                u = self.fs.usage(path)
                usage.append(csi.VolumeUsage(unit=unit.BYTES, total=u.total, used=u.used, available=u.available))
                usage.append(
                    csi.VolumeUsage(unit=unit.INODES, total=u.inodes, used=u.inodes_used, available=u.inodes_free)
                )
            except OSError as exc:
                condition = condition or f"cannot stat the filesystem: {exc}"
        return csi.NodeGetVolumeStatsResponse(
            usage=usage,
            volume_condition=csi.VolumeCondition(abnormal=condition is not None, message=condition or "healthy"),
        )

    def _condition(self, rec: StageRecord) -> str | None:
        problem = self.connector.condition(rec.attach, rec.volume_id)
        if problem:
            return problem
        if rec.access_type == "mount":
            m = find_mount(rec.staging_path)
            if m is None:
                return f"staging path {rec.staging_path} is not mounted"
            if m.readonly and not rec.readonly:
                return f"the filesystem at {rec.staging_path} went read-only"
        return None

    def expand(self, req: csi.NodeExpandVolumeRequest) -> csi.NodeExpandVolumeResponse:
        volume_id = _volume_arg(req.volume_id)
        if not req.volume_path:
            raise invalid("volume_path is required")
        with self.locks.hold(volume_id):
            rec = self._record_for_path(volume_id, req.volume_path)
            size = req.capacity_range.required_bytes if req.HasField("capacity_range") else 0
            target = self._target_of(rec)
            try:
                device_size = self.connector.resize(target, rec.attach, size)
                if size and device_size < size:
                    raise precondition(f"the device shows {device_size} bytes, less than the {size} asked for")
                block = rec.access_type == "block" or (
                    req.HasField("volume_capability") and req.volume_capability.HasField("block")
                )
                if not block:
                    self.fs.grow(rec.device, rec.staging_path, rec.fs_type)
            except ConnectorError as exc:
                raise CsiError(grpc.StatusCode.UNAVAILABLE, f"expanding {volume_id}: {exc}") from exc
            except (CommandError, FsError) as exc:
                raise internal(f"expanding {volume_id}: {exc}") from exc
            log.info("expanded", extra={"fields": {"bytes": device_size}})
        return csi.NodeExpandVolumeResponse(capacity_bytes=device_size)
