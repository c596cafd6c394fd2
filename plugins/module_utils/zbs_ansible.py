# Copyright: (c) 2026, SmartX
# Simplified BSD License (see https://opensource.org/licenses/BSD-2-Clause)
"""Ansible glue for the smartx.zbs API modules.

The connection options are declared once in ``CONNECTION_OPTIONS`` (the doc fragment
``smartx.zbs.zbs`` documents the same table); every module builds its argument spec, its
client, its diff and its failures through here, so all modules behave alike. The client
itself (``zbs_client``) never imports ``ansible``: the CSI driver uses it too.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import (
    ZbsApiError,
    ZbsError,
    ZbsTaskTimeout,
    ZbsValidationError,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import validate_target_name

try:
    from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import (
        HAS_REQUESTS,
        REQUESTS_IMPORT_ERROR,
        ZbsClient,
    )

    CLIENT_IMPORT_ERROR: Optional[str] = None
except ImportError:
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = None
    ZbsClient = None  # type: ignore[assignment,misc,unused-ignore]
    CLIENT_IMPORT_ERROR = traceback.format_exc()

#: Stands in for every secret the API shows (CHAP secrets) in module output and diffs.
REDACTED = "********"


@dataclass(frozen=True)
class ConnectionOption:
    """One connection option: argument spec entry plus its environment fallback."""

    name: str
    type: str
    env: str
    required: bool = False
    default: Any = None
    no_log: bool = False

    def spec(self) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"type": self.type, "fallback": (env_fallback, [self.env])}
        if self.required:
            entry["required"] = True
        if self.default is not None:
            entry["default"] = self.default
        if self.no_log:
            entry["no_log"] = True
        return entry


CONNECTION_OPTIONS = (
    ConnectionOption("host", "str", "ZBS_HOST", required=True),
    ConnectionOption("username", "str", "ZBS_USERNAME", required=True),
    ConnectionOption("password", "str", "ZBS_PASSWORD", required=True, no_log=True),
    ConnectionOption("validate_certs", "bool", "ZBS_VALIDATE_CERTS", default=True),
    ConnectionOption("ca_path", "path", "ZBS_CA_PATH"),
    ConnectionOption("timeout", "float", "ZBS_TIMEOUT", default=30.0),
    ConnectionOption("connect_timeout", "float", "ZBS_CONNECT_TIMEOUT", default=10.0),
)


# QoS limits as the API names them on targets (defaults) and LUNs; 0 or null means unlimited.
QOS_FIELDS = ("iops", "iops_rd", "iops_wr", "bps", "bps_rd", "bps_wr")


def qos_argument_spec() -> Dict[str, Any]:
    """Argument spec of the ``qos`` option of zbs_target and zbs_lun."""
    return {"type": "dict", "options": {q: {"type": "int"} for q in QOS_FIELDS}}


def connection_argument_spec() -> Dict[str, Any]:
    """Argument spec of the shared connection options (plus ``wait_timeout``)."""
    spec = {opt.name: opt.spec() for opt in CONNECTION_OPTIONS}
    spec["wait_timeout"] = {"type": "float", "default": 300.0}
    return spec


def zbs_module(argument_spec: Dict[str, Any], **kwargs: Any) -> AnsibleModule:
    """An AnsibleModule with the connection options added; check mode is always supported."""
    spec = connection_argument_spec()
    spec.update(argument_spec)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **kwargs)
    if CLIENT_IMPORT_ERROR is not None:
        module.fail_json(msg="cannot load the smartx.zbs API client", exception=CLIENT_IMPORT_ERROR)
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
    return module


def zbs_client(module: AnsibleModule) -> ZbsClient:
    """The shared API client configured from the module's connection options."""
    p = module.params
    return ZbsClient(
        p["host"],
        p["username"],
        p["password"],
        validate_certs=p["validate_certs"],
        ca_path=p["ca_path"],
        timeout=p["timeout"],
        connect_timeout=p["connect_timeout"],
        wait_timeout=p["wait_timeout"],
    )


def run(module: AnsibleModule, body: Callable[[], Dict[str, Any]]) -> None:
    """Run ``body`` and exit with its result, or fail with "<operation> <object>: <API message>"."""
    try:
        result = body()
    except ZbsValidationError as exc:
        module.fail_json(msg=str(exc), field=exc.field)
    except ZbsApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, path=exc.path, code=exc.code, request_id=exc.request_id)
    except ZbsTaskTimeout as exc:
        # The API accepted the change and started it: the cluster may already show it.
        module.fail_json(
            msg=f"{exc}; the change was accepted and may still finish - read the object before retrying",
            changed=True,
            task_id=exc.task_id,
        )
    except ZbsError as exc:
        module.fail_json(msg=str(exc), **{k: v for k, v in _error_extras(exc).items() if v is not None})
    module.exit_json(**result)


def _error_extras(exc: ZbsError) -> Dict[str, Any]:
    return {"task_id": getattr(exc, "task_id", None), "error_code": getattr(exc, "error_code", None)}


def fail_field(field: str, message: str, operation: str, obj: str) -> NoReturn:
    """Raise the validation error a module reports for input it refuses before any write."""
    raise ZbsValidationError(field, message, operation=operation, object=obj)


def target_name(value: str, field: str = "target") -> str:
    """A target name as the modules take it: valid and already lower-case.

    ZBS stores target names in lower case; accepting ``My-Target`` would hand back
    ``my-target``, so the modules ask for the name as it will be stored.
    """
    name = validate_target_name(value, field)
    if value != name:
        raise ZbsValidationError(field, f"target names are lower-case in ZBS: write {name!r}, not {value!r}")
    return name


def changed_fields(
    current: Mapping[str, Any], desired: Mapping[str, Any], null_means: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """The desired fields (those not None) whose value differs from the current resource.

    ``null_means`` gives what the API's null stands for in a field (no QoS limit = 0, no
    description = ""), so asking for that value explicitly is no change.
    """
    nulls = null_means or {}
    out = {}
    for key, want in desired.items():
        have = current.get(key)
        if have is None:
            have = nulls.get(key)
        if want is not None and have != want:
            out[key] = want
    return out


def check_immutable(
    current: Mapping[str, Any], desired: Mapping[str, Any], fields: Iterable[str], operation: str, obj: str
) -> None:
    """Fail naming the first field that differs but cannot be changed on an existing object."""
    for field in fields:
        want = desired.get(field)
        if want is not None and current.get(field) is not None and current.get(field) != want:
            fail_field(
                field,
                f"cannot be changed on an existing object (is {current.get(field)!r}, requested {want!r})",
                operation,
                obj,
            )


def redact(resource: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """A copy of an API resource with every CHAP secret replaced by ``REDACTED``."""
    if resource is None:
        return None
    out = dict(resource)
    if out.get("chap_secret"):
        out["chap_secret"] = REDACTED
    chaps = out.get("initiator_chaps")
    if isinstance(chaps, list):
        out["initiator_chaps"] = [
            dict(c, chap_secret=REDACTED) if isinstance(c, dict) and c.get("chap_secret") else c for c in chaps
        ]
    return out


def qos_zero(resource: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """A copy with every QoS limit the API shows as null (no limit, on targets) shown as 0, as on LUNs."""
    if resource is None:
        return None
    return {k: (0 if k in QOS_FIELDS and v is None else v) for k, v in resource.items()}


def result(module: AnsibleModule, changed: bool, before: Any, after: Any, **extra: Any) -> Dict[str, Any]:
    """The module result; ``diff`` only when the user asked for it (``--diff``)."""
    out: Dict[str, Any] = {"changed": changed}
    out.update(extra)
    if module._diff:
        out["diff"] = {"before": before if before is not None else {}, "after": after if after is not None else {}}
    return out


def option_list(values: Optional[List[str]]) -> Optional[str]:
    """A comma list for the API from a list option (``None`` stays unset)."""
    if values is None:
        return None
    return ",".join(v.strip() for v in values if v.strip())
