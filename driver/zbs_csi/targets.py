"""Driver-owned targets: LUNs are packed into targets named ``<prefix>-<NNNN>``.

ZBS allows 255 LUNs (ids 1-255) per target and makes striping a target property, so the
driver keeps a pool of its own targets, fills each up to ``luns_per_target`` and creates the
next one when all that match the wanted striping are full.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from .chap import random_secret
from .config import Config
from .errors import precondition
from .zbs import DEFAULT_STRIPE_NUM, DEFAULT_STRIPE_SIZE, ZbsClient, target_iqn, zerr

log = logging.getLogger(__name__)


def target_full(exc: Exception) -> bool:
    """Whether the API refused a LUN because its target has no room (ZBS: 255 LUNs, ids 1-255)."""
    text = str(exc).lower()
    return "already holds" in text or "lun_id" in text or "no free" in text


@dataclass
class _TargetSlot:
    id: str
    name: str
    iqn: str
    counter: int
    luns: int
    stripe: tuple[int, int] = (DEFAULT_STRIPE_NUM, DEFAULT_STRIPE_SIZE)


class TargetPool:
    """Driver-owned targets named ``<prefix>-<counter>``, filled up to ``luns_per_target``.

    Placement is serialized in-process and counted with reservations, so 50 concurrent
    creates never overfill a target; another replica's creates surface as the API refusing a
    full target, which refreshes the view and moves on.
    """

    def __init__(self, client: ZbsClient, cfg: Config) -> None:
        self.client = client
        self.cfg = cfg
        self.prefix = cfg.target_prefix.lower()
        self._lock = threading.Lock()
        self._slots: dict[str, _TargetSlot] | None = None
        self._pattern = re.compile(rf"^{re.escape(self.prefix)}-(\d+)$")

    def owns(self, target_name: str) -> bool:
        return bool(self._pattern.match(target_name or ""))

    def _refresh(self) -> dict[str, _TargetSlot]:
        slots = {}
        for t in self.client.targets.list({"name_starts_with": f"{self.prefix}-"}):
            m = self._pattern.match(t.get("name", ""))
            if not m:
                continue
            count = (
                len(t["luns"])
                if isinstance(t.get("luns"), list)
                else self.client.luns.count({"iscsi_target": {"id": t["id"]}})
            )
            slots[t["id"]] = _TargetSlot(
                t["id"], t["name"], t.get("iqn_name") or target_iqn(t["name"]), int(m[1]), count
            )
        self._slots = slots
        return slots

    def slot(self, target_id: str) -> _TargetSlot | None:
        with self._lock:
            slots = self._slots if self._slots is not None else self._refresh()
            if target_id not in slots:
                slots = self._refresh()
            return slots.get(target_id)

    def reserve(self, stripe: tuple[int, int], exclude: set[str] | None = None) -> _TargetSlot:
        """A target with room and the wanted striping (striping is a target property in ZBS)."""
        with self._lock:
            slots = self._slots if self._slots is not None else self._refresh()
            for slot in sorted(slots.values(), key=lambda s: s.counter):
                if slot.luns < self.cfg.luns_per_target and slot.id not in (exclude or set()) and slot.stripe == stripe:
                    slot.luns += 1
                    return slot
            counter = max((s.counter for s in slots.values()), default=0) + 1
            for _ in range(5):
                name = f"{self.prefix}-{counter:04d}"
                chap: dict[str, Any] = {}
                if self.cfg.chap:
                    chap = {"chap_enabled": True, "chap_name": name, "chap_secret": random_secret()}
                try:
                    t = self.client.targets.create(
                        name,
                        self.cluster_id(),
                        **chap,
                        replica_num=self.cfg.default_replica_num,
                        thin_provision=self.cfg.default_thin_provision,
                        stripe_num=stripe[0],
                        stripe_size=stripe[1],
                        description="managed by zbs-csi; LUNs are Kubernetes volumes",
                        iqn_whitelist="*/*",
                        ip_whitelist="*/*",
                    )
                except zerr.ZbsApiError:
                    # Another replica made it first: take what exists now.
                    slots = self._refresh()
                    existing = [s for s in slots.values() if s.name == name]
                    if existing and existing[0].luns < self.cfg.luns_per_target and existing[0].stripe == stripe:
                        existing[0].luns += 1
                        return existing[0]
                    counter = max((s.counter for s in slots.values()), default=counter) + 1
                    continue
                slot = _TargetSlot(t["id"], t["name"], t.get("iqn_name") or target_iqn(t["name"]), counter, 1, stripe)
                slots[slot.id] = slot
                log.info("created target", extra={"fields": {"target": name}})
                return slot
            raise precondition("could not create a new driver target")

    def release(self, target_id: str, made: bool) -> None:
        """Undo a reservation that did not become a LUN (``made`` False)."""
        if made:
            return
        with self._lock:
            if self._slots and target_id in self._slots:
                self._slots[target_id].luns = max(0, self._slots[target_id].luns - 1)

    def forget(self, target_id: str) -> None:
        with self._lock:
            if self._slots and target_id in self._slots:
                self._slots[target_id].luns = max(0, self._slots[target_id].luns - 1)

    def invalidate(self) -> None:
        """Forget the cached view (a target vanished under us): the next placement reads it afresh."""
        with self._lock:
            self._slots = None

    def retire_if_empty(self, target_id: str) -> None:
        """Delete a driver target whose last LUN is gone, so deleted volumes leave no empty target behind.

        Under the placement lock, so no create of this process is being placed into it; if
        another replica placed a LUN meanwhile, the API refuses to delete a target with LUNs
        and the target simply stays.
        """
        if not target_id:
            return
        with self._lock:
            slot = (self._slots or {}).get(target_id)
            if slot is not None and slot.luns > 0:
                return
            try:
                if self.client.luns.count({"iscsi_target": {"id": target_id}}) > 0:
                    return
                self.client.targets.delete(target_id)
            except zerr.ZbsError as exc:
                log.info("kept an empty driver target: %s", exc, extra={"fields": {"target": target_id}})
                return
            if self._slots is not None:
                self._slots.pop(target_id, None)
            log.info("deleted an empty driver target", extra={"fields": {"target": target_id}})

    def mark_full(self, target_id: str) -> None:
        with self._lock:
            if self._slots and target_id in self._slots:
                self._slots[target_id].luns = self.cfg.luns_per_target

    _cluster: str | None = None

    def cluster_id(self) -> str:
        if self._cluster is None:
            if self.cfg.cluster:
                c = self.client.clusters.get(name=self.cfg.cluster)
                if c is None:
                    raise precondition(f"cluster {self.cfg.cluster!r} does not exist")
            else:
                c = self.client.clusters.default()
            self._cluster = c["id"]
        return self._cluster
