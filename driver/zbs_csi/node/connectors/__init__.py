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
            replacement_timeout=cfg.iscsi_replacement_timeout,
        )
    from .kernel import KernelConnector, SessionTuning

    tuning = SessionTuning(cfg.iscsi_queue_depth, cfg.iscsi_cmds_max, cfg.iscsi_replacement_timeout)
    return KernelConnector(runner, cfg.node_id, multipath=cfg.multipath, tuning=tuning)


__all__ = ["AttachTarget", "Attachment", "Chap", "Connector", "ConnectorError", "make_connector"]
