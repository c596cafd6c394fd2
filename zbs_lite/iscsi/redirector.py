"""Where the VIP sends a login: a consistent hash of (initiator, target) onto the live chunks."""

from __future__ import annotations

import bisect
import hashlib

VNODES = 64


def _h(s: str) -> int:
    return int.from_bytes(hashlib.sha1(s.encode(), usedforsecurity=False).digest()[:8], "big")


class HashRing:
    """Consistent hashing of (initiator, target) onto chunk numbers, skipping dead chunks.

    With virtual nodes, a chunk that goes away only moves the sessions it carried; when it
    comes back it gets the same ones again.
    """

    def __init__(self, members: list[int], vnodes: int = VNODES) -> None:
        self._points = sorted((_h(f"chunk-{m}-{v}"), m) for m in members for v in range(vnodes))
        self._keys = [p for p, _ in self._points]

    def pick(self, key: str, alive: set[int]) -> int | None:
        if not alive or not self._points:
            return None
        start = bisect.bisect(self._keys, _h(key))
        for i in range(len(self._points)):
            member = self._points[(start + i) % len(self._points)][1]
            if member in alive:
                return member
        return None


def ring_key(initiator: str, target_iqn: str) -> str:
    return f"{initiator.lower()}|{target_iqn}"
