"""Back-off for failed logins, one mechanism for API passwords and iSCSI CHAP.

The unit is a source guessing one credential: ``(realm, source, credential)`` where the source
is an IPv4 address or an IPv6 /64 and the credential is the API user or one target's CHAP
entry for one initiator. After a few free failures each further failure makes that key wait
twice as long (up to a cap) before its next attempt is even checked; attempts during the
wait are refused unchecked. Other sources and the same source's other credentials are never
slowed, so an attacker cannot lock the real user out from elsewhere, and a success forgives
the key's failures. Checks and verdicts are serialised, so parallel guesses gain nothing.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

ThrottleKey = tuple[str, str, str]


@dataclass(frozen=True)
class BackoffPolicy:
    free_failures: int = 5
    first_delay: float = 1.0
    max_delay: float = 60.0
    forget_after: float = 900.0  # a key idle this long starts afresh

    def delay(self, failures: int) -> float:
        over = failures - self.free_failures
        if over <= 0:
            return 0.0
        return float(min(self.max_delay, self.first_delay * 2 ** min(over - 1, 32)))


class Throttled(Exception):
    """The key must wait ``retry_after`` seconds before its next attempt is checked."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry in {retry_after:.1f} s")
        self.retry_after = retry_after

    @property
    def seconds(self) -> int:
        """Whole seconds for a Retry-After header or a message (never 0)."""
        return max(1, math.ceil(self.retry_after))


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


def source_of(address: str) -> str:
    """The source an address belongs to: itself for IPv4, its /64 for IPv6 (one host's usual share)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    """Thread-safe; the asyncio data plane calls it too (every call returns at once)."""

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._max_keys = max_keys
        self._clock = clock
        self._records: OrderedDict[ThrottleKey, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def attempt(self, key: ThrottleKey, verify: Callable[[], bool]) -> bool:
        """Run ``verify`` (a quick credential check) unless ``key`` must wait; record its verdict.

        Raises :class:`Throttled` without calling ``verify`` while the key waits.
        """
        with self._lock:
            now = self._clock()
            rec = self._records.get(key)
            if rec is not None and now - rec.last > self.policy.forget_after:
                rec = None
                del self._records[key]
            if rec is not None and rec.blocked_until > now:
                raise Throttled(rec.blocked_until - now)
            if verify():
                self._records.pop(key, None)
                return True
            if rec is None:
                rec = self._records[key] = _Record()
            rec.failures += 1
            rec.last = now
            rec.blocked_until = now + self.policy.delay(rec.failures)
            self._records.move_to_end(key)
            while len(self._records) > self._max_keys:
                self._records.popitem(last=False)
            return False
