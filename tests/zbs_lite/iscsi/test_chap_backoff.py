"""Issue #11 finding 9 for CHAP: wrong responses back off per source and credential, as API logins do.

Logins go straight to a chunk from chosen loopback source addresses; a refused-while-waiting
login is answered "service unavailable" (0x0301, retry later), not "authentication failure",
because the response was never checked. The libiscsi test also shows the safe way to give
libiscsi a CHAP secret (its environment, not the ``iscsi://NAME%SECRET@`` URL in argv).
"""

from __future__ import annotations

import socket
import time

from initiator import Initiator, LoginError
from iscsi_rig import IQN_A, IQN_B, Rig, need, run

from zbs_lite.catalog import InitiatorChap, TargetView
from zbs_lite.throttle import BackoffPolicy

ATTACKER, USER = "127.0.0.2", "127.0.0.3"
FREE = BackoffPolicy().free_failures
SECRET_A, SECRET_B = "InitiatorSecret1", "InitiatorSecret2"
AUTH_FAILED, UNAVAILABLE, OK = (2, 1), (3, 1), (0, 0)


def chap_target(rig: Rig) -> TargetView:
    t = rig.add_target(
        "backoff",
        chap_enabled=True,
        chap_name="zbs-target",
        chap_secret="TargetSecret12",
        initiator_chaps=(InitiatorChap(IQN_A, "node-a", SECRET_A), InitiatorChap(IQN_B, "node-b", SECRET_B)),
    )
    rig.add_lun(t, 1)
    return t


def attempt(rig: Rig, t: TargetView, source: str, iqn: str, secret: str) -> tuple[int, int]:
    """One CHAP login to chunk 1 from ``source``: the login status it ends with."""
    host, port = rig.hostport(rig.chunk(1))
    ini = Initiator(host, port, iqn)
    ini.sock.close()  # the helper connects from the default source; reconnect from ours
    ini.sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
    try:
        ini.login(t.iqn, chap=("node-a" if iqn == IQN_A else "node-b", secret))
    except LoginError as e:
        return e.status
    finally:
        ini.close()
    return OK


def test_wrong_chap_responses_back_off_without_locking_out_others(rig: Rig) -> None:
    t = chap_target(rig)
    for _ in range(FREE + 1):
        assert attempt(rig, t, ATTACKER, IQN_A, "WrongSecret123") == AUTH_FAILED
    assert attempt(rig, t, ATTACKER, IQN_A, SECRET_A) == UNAVAILABLE, "while it waits nothing is checked"
    assert attempt(rig, t, USER, IQN_A, SECRET_A) == OK, "the same credential from another source works"
    assert attempt(rig, t, ATTACKER, IQN_B, SECRET_B) == OK, "another credential from the same source works"
    time.sleep(BackoffPolicy().first_delay + 0.1)
    assert attempt(rig, t, ATTACKER, IQN_A, SECRET_A) == OK, "after the wait the right secret works and forgives"
    assert attempt(rig, t, ATTACKER, IQN_A, "WrongSecret123") == AUTH_FAILED


def test_chap_guessing_speed_drops_to_a_few_checks(rig: Rig) -> None:
    """The measured figure of docs/zbs-lite.md: CHAP responses checked per second for one source."""
    t = chap_target(rig)
    counts = {AUTH_FAILED: 0, UNAVAILABLE: 0}
    started = time.monotonic()
    while time.monotonic() - started < 4:
        counts[attempt(rig, t, "127.0.0.4", IQN_A, "WrongSecret123")] += 1
    elapsed = time.monotonic() - started
    checked, refused = counts[AUTH_FAILED] / elapsed, counts[UNAVAILABLE] / elapsed
    print(f"CHAP guessing source: {checked:.1f} checked/s, {refused:.0f} refused/s")
    assert counts[AUTH_FAILED] <= FREE + 3 and counts[UNAVAILABLE] > 0, counts
    assert attempt(rig, t, "127.0.0.5", IQN_A, SECRET_A) == OK


def test_libiscsi_takes_the_chap_secret_from_its_environment(rig: Rig) -> None:
    """The documented safe form: no secret in the URL (argv), LIBISCSI_CHAP_* in the environment."""
    need("iscsi-inq")
    t = chap_target(rig)
    url = f"iscsi://{rig.vip}/{t.iqn}/1"
    env = {"LIBISCSI_CHAP_USERNAME": "node-a", "LIBISCSI_CHAP_PASSWORD": SECRET_A}
    r = run(["iscsi-inq", "-i", IQN_A, url], env=env)
    assert r.returncode == 0 and "Vendor:ZBS" in r.stdout, r.stderr
    env["LIBISCSI_CHAP_PASSWORD"] = "WrongSecret123"
    assert run(["iscsi-inq", "-i", IQN_A, url], env=env).returncode != 0
