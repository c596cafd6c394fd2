# Copyright: (c) 2026, SmartX
# Simplified BSD License (see https://opensource.org/licenses/BSD-2-Clause)
"""Byte sizes as users write them and as ZBS stores them.

ZBS counts in binary multiples whatever the suffix says (``1GB`` in its UI is 2**30 bytes),
so ``"10G"``, ``"10GB"`` and ``"10GiB"`` all mean 10 * 2**30 here too. A size that is not
a whole number of bytes is refused rather than silently truncated.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Union

from .zbs_errors import ZbsValidationError

_UNITS = {"": 0, "B": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGTPE])(?:IB|I|B)?|(B)?)\s*$", re.IGNORECASE)
_FORMAT_UNITS = ("PiB", "TiB", "GiB", "MiB", "KiB")

#: The unit names the API's ``assigned_size_unit`` understands, with their factor.
API_BYTE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}

#: Largest LUN ZBS allows.
MAX_LUN_SIZE = 64 << 40

#: LUN sizes are whole logical blocks of this many bytes (zbs-lite refuses others; see docs/zbs-lite.md).
LUN_BLOCK_SIZE = 512

SizeLike = Union[int, str]


def parse_size(value: SizeLike, field: str = "size") -> int:
    """Bytes from ``1024``, ``"1024"``, ``"512MiB"``, ``"10G"``, ``"1TB"``, ``"1.5GiB"``, ``"10Gi"``.

    Raises :class:`ZbsValidationError` naming ``field`` for negatives, fractions of a byte,
    unknown suffixes and non-numbers (``bool`` included, which Python would treat as 0/1).
    """
    if isinstance(value, bool):
        raise ZbsValidationError(field, f"expected a size such as 10GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ZbsValidationError(field, f"size must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ZbsValidationError(field, f"expected a size such as 10GiB, got {type(value).__name__}")
    match = _SIZE_RE.match(value)
    if not match:
        raise ZbsValidationError(
            field, f"cannot parse size {value!r}: use a number with an optional unit B, KiB, MiB, GiB, TiB, PiB"
        )
    number, prefix = match.group(1), match.group(2)
    try:
        amount = Decimal(number) * (1 << (10 * _UNITS[(prefix or "").upper()]))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ZbsValidationError(field, f"cannot parse size {value!r}") from exc
    if amount != amount.to_integral_value():
        raise ZbsValidationError(field, f"size {value!r} is not a whole number of bytes")
    return int(amount)


def format_size(size: int) -> str:
    """The shortest exact binary form: ``10737418240 -> "10GiB"``, ``1536 MiB`` stays ``"1536MiB"``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ZbsValidationError("size", f"expected a non-negative number of bytes, got {size!r}")
    for i, unit in enumerate(_FORMAT_UNITS):
        factor = 1 << (10 * (len(_FORMAT_UNITS) - i))
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def round_up(n: int, granularity: int) -> int:
    """``n`` rounded up to a multiple of ``granularity`` (CSI capacity rounding); 0 stays 0."""
    if granularity <= 0:
        raise ZbsValidationError("granularity", f"must be positive, got {granularity}")
    if n < 0:
        raise ZbsValidationError("size", f"size must not be negative, got {n}")
    return -(-n // granularity) * granularity
