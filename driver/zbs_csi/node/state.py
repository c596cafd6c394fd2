"""Stage state persisted on the host, so unstage, expand and stats survive a plugin restart.

One JSON file per staged volume, written atomically (temp file, fsync, rename). The volume
id is validated before it becomes part of a path.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..ids import check_volume_id

log = logging.getLogger(__name__)


@dataclass
class StageRecord:
    volume_id: str
    staging_path: str
    access_type: str  # "mount" | "block"
    fs_type: str = ""
    mount_flags: list[str] = field(default_factory=list)
    readonly: bool = False
    access_mode: int = 0
    device: str = ""
    connector: str = ""
    attach: dict[str, Any] = field(default_factory=dict)
    publish_context: dict[str, str] = field(default_factory=dict)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    complete: bool = False


class StateStore:
    def __init__(self, root: str) -> None:
        self.dir = Path(root) / "volumes"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, volume_id: str) -> Path:
        return self.dir / f"{check_volume_id(volume_id)}.json"

    def get(self, volume_id: str) -> StageRecord | None:
        try:
            data = json.loads(self._path(volume_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return StageRecord(**data)

    def put(self, rec: StageRecord) -> None:
        path = self._path(rec.volume_id)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(rec), fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, volume_id: str) -> None:
        self._path(volume_id).unlink(missing_ok=True)

    def all(self) -> list[StageRecord]:
        out = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                out.append(StageRecord(**json.loads(p.read_text(encoding="utf-8"))))
            except FileNotFoundError:
                continue  # unstaged by another operation while we listed
            except (ValueError, TypeError):
                log.warning("ignoring an unreadable stage record %s", p)
        return out
