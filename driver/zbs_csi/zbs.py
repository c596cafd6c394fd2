"""The bridge to the shared ZBS client (plugins/module_utils), and its errors as gRPC codes.

Every ZBS rule the driver applies (names, sizes, striping, booleans, allowed initiators)
comes from the collection's module_utils through here, so the driver and the modules cannot
disagree on what ZBS accepts.
"""

from __future__ import annotations

import grpc

from .config import Config
from .errors import CsiError

try:
    from ansible_collections.smartx.zbs.plugins.module_utils import zbs_errors as zerr
    from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import (
        DEFAULT_STRIPE_NUM,
        DEFAULT_STRIPE_SIZE,
        ZbsClient,
        parse_bool,
    )
    from ansible_collections.smartx.zbs.plugins.module_utils.zbs_units import MAX_LUN_SIZE, format_size, round_up
    from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
        AllowedInitiators,
        format_allowed_initiators,
        parse_allowed_initiators,
        target_iqn,
        validate_chap_name,
        validate_chap_secret,
        validate_id,
        validate_replica_num,
        validate_stripe_num,
        validate_stripe_size,
    )
except ImportError as _exc:  # the collection is not installed next to the driver
    raise ImportError(
        "zbs-csi needs the smartx.zbs collection (ansible_collections.smartx.zbs) on the Python path"
    ) from _exc

__all__ = [
    "DEFAULT_STRIPE_NUM",
    "DEFAULT_STRIPE_SIZE",
    "MAX_LUN_SIZE",
    "AllowedInitiators",
    "ZbsClient",
    "format_allowed_initiators",
    "format_size",
    "make_client",
    "map_error",
    "parse_allowed_initiators",
    "parse_bool",
    "round_up",
    "target_iqn",
    "validate_chap_name",
    "validate_chap_secret",
    "validate_id",
    "validate_replica_num",
    "validate_stripe_num",
    "validate_stripe_size",
    "zerr",
]


def make_client(cfg: Config) -> ZbsClient:
    return ZbsClient(
        cfg.zbs_host,
        cfg.zbs_username,
        cfg.password(),
        validate_certs=cfg.zbs_validate_certs,
        ca_path=cfg.zbs_ca_path or None,
        timeout=cfg.zbs_timeout,
        wait_timeout=cfg.zbs_wait_timeout,
        poll_interval=0.2,
    )


def map_error(exc: Exception, doing: str) -> CsiError:
    """The gRPC status a ZBS client error becomes; the message keeps the API's own words."""
    code = grpc.StatusCode.INTERNAL
    if isinstance(exc, zerr.ZbsValidationError):
        code = grpc.StatusCode.INVALID_ARGUMENT
    elif isinstance(exc, zerr.ZbsNotFound):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(exc, zerr.ZbsAuthError):
        code = grpc.StatusCode.UNAUTHENTICATED
    elif isinstance(exc, zerr.ZbsConnectionError):
        code = grpc.StatusCode.UNAVAILABLE
    elif isinstance(exc, zerr.ZbsTaskTimeout):
        code = grpc.StatusCode.DEADLINE_EXCEEDED
    elif isinstance(exc, zerr.ZbsApiError) and (exc.status >= 500 or exc.status == 429):
        code = grpc.StatusCode.UNAVAILABLE  # 429: logins from this node back off; the sidecars retry
    return CsiError(code, f"{doing}: {exc}")
