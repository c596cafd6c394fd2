"""Volume, snapshot and node identifiers: validated before they reach a path, command or API."""

from __future__ import annotations

import hashlib
import re

from .errors import invalid

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_IQN = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[A-Za-z0-9.:_-]+)?$")
_EUI = re.compile(r"^eui\.[0-9A-Fa-f]{16}$")

MAX_NAME_BYTES = 128


def is_uuid(value: str) -> bool:
    return bool(_UUID.match(value or ""))


def check_volume_id(value: str) -> str:
    """Volume ids are LUN local_ids (UUIDs); anything else can never name one of ours."""
    if not is_uuid(value):
        raise invalid(f"malformed volume id {value[:80]!r}")
    return value


def is_iqn(value: str) -> bool:
    return len(value or "") <= 223 and bool(_IQN.match(value or "") or _EUI.match(value or ""))


def lun_name_for(csi_name: str) -> str:
    """The LUN name for a CSI volume/snapshot name: readable prefix + a hash of the whole name.

    CSI names are arbitrary UTF-8 up to 128 bytes; ZBS names are not. The hash keeps two
    different CSI names from ever mapping to one LUN, and the mapping is deterministic so a
    retried CreateVolume finds the LUN its first attempt made.
    """
    readable = re.sub(r"[^a-z0-9-]+", "-", csi_name.lower()).strip("-")[:40].strip("-") or "vol"
    digest = hashlib.sha256(csi_name.encode("utf-8")).hexdigest()[:20]
    return f"{readable}-{digest}"
