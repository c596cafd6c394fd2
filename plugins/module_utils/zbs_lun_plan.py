# Copyright: (c) 2026, SmartX
# Simplified BSD License (see https://opensource.org/licenses/BSD-2-Clause)
"""How a LUN's desired state becomes an ``update-iscsi-lun`` change, shared by zbs_lun and zbs_luns.

One place for the LUN rules a module enforces before it writes: sizes only grow (a smaller
request is warned about, ignored or refused, per ``smaller_size``), ``replica_num`` only goes
up, ``thin_provision`` and ``lun_id`` cannot change, ``["*"]`` is the only way to open a LUN
to everybody, and QoS null means 0.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    QOS_FIELDS,
    changed_fields,
    check_immutable,
    fail_field,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_units import format_size
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    ALLOW_ALL,
    AllowedInitiators,
    format_allowed_initiators,
    parse_allowed_initiators,
    validate_iqn,
)

#: What the API's null stands for, so asking for that value is no change.
NULL_MEANS = dict.fromkeys(QOS_FIELDS, 0)
#: The fields a diff shows.
VIEW_FIELDS = ("name", "lun_id", "assigned_size", "replica_num", "thin_provision", "allowed_initiators", *QOS_FIELDS)
#: How a task spells "every initiator" (``*/*`` is the API's own spelling, accepted too).
EVERYONE = ("*", ALLOW_ALL)
#: The choices of the modules' ``smaller_size`` option.
SMALLER_SIZE_CHOICES = ["warn", "ignore", "fail"]


def split_access(items: List[str], field: str, op: str, obj: str) -> Tuple[bool, FrozenSet[str]]:
    """(everyone, IQNs) of an ``allowed_initiators`` option; every IQN validated."""
    names = [i.strip() for i in items if i.strip()]
    everyone = any(i in EVERYONE for i in names)
    iqns = frozenset(validate_iqn(i, field) for i in names if i not in EVERYONE)
    if everyone and iqns:
        fail_field(field, "'*' admits everyone and cannot be combined with IQNs", op, obj)
    return everyone, iqns


def exact_access(items: Optional[List[str]], field: str, op: str, obj: str) -> Optional[str]:
    """The API string for an exact ``allowed_initiators`` list (None = not managed)."""
    if items is None:
        return None
    everyone, iqns = split_access(items, field, op, obj)
    if everyone:
        return ALLOW_ALL
    return format_allowed_initiators(AllowedInitiators("set", iqns) if iqns else AllowedInitiators("none"))


def access_differs(current: Mapping[str, Any], access: str) -> bool:
    """Whether the LUN's list is not ``access`` (compared as sets; the API's absent list is everybody)."""
    have = current.get("allowed_initiators")
    return format_allowed_initiators(parse_allowed_initiators(have) if have is not None else None) != access


def grow_only(module: Any, want: Optional[int], have: Any, obj: str) -> Optional[int]:
    """The size to ask for: ``want``, or None when it is below ``have`` (ZBS cannot shrink).

    Below ``have``, the module's ``smaller_size`` decides: warn and keep, keep silently, or fail.
    """
    if want is None or not isinstance(have, int) or want >= have:
        return want
    why = f"requested {format_size(want)} is smaller than the current {format_size(have)}; ZBS cannot shrink a LUN"
    policy = module.params["smaller_size"]
    if policy == "fail":
        fail_field("size", f"{why} (smaller_size=fail)", "update-iscsi-lun", obj)
    if policy == "warn":
        module.warn(f"{obj}: {why}, so it stays {format_size(have)} (smaller_size=ignore silences this)")
    return None


def settings_update(module: Any, current: Mapping[str, Any], want: Mapping[str, Any], obj: str) -> Dict[str, Any]:
    """The size, replica and QoS part of the update that brings ``current`` to ``want``.

    ``want`` holds API fields, None where the task leaves a field alone. Refuses immutable
    changes and a lower ``replica_num``.
    """
    check_immutable(current, want, ("thin_provision", "lun_id"), "update-iscsi-lun", obj)
    replica, have_replica = want.get("replica_num"), current.get("replica_num")
    if replica is not None and isinstance(have_replica, int) and replica < have_replica:
        fail_field(
            "replica_num",
            f"may only go up: requested {replica} is below the current {have_replica}",
            "update-iscsi-lun",
            obj,
        )
    comparable = {k: want.get(k) for k in ("replica_num", *QOS_FIELDS)}
    comparable["assigned_size"] = grow_only(module, want.get("assigned_size"), current.get("assigned_size"), obj)
    return changed_fields(current, comparable, NULL_MEANS)


def lun_view(lun: Mapping[str, Any]) -> Dict[str, Any]:
    """The fields a diff shows, plus the size in a readable unit."""
    view = {k: lun.get(k) for k in VIEW_FIELDS if k in lun}
    if isinstance(lun.get("assigned_size"), int):
        view["size"] = format_size(lun["assigned_size"])
    return view
