"""After an unclean stop: make the pool's files match the metadata before anything is served.

Both sides are streamed, so a start costs the same memory at 100 LUNs as at 100,000: the
pool's directories are read entry by entry and checked in batches against the ``local_id``
indexes, and the LUN rows come through a cursor, a few columns at a time.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator

from zbs_lite.db import Database
from zbs_lite.storage import Pool

log = logging.getLogger(__name__)

BATCH = 500  # file names checked per query (well under SQLite's bound-parameter limit)


def _batches(entries: Iterable[os.DirEntry[str]]) -> Iterator[list[os.DirEntry[str]]]:
    batch: list[os.DirEntry[str]] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _remove_orphans(conn: sqlite3.Connection, pool: Pool, sub: str, table: str) -> int:
    """Files of ``pool.root/sub`` that no row of ``table`` names (by ``local_id``); returns how many."""
    removed = 0
    with os.scandir(pool.root / sub) as entries:
        for batch in _batches(entries):
            marks = ",".join("?" * len(batch))
            known = {
                r[0]
                for r in conn.execute(
                    f"SELECT local_id FROM {table} WHERE local_id IN ({marks})",  # noqa: S608 - a fixed table name
                    [e.name for e in batch],
                )
            }
            for entry in batch:
                if entry.name not in known:
                    log.warning("removing orphan data file %s", entry.path)
                    os.unlink(entry.path)
                    removed += 1
    return removed


def reconcile(db: Database, pool: Pool) -> dict[str, int]:
    """Remove files no row owns and report LUNs whose file was made and is gone; returns the counts."""
    fixed = {"orphans_removed": 0, "missing_files": 0}
    with db.read() as conn:
        for sub, table in (("luns", "luns"), ("snaps", "snapshots")):
            fixed["orphans_removed"] += _remove_orphans(conn, pool, sub, table)
        # file_size is set when a task has made the file: 0 means its create task has not run yet
        # (it runs again after this), whatever happened to the row meanwhile (a resize, a delete)
        for local_id, name in conn.execute("SELECT local_id, name FROM luns WHERE file_size > 0"):
            if not pool.lun_path(local_id).exists():
                log.error("LUN %s (%s) has no data file", name, local_id)
                fixed["missing_files"] += 1
    return fixed
