"""ListVolumes and ListSnapshots: each response read from the API page by page, with keyset cursors.

The starting token carries the API's own ids of where the previous response stopped, so a
call reads its page and nothing before it: a full pass over N volumes is N/page calls of
the same cost, whatever N. Ids are compared (``id_gt``), never looked up, so a token stays
valid when the volume it names was deleted meanwhile, and a pass lists every volume that
exists throughout it exactly once (a LUN's id and target never change, and the walk only
moves forward along them).

Volumes are walked target by target: this cluster's targets in id order, each target's LUNs
in id order. Every LUN query is then an equality on the LUN's target (an index in any
implementation, at most 255 matches) rather than a name pattern over every LUN of the
cluster, which a real CloudTower may well answer by scanning them all.

One response holds at most ``PAGE_CAP`` entries and ``BYTES_CAP`` bytes, whatever
``max_entries`` asks (gRPC refuses messages above 4 MiB by default; the CSI sidecars follow
``next_token``), and examines at most ``SCAN_CAP`` objects, so a call stays short even where
most objects are not listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from .errors import aborted, invalid
from .ownership import Naming, Owner, Ownership
from .zbs import ZbsClient, map_error, validate_id, zerr

PAGE_CAP = 1000
BYTES_CAP = 3 << 20
SCAN_CAP = 10 * PAGE_CAP
MAX_TARGETS_PER_REQUEST = 8  # targets come with the ids of all their LUNs: keep those pages small
API_MAX_FIRST = 1000

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Item:
    """One object the walk examined: ``obj`` None when it is not listed; ``token`` resumes after it."""

    obj: dict[str, Any] | None
    token: str
    related: dict[str, Any] | None = None  # a snapshot's LUN


def page_limit(max_entries: int) -> int:
    if max_entries < 0:
        raise invalid("max_entries must not be negative")
    return min(max_entries, PAGE_CAP) if max_entries else PAGE_CAP


def take(items: Iterator[Item], limit: int, build: Callable[[Item], M]) -> tuple[list[M], str]:
    """Entries built from ``items`` up to the caps, and the token resuming after the last one examined.

    The token is empty only when ``items`` ran out: one item is read past a full page, so a
    pass never ends on an empty page.
    """
    out: list[M] = []
    size = 0
    token = ""
    for examined, item in enumerate(items):
        if len(out) >= limit or examined >= SCAN_CAP:
            return out, token
        if item.obj is not None:
            entry = build(item)
            n = entry.ByteSize() + 8  # the field's tag and length prefix
            if out and size + n > BYTES_CAP:
                return out, token
            out.append(entry)
            size += n
        token = item.token
    return out, ""


def _call(doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except zerr.ZbsError as exc:
        raise map_error(exc, doing) from exc


def _id(value: str, what: str) -> str:
    try:
        return validate_id(value, what)
    except zerr.ZbsValidationError:
        raise aborted(f"starting_token {what} {value[:40]!r} is not valid (start the listing over)") from None


def parse_volume_token(token: str) -> tuple[str, str]:
    """``<target id>/<LUN id>``: resume in that target after that LUN (ABORTED when malformed)."""
    target, sep, lun = token.partition("/")
    if not sep:
        raise aborted(f"starting_token {token[:40]!r} is not valid (start the listing over)")
    return _id(target, "target"), _id(lun, "LUN")


class Listing:
    """The objects of one Kubernetes cluster's driver, walked in the order tokens resume."""

    def __init__(self, client: ZbsClient, naming: Naming, *, adopt_legacy: bool, luns_per_target: int) -> None:
        self.client = client
        self.naming = naming
        self.adopt_legacy = adopt_legacy
        self.luns_per_target = luns_per_target

    # ------------------------------------------------------------------ volumes
    def volumes(self, token: str, want: int) -> Iterator[Item]:
        """This cluster's volumes after ``token``: every LUN of its targets, the others' as not listed."""
        start_target, start_lun = parse_volume_token(token) if token else ("", "")
        first = min(API_MAX_FIRST, want + 1)
        # as many targets per request as a page is likely to span (reading more renders LUN ids for nothing)
        per_request = max(1, min(MAX_TARGETS_PER_REQUEST, 1 + want // self.luns_per_target))
        for target_id in self._targets(start_target, per_request):
            after = start_lun if target_id == start_target else None
            while True:
                luns = _call(
                    "listing volumes",
                    self.client.luns.page,
                    {"iscsi_target": {"id": target_id}},
                    first=first,
                    after=after,
                )
                for lun in luns:
                    mine = self.naming.classify_lun(lun) == Ownership(Owner.MINE)
                    yield Item(lun if mine else None, f"{target_id}/{lun['id']}")
                if len(luns) < first:
                    break
                after = luns[-1]["id"]

    def _targets(self, start: str, per_request: int) -> Iterator[str]:
        """Ids of the targets that may hold this cluster's volumes, in id order: ``start`` first (a
        token's), then those above it. With ``adopt_legacy``, legacy targets too (adopted volumes
        stay in them).

        A token's target need not exist any more, nor be ours: the LUNs of a target that is not
        ours are never listed (see ownership.py).
        """
        if start:
            yield start
        prefix = f"{self.naming.prefix}-" if self.adopt_legacy else self.naming.target_prefix
        after = start or None
        while True:
            targets = _call(
                "listing the driver's targets",
                self.client.targets.page,
                {"name_starts_with": prefix},
                first=per_request,
                after=after,
            )
            for t in targets:
                name = str(t.get("name") or "")
                if self.naming.parse_target(name) is not None or (
                    self.adopt_legacy and self.naming.is_legacy_target(name)
                ):
                    yield t["id"]
            if len(targets) < per_request:
                return
            after = targets[-1]["id"]

    # ------------------------------------------------------------------ snapshots
    def snapshots(self, where: dict[str, Any], token: str, want: int) -> Iterator[Item]:
        """Snapshots matching ``where`` after ``token`` (a snapshot id), each with its LUN.

        A legacy snapshot (in a target of a driver before cluster ids) is listed once its
        volume was adopted by this cluster; a listing never adopts, and never fails on what
        another cluster owns: it just does not list it.
        """
        after = _id(token, "snapshot") if token else None
        first = min(API_MAX_FIRST, want + 1)
        while True:
            snaps = _call("listing snapshots", self.client.snapshots.page, where, first=first, after=after)
            lun_ids = sorted({(s.get("iscsi_lun") or {}).get("id", "") for s in snaps} - {""})
            luns = (
                {
                    lun["id"]: lun
                    for lun in _call(
                        "reading the snapshots' volumes", self.client.luns.page, {"id_in": lun_ids}, first=len(lun_ids)
                    )
                }
                if lun_ids
                else {}
            )
            for s in snaps:
                lun = luns.get((s.get("iscsi_lun") or {}).get("id", ""))
                yield Item(s if self._snapshot_listed(s, lun) else None, s["id"], lun)
            if len(snaps) < first:
                return
            after = snaps[-1]["id"]

    def _snapshot_listed(self, snap: dict[str, Any], lun: dict[str, Any] | None) -> bool:
        own = self.naming.classify_snapshot(snap).owner
        if own is Owner.MINE:
            return True
        return (
            own is Owner.LEGACY
            and self.adopt_legacy
            and lun is not None
            and self.naming.classify_lun(lun).owner is Owner.MINE
        )

    def snapshot_scope(self) -> dict[str, Any]:
        """The ``where`` of a ListSnapshots without filters: every snapshot that may be ours."""
        mine = {"name_starts_with": self.naming.name_prefix}
        if not self.adopt_legacy:
            return mine
        return {"OR": [mine, {"iscsi_target": {"name_starts_with": f"{self.naming.prefix}-"}}]}
