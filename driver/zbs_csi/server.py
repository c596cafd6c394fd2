"""gRPC wiring: Identity, Controller and Node servicers on a unix socket.

Every RPC goes through :func:`_serve`, which sets the log context (op, volume id, node),
turns :class:`CsiError` into its status code, and turns anything unexpected into INTERNAL
with the exception logged (never the request's secrets).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from . import __version__
from .config import Config
from .errors import CsiError
from .log import log_context
from .proto import csi_pb2 as csi
from .proto import csi_pb2_grpc as csi_grpc

log = logging.getLogger(__name__)


def _serve(op: str, request: Any, context: grpc.ServicerContext, fn: Callable[[Any], Any]) -> Any:
    volume_id = getattr(request, "volume_id", "") or getattr(request, "source_volume_id", "")
    node = getattr(request, "node_id", "")
    snapshot = getattr(request, "snapshot_id", "")
    with log_context(op=op, volume_id=str(volume_id)[:128], node=str(node)[:128], snapshot_id=str(snapshot)[:128]):
        try:
            resp = fn(request)
        except CsiError as exc:
            level = (
                logging.INFO if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ABORTED) else logging.WARNING
            )
            log.log(level, "failed: %s", exc.message, extra={"fields": {"code": exc.code.name}})
            context.abort(exc.code, exc.message)
        except Exception as exc:
            log.exception("unexpected error")
            context.abort(grpc.StatusCode.INTERNAL, f"{op}: unexpected {type(exc).__name__}: {exc}")
        log.debug("ok")
        return resp


class Identity(csi_grpc.IdentityServicer):
    def __init__(self, cfg: Config, probe: Callable[[], list[str]], controller: bool) -> None:
        self.cfg = cfg
        self.probe_fn = probe
        self.controller = controller

    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi.GetPluginInfoResponse(name=self.cfg.driver_name, vendor_version=__version__)

    def GetPluginCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        cap = csi.PluginCapability
        caps = [cap(volume_expansion=cap.VolumeExpansion(type=cap.VolumeExpansion.ONLINE))]
        if self.controller:
            caps.insert(0, cap(service=cap.Service(type=cap.Service.CONTROLLER_SERVICE)))
        return csi.GetPluginCapabilitiesResponse(capabilities=caps)

    def Probe(self, request: Any, context: grpc.ServicerContext) -> Any:
        def run(_: Any) -> Any:
            problems = self.probe_fn()
            if problems:
                raise CsiError(grpc.StatusCode.FAILED_PRECONDITION, "; ".join(problems))
            resp = csi.ProbeResponse()
            resp.ready.value = True
            return resp

        return _serve("Probe", request, context, run)


class Controller(csi_grpc.ControllerServicer):
    def __init__(self, svc: Any) -> None:
        self.svc = svc

    def CreateVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("CreateVolume", r, c, self.svc.create_volume)

    def DeleteVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("DeleteVolume", r, c, self.svc.delete_volume)

    def ControllerPublishVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ControllerPublishVolume", r, c, self.svc.publish)

    def ControllerUnpublishVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ControllerUnpublishVolume", r, c, self.svc.unpublish)

    def ValidateVolumeCapabilities(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ValidateVolumeCapabilities", r, c, self.svc.validate)

    def ListVolumes(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ListVolumes", r, c, self.svc.list_volumes)

    def GetCapacity(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("GetCapacity", r, c, self.svc.get_capacity)

    def ControllerGetCapabilities(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ControllerGetCapabilities", r, c, lambda _: self.svc.get_capabilities())

    def CreateSnapshot(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("CreateSnapshot", r, c, self.svc.create_snapshot)

    def DeleteSnapshot(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("DeleteSnapshot", r, c, self.svc.delete_snapshot)

    def ListSnapshots(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ListSnapshots", r, c, self.svc.list_snapshots)

    def GetSnapshot(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("GetSnapshot", r, c, self.svc.get_snapshot)

    def ControllerExpandVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ControllerExpandVolume", r, c, self.svc.expand)

    def ControllerGetVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ControllerGetVolume", r, c, self.svc.get_volume)

    def ControllerModifyVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("ControllerModifyVolume", r, c, self.svc.modify)


class Node(csi_grpc.NodeServicer):
    def __init__(self, svc: Any) -> None:
        self.svc = svc

    def NodeStageVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("NodeStageVolume", r, c, self.svc.stage)

    def NodeUnstageVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("NodeUnstageVolume", r, c, self.svc.unstage)

    def NodePublishVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("NodePublishVolume", r, c, self.svc.publish)

    def NodeUnpublishVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("NodeUnpublishVolume", r, c, self.svc.unpublish)

    def NodeGetVolumeStats(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("NodeGetVolumeStats", r, c, self.svc.stats)

    def NodeExpandVolume(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("NodeExpandVolume", r, c, self.svc.expand)

    def NodeGetCapabilities(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("NodeGetCapabilities", r, c, lambda _: self.svc.get_capabilities())

    def NodeGetInfo(self, r: Any, c: grpc.ServicerContext) -> Any:
        return _serve("NodeGetInfo", r, c, lambda _: self.svc.get_info())


class Driver:
    """The assembled driver: services for the chosen mode on one unix socket."""

    def __init__(
        self, cfg: Config, controller: Any = None, node: Any = None, probe: Callable[[], list[str]] | None = None
    ) -> None:
        self.cfg = cfg
        self.controller = controller
        self.node = node
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="csi"))
        csi_grpc.add_IdentityServicer_to_server(
            Identity(cfg, probe or (lambda: []), controller is not None), self.server
        )
        if controller is not None:
            csi_grpc.add_ControllerServicer_to_server(Controller(controller), self.server)
        if node is not None:
            csi_grpc.add_NodeServicer_to_server(Node(node), self.server)

    def start(self) -> None:
        path = self.cfg.socket_path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket of a previous run
        self.server.add_insecure_port(f"unix://{path}")
        self.server.start()
        os.chmod(path, 0o600)
        log.info("serving", extra={"fields": {"endpoint": self.cfg.endpoint, "mode": self.cfg.mode}})

    def stop(self, grace: float = 5.0) -> None:
        self.server.stop(grace).wait()
        Path(self.cfg.socket_path).unlink(missing_ok=True)

    def wait(self) -> None:
        self.server.wait_for_termination()
