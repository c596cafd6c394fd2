"""The data plane seen through real initiators: libiscsi's tools and qemu."""

from __future__ import annotations

import contextlib
import os
import re
import struct

import pytest
from initiator import Initiator, LoginError
from iscsi_rig import IQN_A, IQN_B, MIB, Rig, need, run

from zbs_lite.catalog import InitiatorChap
from zbs_lite.iscsi.spc import naa_id


def luns_seen(rig: Rig, iqn: str) -> dict[str, list[int]]:
    """`iscsi-ls -s` through the VIP: target IQN -> LUN numbers that initiator sees."""
    r = run(["iscsi-ls", "-s", "-i", iqn, f"iscsi://{rig.vip}"])
    assert r.returncode == 0, r.stderr
    seen: dict[str, list[int]] = {}
    current = ""
    for line in r.stdout.splitlines():
        m = re.match(r"Target:(\S+) Portal:(\S+)", line)
        if m:
            current = m.group(1)
            seen[current] = []
            assert m.group(2) == f"{rig.vip},1", "discovery must answer with the VIP address"
        m = re.match(r"Lun:(\d+)", line.strip())
        if m:
            seen[current].append(int(m.group(1)))
    return seen


def test_masking_two_initiators_and_revoke(rig: Rig) -> None:
    need("iscsi-ls")
    t = rig.add_target("mask")
    rig.add_lun(t, 1, allowed_initiators=IQN_A)
    rig.add_lun(t, 2, allowed_initiators=IQN_B)
    shared = rig.add_lun(t, 3)  # None: everybody
    rig.add_lun(t, 4, allowed_initiators="")  # nobody
    assert luns_seen(rig, IQN_A) == {t.iqn: [1, 3]}
    assert luns_seen(rig, IQN_B) == {t.iqn: [2, 3]}

    rig.update_lun(shared, allowed_initiators=IQN_B)
    assert luns_seen(rig, IQN_A) == {t.iqn: [1]}
    assert luns_seen(rig, IQN_B) == {t.iqn: [2, 3]}


def test_revoke_reaches_a_live_session(rig: Rig) -> None:
    """Fencing: a session logged in before the revoke loses the LUN at its next command."""
    t = rig.add_target("fence")
    lun = rig.add_lun(t, 1, allowed_initiators=f"{IQN_A},{IQN_B}")
    host, port = rig.hostport(rig.chunk(1))
    ini = Initiator(host, port, IQN_A)
    ini.login(t.iqn)
    assert ini.write10(1, 8, b"\x5a" * 4096).status == 0
    assert ini.report_luns() == [1]

    rig.update_lun(lun, allowed_initiators=IQN_B)
    r = ini.read10(1, 8, 8)
    assert r.status == 2 and r.sense_key == 0x05 and r.asc == (0x25, 0x00)  # LOGICAL UNIT NOT SUPPORTED
    assert ini.report_luns() == []
    r = ini.write10(1, 8, b"\x00" * 512)
    assert r.status == 2 and r.asc == (0x25, 0x00)
    ini.logout()
    with open(lun.path, "rb") as f:
        f.seek(8 * 512)
        assert f.read(4096) == b"\x5a" * 4096, "the refused write must not have reached the file"


def test_inquiry_and_stable_naa(rig: Rig) -> None:
    need("iscsi-inq")
    t = rig.add_target("inq")
    lun = rig.add_lun(t, 1)
    r = run(["iscsi-inq", "-i", IQN_A, f"iscsi://{rig.vip}/{t.iqn}/1"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"^Vendor:ZBS\s*$", r.stdout, re.M)
    assert re.search(r"^Product:VOLUME\s*$", r.stdout, re.M)

    r = run(["iscsi-inq", "-e", "1", "-c", "131", "-i", IQN_A, f"iscsi://{rig.vip}/{t.iqn}/1"])
    assert r.returncode == 0, r.stderr
    assert "Designator Type:(3) NAA" in r.stdout
    r = run(["iscsi-inq", "-e", "1", "-c", "128", "-i", IQN_A, f"iscsi://{rig.vip}/{t.iqn}/1"])
    assert f"Unit Serial Number:[{lun.local_id.replace('-', '')}]" in r.stdout

    # the same NAA on every chunk: the kernel and multipath identify the device by it
    for n in (1, 3):
        ini = Initiator(*rig.hostport(rig.chunk(n)), IQN_A)
        ini.login(t.iqn)
        page = ini.scsi(1, bytes([0x12, 0x01, 0x83, 0x01, 0x00, 0x00]), read_len=256).data
        ini.logout()
        designators, off = [], 4
        while off < len(page):
            length = page[off + 3]
            designators.append((page[off + 1] & 0x0F, page[off + 4 : off + 4 + length]))
            off += 4 + length
        assert (3, naa_id(lun.local_id)) in designators
        assert naa_id(lun.local_id)[0] >> 4 == 6  # NAA IEEE Registered Extended


def test_capacity_and_resize(rig: Rig) -> None:
    need("iscsi-readcapacity16")
    t = rig.add_target("cap")
    lun = rig.add_lun(t, 1, size=64 * MIB)
    r = run(["iscsi-readcapacity16", "-i", IQN_A, f"iscsi://{rig.vip}/{t.iqn}/1"])
    assert r.returncode == 0, r.stderr
    assert "Total size:67108864" in r.stdout
    assert "LBPME:1" in r.stdout  # thin: logical block provisioning enabled

    host, port = rig.hostport(rig.chunk(2))
    ini = Initiator(host, port, IQN_A)
    ini.login(t.iqn)
    assert ini.tur(1).status == 0
    os.truncate(lun.path, 96 * MIB)  # the management plane grows the same inode
    rig.update_lun(lun, size=96 * MIB)
    r2 = ini.tur(1)
    assert r2.status == 2 and r2.sense_key == 0x06 and r2.asc == (0x2A, 0x09)  # CAPACITY DATA HAS CHANGED
    assert ini.tur(1).status == 0, "the unit attention is reported once"
    cap = ini.scsi(1, bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2), read_len=32)
    assert struct.unpack_from(">Q", cap.data)[0] + 1 == 96 * MIB // 512
    ini.logout()

    r = run(["iscsi-readcapacity16", "-i", IQN_A, f"iscsi://{rig.vip}/{t.iqn}/1"])
    assert "Total size:100663296" in r.stdout


def test_pattern_via_vip_read_back_via_another_chunk(rig: Rig) -> None:
    need("qemu-io")
    t = rig.add_target("data")
    lun = rig.add_lun(t, 1, size=64 * MIB, allowed_initiators=f"{IQN_A},{IQN_B}")
    out = rig.qemu_io(lun, "write -P 0xa5 4M 8M", "write -P 0x3c 20M 1M", initiator=IQN_A)
    assert "wrote 8388608/8388608" in out
    for n in (1, 2, 3):
        rig.qemu_io(
            lun, "read -P 0xa5 4M 8M", "read -P 0x3c 20M 1M", "read -P 0 0 4M", portal=rig.chunk(n), initiator=IQN_B
        )
    with open(lun.path, "rb") as f:
        data = f.read()
    assert data[4 * MIB : 12 * MIB] == b"\xa5" * (8 * MIB)
    assert data[20 * MIB : 21 * MIB] == b"\x3c" * MIB
    assert data[: 4 * MIB].count(0) == 4 * MIB


def test_redirect_is_consistent_and_avoids_a_stopped_chunk(rig: Rig) -> None:
    t = rig.add_target("ring")
    rig.add_lun(t, 1)
    host, port = rig.hostport(rig.vip)

    def redirected() -> str:
        ini = Initiator(host, port, IQN_A)
        with pytest.raises(LoginError) as e:
            ini.login(t.iqn)
        ini.close()
        assert e.value.status == (1, 1)  # target moved temporarily
        return e.value.data["TargetAddress"].rsplit(",", 1)[0]

    first = redirected()
    assert redirected() == first, "the same initiator and target land on the same chunk"
    n = next(i for i in (1, 2, 3) if rig.chunk(i) == first)
    rig.plane.stop_chunk(n)
    moved = redirected()
    assert moved != first and moved in (rig.chunk(1), rig.chunk(2), rig.chunk(3))
    rig.plane.start_chunk(n)
    assert rig.chunk(n) == first, "a restarted chunk keeps its portal"


@pytest.mark.parametrize("mutual", [False, True])
def test_chap(rig: Rig, mutual: bool) -> None:
    need("iscsi-inq")
    t = rig.add_target(
        "chap",
        chap_enabled=True,
        chap_name="zbs-target",
        chap_secret="TargetSecret12",
        initiator_chaps=(InitiatorChap(IQN_A, "node-a", "InitiatorSecret1"),),
    )
    rig.add_lun(t, 1)
    env = {"LIBISCSI_CHAP_TARGET_USERNAME": "zbs-target", "LIBISCSI_CHAP_TARGET_PASSWORD": "TargetSecret12"}
    env = env if mutual else {}

    def inq(cred: str, iqn: str = IQN_A, extra: dict[str, str] | None = None) -> int:
        r = run(["iscsi-inq", "-i", iqn, f"iscsi://{cred}{rig.vip}/{t.iqn}/1"], env={**env, **(extra or {})})
        if r.returncode == 0:
            assert "Vendor:ZBS" in r.stdout
        return r.returncode

    assert inq("node-a%InitiatorSecret1@") == 0
    assert inq("node-a%WrongSecret123@") != 0
    assert inq("") != 0, "no secret must not log in"
    assert inq("node-a%InitiatorSecret1@", IQN_B) != 0, "IQN B has no credentials on this target"
    if mutual:
        bad = {"LIBISCSI_CHAP_TARGET_PASSWORD": "NotTheTarget1"}
        assert inq("node-a%InitiatorSecret1@", extra=bad) != 0, "the initiator must refuse a target it cannot verify"


def test_whitelists_refuse_login_and_hide_targets(rig: Rig) -> None:
    need("iscsi-ls")
    open_t = rig.add_target("open")
    rig.add_lun(open_t, 1)
    closed = rig.add_target("closed", iqn_whitelist=IQN_A)
    rig.add_lun(closed, 1)
    netonly = rig.add_target("netonly", ip_whitelist="10.0.0.0/8")
    rig.add_lun(netonly, 1)
    assert luns_seen(rig, IQN_A) == {open_t.iqn: [1], closed.iqn: [1]}
    assert luns_seen(rig, IQN_B) == {open_t.iqn: [1]}
    host, port = rig.hostport(rig.chunk(1))
    for iqn, target in ((IQN_B, closed.iqn), (IQN_A, netonly.iqn)):
        ini = Initiator(host, port, iqn)
        with pytest.raises(LoginError) as e:
            ini.login(target)
        assert e.value.status == (2, 2)  # authorization failure
        ini.close()


def test_sessions_reported_to_the_catalog(rig: Rig) -> None:
    t = rig.add_target("conns")
    rig.add_lun(t, 1)
    host, port = rig.hostport(rig.chunk(3))
    ini = Initiator(host, port, IQN_B)
    ini.login(t.iqn)
    (conn,) = rig.catalog.connections.values()
    assert (conn.target_id, conn.initiator_iqn, conn.chunk) == (t.id, IQN_B, 3)
    assert rig.plane.status()["chunks"][2]["sessions"] == 1
    ini.logout()
    for _ in range(100):
        if not rig.catalog.connections:
            break
        import time

        time.sleep(0.02)
    assert rig.catalog.connections == {}


def test_health_probe_drops_a_dead_listener_and_readds_it(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    """The redirector's own probes, not stop_chunk's bookkeeping, notice a chunk that stops answering."""
    import asyncio
    import time

    t = rig.add_target("probe")
    rig.add_lun(t, 1)
    plane = rig.plane
    assert plane.loop is not None
    portal = plane.chunks[1]
    server = portal.server
    assert server is not None
    t_dead = time.monotonic()
    plane.loop.call_soon_threadsafe(server.close)  # the listener dies behind the plane's back

    def eventually(cond, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    eventually(lambda: 2 not in plane.alive, "a chunk that refuses connections stays in the ring")
    dropped = time.monotonic() - t_dead
    host, port = rig.hostport(rig.vip)
    for i in range(20):  # no initiator is sent to the dead chunk any more
        ini = Initiator(host, port, f"iqn.2020-01.io.zbs-test:probe-{i}")
        with pytest.raises(LoginError) as e:
            ini.login(t.iqn)
        ini.close()
        assert e.value.data["TargetAddress"].rsplit(",", 1)[0] != portal.address
    portal.server = None
    # listen again, still behind the plane's back: only the probe can put it back in the ring
    asyncio.run_coroutine_threadsafe(portal.start(), plane.loop).result(10)
    t_back = time.monotonic()
    eventually(lambda: 2 in plane.alive, "a chunk that is back is not re-added")
    with capsys.disabled():
        print(
            f"\nredirector: dead chunk left the ring after {dropped * 1000:.0f} ms, "
            f"back after {(time.monotonic() - t_back) * 1000:.0f} ms"
        )


def test_deleted_lun_disappears_and_its_file_is_let_go(rig: Rig) -> None:
    """After the management plane drops a LUN, sessions lose it and the data plane closes the
    file, so deleting it really frees the space."""
    import time

    t = rig.add_target("gone")
    lun = rig.add_lun(t, 1)
    ini = Initiator(*rig.hostport(rig.chunk(1)), IQN_A)
    ini.login(t.iqn)
    assert ini.write10(1, 0, b"\x77" * 4096).status == 0

    def fds_on_file() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/self/fd/{fd}") == lun.path
        return n

    assert fds_on_file() == 1, "one shared fd per LUN file"
    rig.catalog.remove_lun(lun.id)
    r = ini.read10(1, 0, 8)
    assert r.status == 2 and r.asc == (0x25, 0x00)
    assert ini.report_luns() == []
    deadline = time.monotonic() + 10
    while fds_on_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fds_on_file() == 0, "the data plane still holds the deleted LUN's file open"
    ini.logout()
