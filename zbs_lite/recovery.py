"""After an unclean stop: make the pool's files match the metadata before anything is served."""

from __future__ import annotations

import logging

from zbs_lite.db import Database
from zbs_lite.storage import Pool

log = logging.getLogger(__name__)


def reconcile(db: Database, pool: Pool) -> dict[str, int]:
    """Remove files no row owns and report LUNs whose file was made and is gone; returns the counts."""
    with db.read() as conn:
        luns = {r["local_id"]: r for r in conn.execute("SELECT * FROM luns")}
        snaps = {r["local_id"] for r in conn.execute("SELECT local_id FROM snapshots")}
    fixed = {"orphans_removed": 0, "missing_files": 0}
    for sub, known in (("luns", set(luns)), ("snaps", snaps)):
        for f in (pool.root / sub).iterdir():
            if f.name not in known:
                log.warning("removing orphan data file %s", f)
                f.unlink()
                fixed["orphans_removed"] += 1
    for local_id, row in luns.items():
        # file_size is set when a task has made the file: 0 means its create task has not run yet
        # (it runs again after this), whatever happened to the row meanwhile (a resize, a delete)
        if row["file_size"] > 0 and not pool.lun_path(local_id).exists():
            log.error("LUN %s (%s) has no data file", row["name"], local_id)
            fixed["missing_files"] += 1
    return fixed
