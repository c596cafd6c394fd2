"""The login back-off's rules on a fake clock (the live API and CHAP tests measure it for real)."""

from __future__ import annotations

import pytest

from zbs_lite.throttle import BackoffPolicy, LoginThrottle, Throttled, source_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(t: LoginThrottle, key: tuple[str, str, str]) -> bool:
    return t.attempt(key, lambda: False)


def test_free_failures_then_doubling_waits_up_to_the_cap() -> None:
    clock = Clock()
    t = LoginThrottle(BackoffPolicy(free_failures=5, first_delay=1, max_delay=8), clock=clock)
    key = ("api", "10.0.0.9", "admin")
    for _ in range(5):
        assert fail(t, key) is False  # typos are free: no wait after them
    waits = []
    for _ in range(6):
        assert fail(t, key) is False
        with pytest.raises(Throttled) as err:
            fail(t, key)
        waits.append(err.value.retry_after)
        clock.now += err.value.retry_after
    assert waits == [1, 2, 4, 8, 8, 8]


def test_while_a_key_waits_nothing_is_checked_and_a_success_forgives() -> None:
    clock = Clock()
    t = LoginThrottle(BackoffPolicy(free_failures=0, first_delay=10), clock=clock)
    key = ("chap", "10.0.0.9", "iqn.t iqn.i")
    fail(t, key)
    checked = []
    with pytest.raises(Throttled) as err:
        t.attempt(key, lambda: checked.append(1) or True)
    assert checked == [] and err.value.seconds == 10
    clock.now += 10
    assert t.attempt(key, lambda: True) is True
    assert fail(t, key) is False  # counting starts again after the success


def test_other_sources_and_credentials_are_never_slowed() -> None:
    clock = Clock()
    t = LoginThrottle(BackoffPolicy(free_failures=0, first_delay=60), clock=clock)
    fail(t, ("api", "10.0.0.9", "admin"))
    with pytest.raises(Throttled):
        fail(t, ("api", "10.0.0.9", "admin"))
    assert t.attempt(("api", "10.0.0.10", "admin"), lambda: True)
    assert t.attempt(("chap", "10.0.0.9", "admin"), lambda: True)
    assert t.attempt(("api", "10.0.0.9", "?"), lambda: True)


def test_an_idle_key_is_forgotten_and_the_table_is_bounded() -> None:
    clock = Clock()
    t = LoginThrottle(BackoffPolicy(free_failures=1, first_delay=1, forget_after=100), max_keys=3, clock=clock)
    key = ("api", "10.0.0.9", "admin")
    fail(t, key)
    clock.now += 101
    fail(t, key)  # forgotten: this is failure 1 again, free
    assert t.attempt(key, lambda: True)
    for i in range(10):
        fail(t, ("api", f"10.0.1.{i}", "admin"))
    assert len(t._records) == 3


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_a_source_is_an_ipv4_address_or_an_ipv6_64(address: str, source: str) -> None:
    assert source_of(address) == source
