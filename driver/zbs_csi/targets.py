"""Driver-owned targets: LUNs are packed into targets named by :class:`~.ownership.Naming`.

ZBS allows 255 LUNs (ids 1-255) per target and makes striping and CHAP target properties, so
the driver keeps a pool of its own targets per :class:`TargetClass`, fills each up to
``luns_per_target`` and creates the next one when all of the wanted class are full.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from .chap import Chap, random_secret
from .config import Config
from .errors import precondition
from .ownership import Naming, chap_class
from .zbs import DEFAULT_STRIPE_NUM, DEFAULT_STRIPE_SIZE, ZbsClient, target_iqn, zerr

log = logging.getLogger(__name__)


def target_full(exc: Exception) -> bool:
    """Whether the API refused a LUN because its target has no room (ZBS: 255 LUNs, ids 1-255)."""
    text = str(exc).lower()
    return "already holds" in text or "lun_id" in text or "no free" in text


@dataclass(frozen=True)
class TargetClass:
    """What volumes sharing a target must agree on: striping, and the CHAP credentials."""

    stripe: tuple[int, int] = (DEFAULT_STRIPE_NUM, DEFAULT_STRIPE_SIZE)
    chap: Chap | None = None

    @property
    def chap_class(self) -> str:
        return chap_class(self.chap.username, self.chap.username_in) if self.chap is not None else ""

    def matches(self, slot: _TargetSlot) -> bool:
        return slot.stripe == self.stripe and slot.chap_class == self.chap_class


@dataclass
class _TargetSlot:
    id: str
    name: str
    iqn: str
    counter: int
    luns: int
    stripe: tuple[int, int] = (DEFAULT_STRIPE_NUM, DEFAULT_STRIPE_SIZE)
    chap_class: str = ""


class TargetPool:
    """This cluster's targets, filled up to ``luns_per_target``, read lazily, newest first.

    Placement is serialized in-process and counted with reservations, so 50 concurrent
    creates never overfill a target; another replica's creates surface as the API refusing a
    full target, which marks it full and moves on. Targets are read a page at a time, newest
    first (the newest has room unless every target is full), so the first create after a start
    reads one page whatever the number of targets; every target is read only when all those
    read so far are full, and then a new one is made, numbered after all of them.
    """

    FIRST_PAGE = 1  # the newest target alone: it has room unless every target is full
    PAGE = 8  # targets come with the ids of all their LUNs: keep pages small

    def __init__(self, client: ZbsClient, cfg: Config, naming: Naming) -> None:
        self.client = client
        self.cfg = cfg
        self.naming = naming
        self._lock = threading.Lock()
        self._slots: dict[str, _TargetSlot] = {}
        self._cursor: str | None = None  # the oldest target read so far
        self._complete = False  # every target has been read

    def _read_page(self) -> None:
        """The next page of targets, older than every target read so far."""
        size = self.FIRST_PAGE if self._cursor is None else self.PAGE
        page = self.client.targets.page(
            {"name_starts_with": self.naming.target_prefix}, first=size, after=self._cursor, descending=True
        )
        for t in page:
            parsed = self.naming.parse_target(t.get("name", ""))
            if parsed is None or t["id"] in self._slots:
                continue
            count = (
                len(t["luns"])
                if isinstance(t.get("luns"), list)
                else self.client.luns.count({"iscsi_target": {"id": t["id"]}})
            )
            stripe = (int(t.get("stripe_num") or DEFAULT_STRIPE_NUM), int(t.get("stripe_size") or DEFAULT_STRIPE_SIZE))
            self._slots[t["id"]] = _TargetSlot(
                t["id"],
                t["name"],
                t.get("iqn_name") or target_iqn(t["name"]),
                parsed.counter,
                count,
                stripe,
                parsed.chap_class,
            )
        if page:
            self._cursor = page[-1]["id"]
        if len(page) < size:
            self._complete = True

    def _forget_all(self) -> None:
        """Read everything afresh from the next reservation on (another replica changed the targets)."""
        self._slots, self._cursor, self._complete = {}, None, False

    def _with_room(self, klass: TargetClass, exclude: set[str]) -> _TargetSlot | None:
        """A target read so far with room for ``klass``, reading older pages until one has room."""
        while True:
            for slot in sorted(self._slots.values(), key=lambda s: s.counter):
                if slot.luns < self.cfg.luns_per_target and slot.id not in exclude and klass.matches(slot):
                    return slot
            if self._complete:
                return None
            self._read_page()

    def reserve(self, klass: TargetClass, exclude: set[str] | None = None) -> _TargetSlot:
        """A target of ``klass`` with room for one more LUN, made when none has room."""
        with self._lock:
            for _ in range(5):
                slot = self._with_room(klass, exclude or set())
                if slot is not None:
                    slot.luns += 1
                    return slot
                counter = max((s.counter for s in self._slots.values()), default=0) + 1
                name = self.naming.target_name(counter, klass.chap_class)
                try:
                    t = self.client.targets.create(
                        name,
                        self.zbs_cluster_id(),
                        **self._chap_fields(klass, name),
                        replica_num=self.cfg.default_replica_num,
                        thin_provision=self.cfg.default_thin_provision,
                        stripe_num=klass.stripe[0],
                        stripe_size=klass.stripe[1],
                        description=self.naming.target_description,
                        iqn_whitelist="*/*",
                        ip_whitelist="*/*",
                    )
                except zerr.ZbsApiError:
                    # Another replica made it first: read the targets again (its new one included).
                    self._forget_all()
                    continue
                iqn = t.get("iqn_name") or target_iqn(t["name"])
                slot = _TargetSlot(t["id"], t["name"], iqn, counter, 1, klass.stripe, klass.chap_class)
                self._slots[slot.id] = slot
                log.info("created target", extra={"fields": {"target": name}})
                return slot
            raise precondition("could not create a new driver target")

    def _chap_fields(self, klass: TargetClass, name: str) -> dict[str, Any]:
        """CHAP on for a CHAP class (and for the default class when the driver-wide ``chap`` is on).

        The target's own credentials answer mutual CHAP: the class's ``username_in`` and
        ``password_in`` when it has them, else a random secret nobody needs to know.
        """
        if klass.chap is not None and klass.chap.username_in:
            return {"chap_enabled": True, "chap_name": klass.chap.username_in, "chap_secret": klass.chap.password_in}
        if klass.chap is not None or self.cfg.chap:
            return {"chap_enabled": True, "chap_name": name, "chap_secret": random_secret()}
        return {}

    def release(self, target_id: str, made: bool) -> None:
        """Undo a reservation that did not become a LUN (``made`` False)."""
        if made:
            return
        with self._lock:
            if target_id in self._slots:
                self._slots[target_id].luns = max(0, self._slots[target_id].luns - 1)

    def forget(self, target_id: str) -> None:
        with self._lock:
            if target_id in self._slots:
                self._slots[target_id].luns = max(0, self._slots[target_id].luns - 1)

    def invalidate(self) -> None:
        """Forget the cached view (a target vanished under us): the next placement reads it afresh."""
        with self._lock:
            self._forget_all()

    def retire_if_empty(self, target: dict[str, Any]) -> None:
        """Delete one of this driver's targets (``{id, name}``, a LUN's relation) once its last LUN is gone,
        so deleted volumes leave no empty target behind; any other target (a static volume's) stays.

        Under the placement lock, so no create of this process is being placed into it; if
        another replica placed a LUN meanwhile, the API refuses to delete a target with LUNs
        and the target simply stays.
        """
        target_id = str(target.get("id") or "")
        if not target_id or self.naming.parse_target(str(target.get("name") or "")) is None:
            return
        with self._lock:
            slot = self._slots.get(target_id)
            if slot is not None and slot.luns > 0:
                return
            try:
                if self.client.luns.count({"iscsi_target": {"id": target_id}}) > 0:
                    return
                self.client.targets.delete(target_id)
            except zerr.ZbsError as exc:
                log.info("kept an empty driver target: %s", exc, extra={"fields": {"target": target_id}})
                return
            # Read afresh from the next reservation on: the gone target may be the paging cursor.
            self._forget_all()
            log.info("deleted an empty driver target", extra={"fields": {"target": target_id}})

    def mark_full(self, target_id: str) -> None:
        with self._lock:
            if target_id in self._slots:
                self._slots[target_id].luns = self.cfg.luns_per_target

    _cluster: str | None = None

    def zbs_cluster_id(self) -> str:
        """The ZBS cluster's API id (``cluster`` in the config), not the Kubernetes cluster id."""
        if self._cluster is None:
            if self.cfg.cluster:
                c = self.client.clusters.get(name=self.cfg.cluster)
                if c is None:
                    raise precondition(f"cluster {self.cfg.cluster!r} does not exist")
            else:
                c = self.client.clusters.default()
            self._cluster = c["id"]
        return self._cluster
