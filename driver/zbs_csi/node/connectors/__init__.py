"""Connectors turn a published LUN into a local block device, and back."""

from __future__ import annotations

from ...config import Config
from ..runner import Runner
from .base import Attachment, AttachTarget, Chap, Connector, ConnectorError


def make_connector(cfg: Config, runner: Runner) -> Connector:
    if cfg.connector == "userspace":
        from .userspace import UserspaceConnector

        return UserspaceConnector(
            runner,
            cfg.state_dir,
            cfg.node_id,
            timeout=cfg.command_timeout,
            replacement_timeout=cfg.replacement_timeout,
        )
    from .kernel import KernelConnector

    return KernelConnector(runner, cfg.node_id, multipath=cfg.multipath)


__all__ = ["AttachTarget", "Attachment", "Chap", "Connector", "ConnectorError", "make_connector"]
