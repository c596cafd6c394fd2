"""Whether a volume may be published at one more target path on this node (CSI spec tables).

The spec's second NodePublishVolume table, for a plugin with SINGLE_NODE_MULTI_WRITER:
SINGLE_NODE_MULTI_WRITER and MULTI_NODE_* volumes may be published at several target paths;
SINGLE_NODE_SINGLE_WRITER (Kubernetes' ReadWriteOncePod) and the older single-node modes
(SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY: "published once") may not, and a second
target path gets FAILED_PRECONDITION. A second publish with a different volume capability
is FAILED_PRECONDITION too; the same target path with different arguments is ALREADY_EXISTS.

The published paths come from the stage record persisted on the host, so the rule holds
across a plugin restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..caps import Mode
from ..errors import already_exists, precondition

SEVERAL_TARGET_PATHS = frozenset(
    {
        Mode.SINGLE_NODE_MULTI_WRITER,
        Mode.MULTI_NODE_READER_ONLY,
        Mode.MULTI_NODE_SINGLE_WRITER,
        Mode.MULTI_NODE_MULTI_WRITER,
    }
)

# The parts of a publish that make up its volume capability (readonly is not one of them).
CAPABILITY_KEYS = ("access_type", "mode", "flags")


def _mode_name(mode: int) -> str:
    try:
        return str(Mode.Mode.Name(mode))
    except ValueError:
        return str(mode)


def check_publish(
    volume_id: str, target_path: str, want: Mapping[str, Any], live: Mapping[str, Mapping[str, Any]]
) -> bool:
    """True when ``target_path`` already carries exactly this publish (nothing to do).

    ``want`` is the new publish (access_type, mode, flags, readonly); ``live`` maps the
    volume's target paths that are still mounted to what was published there. Raises
    ALREADY_EXISTS or FAILED_PRECONDITION per the spec's tables.
    """
    have = live.get(target_path)
    if have is not None:
        if dict(have) != dict(want):
            raise already_exists(f"volume {volume_id} is already published at {target_path} differently")
        return True
    for path, other in live.items():
        if any(other.get(k) != want.get(k) for k in CAPABILITY_KEYS):
            raise precondition(
                f"volume {volume_id} is published at {path} with another volume capability; unpublish it there first"
            )
        mode = int(want.get("mode", 0))
        if mode not in SEVERAL_TARGET_PATHS:
            raise precondition(
                f"volume {volume_id} is {_mode_name(mode)} and already published at {path}: "
                "it can be published at one target path only"
            )
    return False
