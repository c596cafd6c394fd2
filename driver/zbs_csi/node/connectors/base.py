"""The interface both connectors implement, and the records they exchange with the node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...chap import Chap
from ...ids import is_iqn


class ConnectorError(Exception):
    """Attach/detach failed; ``retryable`` tells the CO whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True, refused: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        # The target answered and refused this node's login (iSCSI login status class 2:
        # authentication, authorization): every portal of the cluster would refuse it alike.
        self.refused = refused


@dataclass(frozen=True)
class AttachTarget:
    """Where a LUN lives, from ControllerPublish's publish_context."""

    volume_id: str
    portal: str
    target_iqn: str
    lun: int
    readonly: bool = False
    # The storage nodes' own iSCSI portals (publish_context ``portals``): one path each.
    portals: tuple[str, ...] = ()

    @classmethod
    def from_context(cls, volume_id: str, ctx: dict[str, str], *, readonly: bool = False) -> AttachTarget:
        portal = _portal_arg(ctx.get("portal", ""), "portal")
        portals = tuple(_portal_arg(p.strip(), "portals") for p in ctx.get("portals", "").split(",") if p.strip())
        iqn = ctx.get("targetIqn", "")
        lun_text = ctx.get("lun", "")
        if not is_iqn(iqn):
            raise ConnectorError(f"publish_context targetIqn {iqn!r} is not an IQN", retryable=False)
        if not lun_text.isdigit() or not 0 <= int(lun_text) <= 16383:
            raise ConnectorError(f"publish_context lun {lun_text!r} is not a LUN number", retryable=False)
        return cls(volume_id, portal, iqn, int(lun_text), readonly, portals)


def _portal_arg(portal: str, key: str) -> str:
    host, _, port = portal.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in "/?#@%, \t\n"):
        raise ConnectorError(f"publish_context {key} {portal!r} is not host:port", retryable=False)
    return portal


@dataclass
class Attachment:
    device: str
    data: dict[str, Any] = field(default_factory=dict)


class Connector(Protocol):
    name: str

    def missing(self) -> list[str]:
        """What this connector needs on the host and cannot find (empty when ready)."""

    def attach(
        self, target: AttachTarget, chap: Chap | None, checkpoint: Callable[[dict[str, Any]], None]
    ) -> Attachment:
        """Attach; ``checkpoint(data)`` persists what is on the host so far (undone by detach)."""

    def verify(self, device: str, data: dict[str, Any], volume_id: str) -> None:
        """Raise unless ``device`` is this volume's device node, answering as this volume."""

    def detach(self, target: AttachTarget, data: dict[str, Any], still_staged: list[AttachTarget]) -> None:
        """Tear everything down; ``still_staged`` are the node's other volumes (shared sessions)."""

    def resize(self, target: AttachTarget, data: dict[str, Any], size: int) -> int:
        """Make the device show the LUN's new size; returns the device size in bytes."""

    def condition(self, data: dict[str, Any], volume_id: str) -> str | None:
        """None when healthy, else what is wrong (session down, device gone...)."""

    def fail_io_if_lost(self, data: dict[str, Any], wait: bool = True) -> bool:
        """Bound I/O on a lost session: once it has been down for the replacement timeout, make
        the device's pending and future I/O fail. ``wait`` (teardown): wait out that time first;
        else (the session watch) only look. True when the device's I/O fails now."""
