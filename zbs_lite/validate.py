"""Input rules of the ZBS API (zbs-api.md), each failure a 400 naming the field and the rule.

Pure functions over decoded JSON, so they are tested without a server and the API layer
reads as a sequence of checks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from zbs_lite.errors import bad
from zbs_lite.model import BPS_UNIT_FIELDS, QOS_FIELDS

IQN_PREFIX = "iqn.2016-02.com.smartx:system:"
MAX_LUN_SIZE = 64 * 2**40
BLOCK_SIZE = 512
MAX_LUNS_PER_TARGET = 255
MAX_TARGETS = 4096
INT64_MAX = 2**63 - 1
BYTE_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40, "PB": 2**50}
BPS_UNITS = {"Bps": 1, "KBps": 2**10, "MBps": 2**20, "GBps": 2**30, "TBps": 2**40}
STRIPE_NUMS = (1, 2, 4, 8, 16, 32, 64, 128)
REPLICA_NUMS = (1, 2, 3)

# Target names become the last part of an IQN (max 223 bytes in RFC 3720).
_TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,%d}" % (223 - len(IQN_PREFIX) - 1))
_IQN = re.compile(r"iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[\x21-\x7e]*)?")
_EUI = re.compile(r"eui\.[0-9A-Fa-f]{16}")
_NAA = re.compile(r"naa\.[0-9A-Fa-f]{16}([0-9A-Fa-f]{16})?")
_CHAP_NAME = re.compile(r"[A-Za-z0-9.:-]+")
_ALNUM = re.compile(r"[A-Za-z0-9]+")
_OBJECT_NAME = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


def check_keys(obj: Any, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise bad(path, "expected an object")
    allowed_set = set(allowed)
    for key in obj:
        if key not in allowed_set:
            raise bad(f"{path}.{key}" if path else key, "unknown field")
    for key in required:
        if obj.get(key) is None:
            raise bad(f"{path}.{key}" if path else key, "is required")
    return obj


def get_str(obj: dict[str, Any], key: str, path: str, *, max_len: int = 4096, ascii_only: bool = True) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise bad(f"{path}.{key}", f"expected a string, got {type(v).__name__}")
    if len(v) > max_len:
        raise bad(f"{path}.{key}", f"at most {max_len} characters")
    if ascii_only and not v.isascii():
        raise bad(f"{path}.{key}", "ASCII characters only")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        raise bad(f"{path}.{key}", "no control characters")
    return v


def get_int(obj: dict[str, Any], key: str, path: str, *, lo: int = 0, hi: int = INT64_MAX) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise bad(f"{path}.{key}", f"expected an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise bad(f"{path}.{key}", f"must be between {lo} and {hi}")
    return v


def get_bool(obj: dict[str, Any], key: str, path: str) -> bool | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise bad(f"{path}.{key}", f"expected true or false, got {type(v).__name__}")
    return v


def target_name(obj: dict[str, Any], path: str) -> str:
    name = get_str(obj, "name", path) or ""
    low = name.lower()
    if not _TARGET_NAME.fullmatch(low):
        raise bad(
            f"{path}.name",
            f"target names are 1-{223 - len(IQN_PREFIX)} letters, digits, '-' and '.', starting with a letter or digit",
        )
    return low


def object_name(obj: dict[str, Any], key: str, path: str) -> str:
    """LUN and snapshot names: printable ASCII, no path separators, no '.'/'..'."""
    name = get_str(obj, key, path, max_len=255)
    if name is None:
        raise bad(f"{path}.{key}", "is required")
    if not _OBJECT_NAME.fullmatch(name) or "/" in name or "\\" in name or name in (".", ".."):
        raise bad(
            f"{path}.{key}",
            "1-255 printable ASCII characters, no '/' or '\\', not '.' or '..', no leading or trailing space",
        )
    return name


def is_iqn(value: str) -> bool:
    return bool(_IQN.fullmatch(value) or _EUI.fullmatch(value) or _NAA.fullmatch(value)) and len(value) <= 223


def iqn(value: Any, field: str) -> str:
    if not isinstance(value, str) or not is_iqn(value):
        raise bad(field, "not a valid iSCSI name (iqn.YYYY-MM.domain[:id], eui.<16 hex> or naa.<16|32 hex>)")
    return value


def iqn_list(value: str, field: str, *, allow_empty: bool) -> str:
    """``*/*`` (everyone), ``""`` (nobody, when allowed) or a comma list of IQNs."""
    if value == "*/*":
        return value
    if value == "":
        if allow_empty:
            return value
        raise bad(field, "must be '*/*' or a comma-separated list of IQNs")
    items = [v.strip() for v in value.split(",")]
    for item in items:
        iqn(item, field)
    if len(set(items)) != len(items):
        raise bad(field, "lists an IQN twice")
    return ",".join(items)


def ip_list(value: str, field: str) -> str:
    if value in ("*/*", ""):
        return value
    items = [v.strip() for v in value.split(",")]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise bad(field, f"{item!r} is not an IP address or CIDR (use '*/*' for all)") from None
    return ",".join(items)


def chap_name(value: Any, field: str, *, max_len: int) -> str:
    if not isinstance(value, str) or not _CHAP_NAME.fullmatch(value) or len(value) > max_len:
        raise bad(field, f"CHAP names are 1-{max_len} characters of letters, digits, '.', ':' and '-'")
    return value


def chap_secret(value: Any, field: str, *, lo: int, hi: int) -> str:
    if not isinstance(value, str) or not _ALNUM.fullmatch(value) or not lo <= len(value) <= hi:
        raise bad(field, f"CHAP secrets are {lo}-{hi} letters and digits")
    return value


def initiator_chaps(value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise bad(field, "expected a list of {initiator_iqn, chap_name, chap_secret}")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        p = f"{field}[{i}]"
        check_keys(
            item, p, ("initiator_iqn", "chap_name", "chap_secret"), ("initiator_iqn", "chap_name", "chap_secret")
        )
        name = iqn(item["initiator_iqn"], f"{p}.initiator_iqn")
        if name in seen:
            raise bad(f"{p}.initiator_iqn", "listed twice")
        seen.add(name)
        out.append(
            {
                "initiator_iqn": name,
                "chap_name": chap_name(item["chap_name"], f"{p}.chap_name", max_len=512),
                "chap_secret": chap_secret(item["chap_secret"], f"{p}.chap_secret", lo=12, hi=512),
            }
        )
    return out


def replica(obj: dict[str, Any], key: str, path: str) -> int | None:
    v = get_int(obj, key, path, lo=-INT64_MAX)
    if v is not None and v not in REPLICA_NUMS:
        raise bad(f"{path}.{key}", "must be 2 or 3 (zbs-lite also accepts 1)")
    return v


def stripe_num(obj: dict[str, Any], path: str) -> int | None:
    v = get_int(obj, "stripe_num", path, lo=-INT64_MAX)
    if v is not None and v not in STRIPE_NUMS:
        raise bad(f"{path}.stripe_num", "must be one of 1, 2, 4, 8, 16, 32, 64, 128")
    return v


def unit_size(obj: dict[str, Any], key: str, unit_key: str, path: str) -> int | None:
    v = get_int(obj, key, path, lo=-INT64_MAX)
    if v is None:
        return None
    unit = obj.get(unit_key)
    if unit is None:
        unit = "B"
    if unit not in BYTE_UNITS:
        raise bad(f"{path}.{unit_key}", "must be one of B, KB, MB, GB, TB, PB")
    if v <= 0:
        raise bad(f"{path}.{key}", "must be positive")
    size = v * BYTE_UNITS[unit]
    if size > INT64_MAX:
        raise bad(f"{path}.{key}", "too large")
    return size


def stripe_size(obj: dict[str, Any], path: str) -> int | None:
    size = unit_size(obj, "stripe_size", "stripe_size_unit", path)
    if size is not None and (size & (size - 1) or not 4096 <= size <= 262144):
        raise bad(f"{path}.stripe_size", "must be a power of two between 4 KiB and 256 KiB")
    return size


def lun_size(obj: dict[str, Any], path: str) -> int | None:
    """Whole 512-byte blocks (the LUN's logical block: READ CAPACITY counts in them), at most 64 TiB."""
    size = unit_size(obj, "assigned_size", "assigned_size_unit", path)
    if size is not None and size > MAX_LUN_SIZE:
        raise bad(f"{path}.assigned_size", "at most 64 TiB")
    if size is not None and size % BLOCK_SIZE:
        raise bad(f"{path}.assigned_size", f"must be a whole number of {BLOCK_SIZE}-byte blocks, got {size} bytes")
    return size


def qos(obj: dict[str, Any], path: str) -> dict[str, int]:
    """QoS limits as bytes or IOPS; ``*_unit`` fields scale the bps values."""
    out: dict[str, int] = {}
    for key in QOS_FIELDS:
        v = get_int(obj, key, path)
        if v is None:
            continue
        unit_key = f"{key}_unit"
        if key.startswith("bps") and not key.endswith("_length") and unit_key in BPS_UNIT_FIELDS:
            unit = obj.get(unit_key) or "Bps"
            if unit not in BPS_UNITS:
                raise bad(f"{path}.{unit_key}", "must be one of Bps, KBps, MBps, GBps, TBps")
            v *= BPS_UNITS[unit]
            if v > INT64_MAX:
                raise bad(f"{path}.{key}", "too large")
        out[key] = v
    for key in BPS_UNIT_FIELDS:
        if obj.get(key) is not None and obj[key] not in BPS_UNITS:
            raise bad(f"{path}.{key}", "must be one of Bps, KBps, MBps, GBps, TBps")
    return out
