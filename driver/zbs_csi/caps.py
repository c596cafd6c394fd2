"""Volume capabilities: which access type / mode / fs combinations the driver supports."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import invalid
from .proto import csi_pb2 as csi

Mode = csi.VolumeCapability.AccessMode

SINGLE_NODE = {
    Mode.SINGLE_NODE_WRITER,
    Mode.SINGLE_NODE_READER_ONLY,
    Mode.SINGLE_NODE_SINGLE_WRITER,
    Mode.SINGLE_NODE_MULTI_WRITER,
}
READ_ONLY = {Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY}
MOUNT_MODES = SINGLE_NODE | {Mode.MULTI_NODE_READER_ONLY}
BLOCK_MODES = SINGLE_NODE | {Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER, Mode.MULTI_NODE_MULTI_WRITER}
# ext2 and ext3 because SmartX's driver offers them: its volumes must stage after a migration.
FS_TYPES = ("ext2", "ext3", "ext4", "xfs")


@dataclass(frozen=True)
class Capability:
    access_type: str  # "mount" | "block"
    mode: int
    fs_type: str = ""
    mount_flags: tuple[str, ...] = ()

    @property
    def readonly(self) -> bool:
        return self.mode in READ_ONLY

    @property
    def multi_node(self) -> bool:
        return self.mode not in SINGLE_NODE


def unsupported_reason(cap: csi.VolumeCapability) -> str | None:
    """Why ``cap`` cannot be served, or None when it can."""
    mode = cap.access_mode.mode
    if not cap.HasField("access_mode") or mode == Mode.UNKNOWN:
        return "access mode is missing"
    if cap.HasField("block"):
        return None if mode in BLOCK_MODES else f"access mode {Mode.Mode.Name(mode)} is not supported for block volumes"
    if cap.HasField("mount"):
        if mode not in MOUNT_MODES:
            return f"access mode {Mode.Mode.Name(mode)} is not supported for filesystem volumes (use block)"
        fs = cap.mount.fs_type
        if fs and fs not in FS_TYPES:
            return f"filesystem {fs!r} is not supported ({', '.join(FS_TYPES)})"
        for flag in cap.mount.mount_flags:
            if not flag or any(c in flag for c in "\n\0") or flag.startswith("-"):
                return f"mount flag {flag!r} is not valid"
        return None
    return "access type (mount or block) is missing"


def parse(cap: csi.VolumeCapability, default_fs: str = "ext4") -> Capability:
    reason = unsupported_reason(cap)
    if reason:
        raise invalid(reason)
    if cap.HasField("block"):
        return Capability("block", cap.access_mode.mode)
    return Capability("mount", cap.access_mode.mode, cap.mount.fs_type or default_fs, tuple(cap.mount.mount_flags))


def check_all(caps: list[csi.VolumeCapability]) -> None:
    if not caps:
        raise invalid("volume_capabilities is required")
    for cap in caps:
        reason = unsupported_reason(cap)
        if reason:
            raise invalid(reason)
