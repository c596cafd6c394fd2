"""What is mounted where, read from /proc/self/mountinfo (parsing separated from reading)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    root: str
    source: str
    fs_type: str
    options: tuple[str, ...]
    major_minor: str

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10 or "-" not in parts:
            continue
        sep = parts.index("-")
        entries.append(
            MountEntry(
                mount_point=_unescape(parts[4]),
                root=_unescape(parts[3]),
                source=_unescape(parts[sep + 2]),
                fs_type=parts[sep + 1],
                options=tuple(parts[5].split(",")),
                major_minor=parts[2],
            )
        )
    return entries


def read_mounts(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    return parse_mountinfo(Path(path).read_text(encoding="utf-8"))


def find_mount(mount_point: str, entries: list[MountEntry] | None = None) -> MountEntry | None:
    """The topmost mount at ``mount_point`` (the last one listed wins)."""
    target = str(Path(mount_point))
    found = None
    for e in entries if entries is not None else read_mounts():
        if e.mount_point == target:
            found = e
    return found
