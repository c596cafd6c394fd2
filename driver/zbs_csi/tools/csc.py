"""A small CSI client: ``python -m zbs_csi.tools.csc --endpoint unix://... <command> ...``.

Plays the sidecars and kubelet by hand for troubleshooting and for the quickstart playbook;
prints each response as JSON. Secrets are read from a JSON file (``--secrets-file``), never
taken on the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from ..proto import csi_pb2 as csi
from ..proto import csi_pb2_grpc as csi_grpc

MODES = csi.VolumeCapability.AccessMode.Mode.keys()


def capability(access: str, fs_type: str, mode: str, flags: list[str]) -> csi.VolumeCapability:
    cap = csi.VolumeCapability(access_mode=csi.VolumeCapability.AccessMode(mode=MODES.index(mode)))
    if access == "block":
        cap.block.SetInParent()
    else:
        cap.mount.fs_type = fs_type
        cap.mount.mount_flags.extend(flags)
    return cap


def _kv(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        out[key] = value
    return out


def _context_file(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    data = data.get("publish_context", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise SystemExit("the publish context file must hold a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def _secrets(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise SystemExit("the secrets file must hold a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csc", description="call a CSI driver over its unix socket")
    p.add_argument("--endpoint", required=True, help="unix:///path/to/csi.sock")
    p.add_argument("--node-endpoint", help="the node plugin's socket when it is not --endpoint (expand)")
    p.add_argument("--timeout", type=float, default=300.0)
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name: str, **kw: Any) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, **kw)
        return sp

    def with_cap(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--access-type", choices=["mount", "block"], default="mount")
        sp.add_argument("--fs-type", default="")
        sp.add_argument("--access-mode", choices=MODES, default="SINGLE_NODE_WRITER")
        sp.add_argument("--mount-flag", action="append", default=[])

    cmd("probe")
    cmd("info")
    cmd("capabilities")
    sp = cmd("create-volume")
    sp.add_argument("name")
    sp.add_argument("--size", type=int, default=0, help="required bytes")
    sp.add_argument("--limit", type=int, default=0)
    sp.add_argument("--param", action="append", help="key=value (StorageClass parameter)")
    sp.add_argument("--from-snapshot")
    sp.add_argument("--from-volume")
    sp.add_argument("--secrets-file")
    with_cap(sp)
    sp = cmd("delete-volume")
    sp.add_argument("volume_id")
    sp = cmd("controller-publish")
    sp.add_argument("volume_id")
    sp.add_argument("--node-id", required=True)
    sp.add_argument("--readonly", action="store_true")
    sp.add_argument("--secrets-file")
    with_cap(sp)
    sp = cmd("controller-unpublish")
    sp.add_argument("volume_id")
    sp.add_argument("--node-id", default="")
    sp = cmd("node-stage")
    sp.add_argument("volume_id")
    sp.add_argument("--staging-path", required=True)
    sp.add_argument("--publish-context", action="append", help="key=value from controller-publish")
    sp.add_argument("--publish-context-file", help="the JSON controller-publish printed (or just its map)")
    sp.add_argument("--secrets-file")
    with_cap(sp)
    sp = cmd("node-unstage")
    sp.add_argument("volume_id")
    sp.add_argument("--staging-path", required=True)
    sp = cmd("node-publish")
    sp.add_argument("volume_id")
    sp.add_argument("--staging-path", required=True)
    sp.add_argument("--target-path", required=True)
    sp.add_argument("--readonly", action="store_true")
    with_cap(sp)
    sp = cmd("node-unpublish")
    sp.add_argument("volume_id")
    sp.add_argument("--target-path", required=True)
    sp = cmd("create-snapshot")
    sp.add_argument("name")
    sp.add_argument("--source-volume-id", required=True)
    sp = cmd("delete-snapshot")
    sp.add_argument("snapshot_id")
    sp = cmd("list-volumes")
    sp.add_argument("--max-entries", type=int, default=0)
    sp.add_argument("--starting-token", default="")
    sp = cmd("list-snapshots")
    sp.add_argument("--max-entries", type=int, default=0)
    sp.add_argument("--starting-token", default="")
    sp.add_argument("--source-volume-id", default="")
    sp = cmd("expand")
    sp.add_argument("volume_id")
    sp.add_argument("--size", type=int, required=True)
    sp.add_argument("--volume-path", help="also expand on the node (NodeExpandVolume) at this path")
    sp = cmd("stats")
    sp.add_argument("volume_id")
    sp.add_argument("--volume-path", required=True)
    sp = cmd("get-volume")
    sp.add_argument("volume_id")
    sp = cmd("capacity")
    return p


def run(args: argparse.Namespace) -> Any:
    channel = grpc.insecure_channel(args.endpoint)
    ident = csi_grpc.IdentityStub(channel)
    ctrl = csi_grpc.ControllerStub(channel)
    node = csi_grpc.NodeStub(channel)
    t = args.timeout
    c = args.command
    calls: dict[str, Callable[[], Any]] = {
        "probe": lambda: ident.Probe(csi.ProbeRequest(), timeout=t),
        "info": lambda: {
            "plugin": MessageToDict(ident.GetPluginInfo(csi.GetPluginInfoRequest(), timeout=t)),
            "capabilities": MessageToDict(ident.GetPluginCapabilities(csi.GetPluginCapabilitiesRequest(), timeout=t)),
        },
    }
    if c in calls:
        return calls[c]()
    if c == "capabilities":
        out: dict[str, Any] = {}
        for name, fn, req in (
            ("controller", ctrl.ControllerGetCapabilities, csi.ControllerGetCapabilitiesRequest()),
            ("node", node.NodeGetCapabilities, csi.NodeGetCapabilitiesRequest()),
            ("node_info", node.NodeGetInfo, csi.NodeGetInfoRequest()),
        ):
            try:
                out[name] = MessageToDict(fn(req, timeout=t))
            except grpc.RpcError as exc:
                out[name] = {"error": exc.code().name}
        return out
    if c == "create-volume":
        req = csi.CreateVolumeRequest(
            name=args.name,
            volume_capabilities=[capability(args.access_type, args.fs_type, args.access_mode, args.mount_flag)],
            parameters=_kv(args.param),
            secrets=_secrets(args.secrets_file),
        )
        if args.size or args.limit:
            req.capacity_range.required_bytes = args.size
            req.capacity_range.limit_bytes = args.limit
        if args.from_snapshot:
            req.volume_content_source.snapshot.snapshot_id = args.from_snapshot
        elif args.from_volume:
            req.volume_content_source.volume.volume_id = args.from_volume
        return ctrl.CreateVolume(req, timeout=t)
    if c == "delete-volume":
        return ctrl.DeleteVolume(csi.DeleteVolumeRequest(volume_id=args.volume_id), timeout=t)
    if c == "controller-publish":
        return ctrl.ControllerPublishVolume(
            csi.ControllerPublishVolumeRequest(
                volume_id=args.volume_id,
                node_id=args.node_id,
                readonly=args.readonly,
                volume_capability=capability(args.access_type, args.fs_type, args.access_mode, args.mount_flag),
                secrets=_secrets(args.secrets_file),
            ),
            timeout=t,
        )
    if c == "controller-unpublish":
        return ctrl.ControllerUnpublishVolume(
            csi.ControllerUnpublishVolumeRequest(volume_id=args.volume_id, node_id=args.node_id), timeout=t
        )
    if c == "node-stage":
        return node.NodeStageVolume(
            csi.NodeStageVolumeRequest(
                volume_id=args.volume_id,
                staging_target_path=args.staging_path,
                publish_context={**_context_file(args.publish_context_file), **_kv(args.publish_context)},
                volume_capability=capability(args.access_type, args.fs_type, args.access_mode, args.mount_flag),
                secrets=_secrets(args.secrets_file),
            ),
            timeout=t,
        )
    if c == "node-unstage":
        return node.NodeUnstageVolume(
            csi.NodeUnstageVolumeRequest(volume_id=args.volume_id, staging_target_path=args.staging_path), timeout=t
        )
    if c == "node-publish":
        return node.NodePublishVolume(
            csi.NodePublishVolumeRequest(
                volume_id=args.volume_id,
                staging_target_path=args.staging_path,
                target_path=args.target_path,
                readonly=args.readonly,
                volume_capability=capability(args.access_type, args.fs_type, args.access_mode, args.mount_flag),
            ),
            timeout=t,
        )
    if c == "node-unpublish":
        return node.NodeUnpublishVolume(
            csi.NodeUnpublishVolumeRequest(volume_id=args.volume_id, target_path=args.target_path), timeout=t
        )
    if c == "create-snapshot":
        return ctrl.CreateSnapshot(
            csi.CreateSnapshotRequest(name=args.name, source_volume_id=args.source_volume_id), timeout=t
        )
    if c == "delete-snapshot":
        return ctrl.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=args.snapshot_id), timeout=t)
    if c == "list-volumes":
        return ctrl.ListVolumes(
            csi.ListVolumesRequest(max_entries=args.max_entries, starting_token=args.starting_token), timeout=t
        )
    if c == "list-snapshots":
        return ctrl.ListSnapshots(
            csi.ListSnapshotsRequest(
                max_entries=args.max_entries, starting_token=args.starting_token, source_volume_id=args.source_volume_id
            ),
            timeout=t,
        )
    if c == "expand":
        rng = csi.CapacityRange(required_bytes=args.size)
        resp = ctrl.ControllerExpandVolume(
            csi.ControllerExpandVolumeRequest(volume_id=args.volume_id, capacity_range=rng), timeout=t
        )
        out = {"controller": MessageToDict(resp)}
        if args.volume_path:
            if args.node_endpoint:
                node = csi_grpc.NodeStub(grpc.insecure_channel(args.node_endpoint))
            nresp = node.NodeExpandVolume(
                csi.NodeExpandVolumeRequest(volume_id=args.volume_id, volume_path=args.volume_path, capacity_range=rng),
                timeout=t,
            )
            out["node"] = MessageToDict(nresp)
        return out
    if c == "stats":
        return node.NodeGetVolumeStats(
            csi.NodeGetVolumeStatsRequest(volume_id=args.volume_id, volume_path=args.volume_path), timeout=t
        )
    if c == "get-volume":
        return ctrl.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=args.volume_id), timeout=t)
    if c == "capacity":
        return ctrl.GetCapacity(csi.GetCapacityRequest(), timeout=t)
    raise SystemExit(f"unknown command {c}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resp = run(args)
    except grpc.RpcError as exc:
        json.dump({"error": {"code": exc.code().name, "message": exc.details()}}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 1
    doc = resp if isinstance(resp, dict) else MessageToDict(resp, preserving_proto_field_name=True)
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
