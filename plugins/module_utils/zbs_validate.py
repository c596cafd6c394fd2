# Copyright: (c) 2026, SmartX
# Simplified BSD License (see https://opensource.org/licenses/BSD-2-Clause)
"""Input rules of ZBS, checked before anything reaches the API.

Modules and the CSI driver share these so a bad name fails in the same words everywhere,
early (before a half-done change) and without a round trip. Each validator returns the
normalised value (target names are lower-case in ZBS) or raises
:class:`ZbsValidationError` naming the field and the rule. Error messages never repeat a
CHAP secret.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import FrozenSet, Iterable, Optional, Union

from .zbs_errors import ZbsValidationError
from .zbs_units import LUN_BLOCK_SIZE, MAX_LUN_SIZE, SizeLike, format_size, parse_size

#: Prefix of every target IQN ZBS creates.
TARGET_IQN_PREFIX = "iqn.2016-02.com.smartx:system:"
#: The ``allowed_initiators``/whitelist value meaning "everybody".
ALLOW_ALL = "*/*"

IQN_MAX_LEN = 223
TARGET_NAME_MAX_LEN = IQN_MAX_LEN - len(TARGET_IQN_PREFIX)
NAME_MAX_LEN = 255
STRIPE_NUMS = (1, 2, 4, 8, 16, 32, 64, 128)
STRIPE_SIZE_MIN = 4 << 10
STRIPE_SIZE_MAX = 256 << 10
REPLICA_NUMS = (1, 2, 3)
LUN_ID_MIN, LUN_ID_MAX = 1, 255

_TARGET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_OBJECT_NAME_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")
_IQN_RE = re.compile(
    r"^iqn\.[0-9]{4}-(0[1-9]|1[0-2])"  # date the naming authority owned the domain
    r"\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"  # reversed domain
    r"(:[\x21-\x2b\x2d-\x7e]*)?$"  # optional unique string: printable, no comma (lists use it)
)
_EUI_RE = re.compile(r"^eui\.[0-9A-Fa-f]{16}$")
_NAA_RE = re.compile(r"^naa\.[0-9A-Fa-f]{16}([0-9A-Fa-f]{16})?$")
_CHAP_NAME_RE = re.compile(r"^[A-Za-z0-9.:-]+$")
_CHAP_SECRET_RE = re.compile(r"^[A-Za-z0-9]+$")


def _require_str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ZbsValidationError(field, f"must be a string, got {type(value).__name__}")
    return value


def validate_target_name(name: str, field: str = "name") -> str:
    """A target name: letters, digits, ``-`` and ``.``; starts with a letter or digit; lower-cased.

    Short enough that ``iqn.2016-02.com.smartx:system:<name>`` fits the 223-byte IQN limit.
    """
    value = _require_str(name, field).lower()
    if not value:
        raise ZbsValidationError(field, "target name must not be empty")
    if len(value) > TARGET_NAME_MAX_LEN:
        raise ZbsValidationError(field, f"target name is longer than {TARGET_NAME_MAX_LEN} characters")
    if not _TARGET_NAME_RE.match(value):
        raise ZbsValidationError(
            field, f"target name {value!r} may hold only letters, digits, '-' and '.', starting with a letter or digit"
        )
    return value


def _validate_object_name(name: str, field: str, kind: str) -> str:
    value = _require_str(name, field)
    if not value:
        raise ZbsValidationError(field, f"{kind} name must not be empty")
    if len(value) > NAME_MAX_LEN:
        raise ZbsValidationError(field, f"{kind} name is longer than {NAME_MAX_LEN} characters")
    if not _OBJECT_NAME_RE.match(value) or "/" in value or "\\" in value or value in (".", ".."):
        raise ZbsValidationError(
            field,
            f"{kind} name {value!r} must be printable ASCII without '/' or '\\', not '.' or '..', "
            "and without leading or trailing spaces",
        )
    return value


def validate_lun_name(name: str, field: str = "name") -> str:
    """A LUN name (kept as given): 1-255 printable ASCII characters; never path-like."""
    return _validate_object_name(name, field, "LUN")


def validate_snapshot_name(name: str, field: str = "name") -> str:
    """A snapshot name, same rules as a LUN name."""
    return _validate_object_name(name, field, "snapshot")


def validate_iqn(iqn: str, field: str = "iqn") -> str:
    """An iSCSI name (``iqn.``, ``eui.`` or ``naa.`` form, RFC 3720/3721), kept as given.

    Not lower-cased: targets compare initiator names byte for byte, so the client must
    store what the initiator will send.
    """
    value = _require_str(iqn, field).strip()
    if not value:
        raise ZbsValidationError(field, "iSCSI name must not be empty")
    if len(value.encode()) > IQN_MAX_LEN:
        raise ZbsValidationError(field, f"iSCSI name is longer than {IQN_MAX_LEN} bytes")
    if not (_IQN_RE.match(value) or _EUI_RE.match(value) or _NAA_RE.match(value)):
        raise ZbsValidationError(
            field, f"{value!r} is not an iSCSI name such as iqn.2004-10.com.example:host1, eui.<16 hex> or naa.<hex>"
        )
    return value


def target_iqn(name: str) -> str:
    """The IQN ZBS gives the target called ``name``."""
    return TARGET_IQN_PREFIX + validate_target_name(name)


def validate_chap_name(name: str, *, initiator: bool = False, field: str = "chap_name") -> str:
    """A CHAP user name: 1-223 (target) or 1-512 (initiator) chars of letters, digits, ``. : -``."""
    value = _require_str(name, field)
    limit = 512 if initiator else 223
    if not value or len(value) > limit:
        raise ZbsValidationError(field, f"CHAP name must be 1-{limit} characters long")
    if not _CHAP_NAME_RE.match(value):
        raise ZbsValidationError(field, "CHAP name may hold only letters, digits, '.', ':' and '-'")
    return value


def validate_chap_secret(secret: str, *, initiator: bool = False, field: str = "chap_secret") -> str:
    """A CHAP secret: 12-16 (target) or 12-512 (initiator) letters and digits. Never echoed."""
    if not isinstance(secret, str):
        raise ZbsValidationError(field, "CHAP secret must be a string")
    limit = 512 if initiator else 16
    if not 12 <= len(secret) <= limit:
        raise ZbsValidationError(field, f"CHAP secret must be 12-{limit} characters long (got {len(secret)})")
    if not _CHAP_SECRET_RE.match(secret):
        raise ZbsValidationError(field, "CHAP secret may hold only letters and digits")
    return secret


def validate_replica_num(value: int, field: str = "replica_num") -> int:
    """Replica count: 2 or 3 on ZBS (1 accepted for single-host zbs-lite)."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in REPLICA_NUMS:
        raise ZbsValidationError(field, f"must be one of {', '.join(map(str, REPLICA_NUMS))}, got {value!r}")
    return value


def validate_stripe_num(value: int, field: str = "stripe_num") -> int:
    """Stripe count: a power of two from 1 to 128."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in STRIPE_NUMS:
        raise ZbsValidationError(field, f"must be one of {', '.join(map(str, STRIPE_NUMS))}, got {value!r}")
    return value


def validate_stripe_size(value: SizeLike, field: str = "stripe_size") -> int:
    """Stripe size in bytes: a power of two from 4 KiB to 256 KiB."""
    size = parse_size(value, field)
    if not STRIPE_SIZE_MIN <= size <= STRIPE_SIZE_MAX or size & (size - 1):
        raise ZbsValidationError(field, f"must be a power of two from 4KiB to 256KiB, got {size}")
    return size


def validate_lun_size(value: SizeLike, field: str = "size") -> int:
    """A LUN size in bytes: whole 512-byte blocks (what READ CAPACITY reports), positive, at most 64 TiB."""
    size = parse_size(value, field)
    if size % LUN_BLOCK_SIZE:
        raise ZbsValidationError(field, f"LUN sizes are whole {LUN_BLOCK_SIZE}-byte blocks, got {size} bytes")
    if size <= 0:
        raise ZbsValidationError(field, "LUN size must be greater than zero")
    if size > MAX_LUN_SIZE:
        raise ZbsValidationError(
            field, f"LUN size {format_size(size)} ({size} bytes) is above the {format_size(MAX_LUN_SIZE)} maximum"
        )
    return size


def validate_lun_id(value: int, field: str = "lun_id") -> int:
    """A LUN number within its target: 1-255."""
    if isinstance(value, bool) or not isinstance(value, int) or not LUN_ID_MIN <= value <= LUN_ID_MAX:
        raise ZbsValidationError(field, f"must be an integer from {LUN_ID_MIN} to {LUN_ID_MAX}, got {value!r}")
    return value


def validate_ip_whitelist(value: str, field: str = "ip_whitelist") -> str:
    """``*/*`` or a comma list of IP addresses and CIDR networks, normalised."""
    text = _require_str(value, field).strip()
    if text == ALLOW_ALL:
        return ALLOW_ALL
    if not text:
        return ""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            out.append(
                str(ipaddress.ip_network(item, strict=False)) if "/" in item else str(ipaddress.ip_address(item))
            )
        except ValueError as exc:
            raise ZbsValidationError(field, f"{item!r} is not an IP address or CIDR network") from exc
    return ",".join(out)


@dataclass(frozen=True)
class AllowedInitiators:
    """Who may see a LUN: everybody (``*/*`` or absent), nobody (``""``) or a set of IQNs."""

    kind: str  # "all" | "none" | "set"
    iqns: FrozenSet[str] = frozenset()

    def allows(self, iqn: str) -> bool:
        if self.kind == "all":
            return True
        return iqn.strip() in self.iqns

    def with_added(self, iqn: str) -> AllowedInitiators:
        """This set plus ``iqn`` (a no-op when everybody is allowed)."""
        if self.kind == "all":
            return self
        return AllowedInitiators("set", self.iqns | {validate_iqn(iqn, "allowed_initiators")})

    def without(self, iqn: str) -> AllowedInitiators:
        """This set minus ``iqn``; removing the last IQN leaves nobody allowed."""
        if self.kind != "set":
            return self
        rest = self.iqns - {iqn.strip()}
        return AllowedInitiators("set", rest) if rest else AllowedInitiators("none")


def parse_allowed_initiators(value: Optional[str], field: str = "allowed_initiators") -> AllowedInitiators:
    """Read the API's ``allowed_initiators`` string: None/``*/*`` = all, ``""`` = none, else IQNs."""
    if value is None:
        return AllowedInitiators("all")
    text = _require_str(value, field).strip()
    if text == ALLOW_ALL:
        return AllowedInitiators("all")
    if not text:
        return AllowedInitiators("none")
    iqns = set()
    for item in text.split(","):
        if not item.strip():
            raise ZbsValidationError(field, f"empty entry in the IQN list {text!r}")
        iqns.add(validate_iqn(item, field))
    return AllowedInitiators("set", frozenset(iqns))


def format_allowed_initiators(value: Union[AllowedInitiators, Iterable[str], None]) -> str:
    """The API string for an :class:`AllowedInitiators`, or for an iterable of IQNs (sorted, deduplicated)."""
    if value is None:
        return ALLOW_ALL
    if isinstance(value, str):
        return format_allowed_initiators(parse_allowed_initiators(value))
    if isinstance(value, AllowedInitiators):
        if value.kind == "all":
            return ALLOW_ALL
        if value.kind == "none":
            return ""
        return ",".join(sorted(value.iqns))
    iqns = sorted({validate_iqn(i, "allowed_initiators") for i in value})
    return ",".join(iqns)


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def validate_id(value: str, field: str = "id") -> str:
    """An opaque API id (cuid, UUID): 1-128 ASCII letters, digits, ``. _ : -``; nothing path-like."""
    text = _require_str(value, field)
    if not _ID_RE.match(text) or ".." in text:
        raise ZbsValidationError(
            field, f"{text[:40]!r} is not a valid id (1-128 ASCII letters, digits, '.', '_', ':', '-')"
        )
    return text
