"""Hostile or broken peers: each one loses its own connection, and nobody else notices."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

import pytest
from initiator import Initiator
from iscsi_rig import IQN_A, IQN_B, Rig

from zbs_lite.iscsi.pdu import BHS_LEN, OP_DATA_IN, OP_LOGIN_RESP, OP_SCSI_RESP, bhs_lengths, pad4

# What a target sends only when it serves a command: a peer that never logged in must get neither.
SERVED = {OP_SCSI_RESP, OP_DATA_IN}


def _answers_until_closed(sock: socket.socket, timeout: float = 10.0) -> list[int] | None:
    """The opcodes of the PDUs the target sent before it closed the connection (EOF or reset),
    or None when it still held the connection open after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    received = b""
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    opcodes, off = [], 0
    while off + BHS_LEN <= len(received):
        ahs, data = bhs_lengths(received[off : off + BHS_LEN])
        opcodes.append(received[off] & 0x3F)
        off += BHS_LEN + ahs + data + pad4(data)
    return opcodes


def _assert_dropped_unserved(sock: socket.socket) -> None:
    answers = _answers_until_closed(sock)
    assert answers is not None, "the target kept a misbehaving peer's connection open"
    assert not SERVED & set(answers), f"the target served a command to a peer that never logged in: {answers}"


def test_the_drop_check_sees_a_served_command_and_an_open_connection() -> None:
    """The check the tests below rely on can fail: a peer answered with Data-In, or never dropped."""
    served, peer = socket.socketpair()
    peer.sendall(bytes([OP_LOGIN_RESP]) + bytes(47) + bytes([OP_DATA_IN, 0x81, 0, 0, 0, 0, 0, 8]) + bytes(40 + 8))
    peer.close()
    assert _answers_until_closed(served) == [OP_LOGIN_RESP, OP_DATA_IN]
    served.close()
    held, peer = socket.socketpair()
    assert _answers_until_closed(held, timeout=0.2) is None
    held.close()
    peer.close()


def _login_pdu(initiator: str, target: str, data_len: int | None = None) -> bytes:
    keys = f"InitiatorName={initiator}\0TargetName={target}\0SessionType=Normal\0AuthMethod=None\0".encode()
    bhs = bytearray(48)
    bhs[0], bhs[1] = 0x43, 0x87  # immediate login, T, CSG 1 -> NSG 3
    n = len(keys) if data_len is None else data_len
    bhs[5:8] = n.to_bytes(3, "big")
    bhs[8:14] = b"\x80\x00\x00\x00\x00\x01"
    return bytes(bhs) + keys + b"\0" * (-len(keys) % 4)


def _scsi_read_pdu() -> bytes:
    bhs = bytearray(48)
    bhs[0], bhs[1] = 0x01, 0xC1
    bhs[9] = 1
    struct.pack_into(">III", bhs, 16, 7, 4096, 1)
    bhs[32:42] = struct.pack(">BBIBHB", 0x28, 0, 0, 0, 8, 0)
    return bytes(bhs)


def garbage(rig: Rig, addr: tuple[str, int], target: str) -> socket.socket:
    s = socket.create_connection(addr)
    s.sendall(bytes(range(256)) * 64)
    return s


def truncated(rig: Rig, addr: tuple[str, int], target: str) -> socket.socket:
    s = socket.create_connection(addr)
    s.sendall(_login_pdu(IQN_A, target)[:30])
    s.shutdown(socket.SHUT_WR)
    return s


def truncated_data(rig: Rig, addr: tuple[str, int], target: str) -> socket.socket:
    s = socket.create_connection(addr)
    s.sendall(_login_pdu(IQN_A, target)[:60])  # header complete, data segment cut short
    s.shutdown(socket.SHUT_WR)
    return s


def oversized(rig: Rig, addr: tuple[str, int], target: str) -> socket.socket:
    s = socket.create_connection(addr)
    s.sendall(_login_pdu(IQN_A, target, data_len=0xFFFFFF)[:48] + b"x" * 4096)
    return s


def command_before_login(rig: Rig, addr: tuple[str, int], target: str) -> socket.socket:
    s = socket.create_connection(addr)
    s.sendall(_scsi_read_pdu())
    return s


@pytest.mark.parametrize(
    "misbehave", [garbage, truncated, truncated_data, oversized, command_before_login], ids=lambda f: f.__name__
)
def test_bad_peer_is_dropped_and_others_carry_on(rig: Rig, misbehave: Callable[..., socket.socket]) -> None:
    t = rig.add_target("robust")
    rig.add_lun(t, 1)
    addr = rig.hostport(rig.chunk(1))
    good = Initiator(*addr, IQN_B)
    good.login(t.iqn)
    assert good.write10(1, 0, b"\x11" * 4096).status == 0

    bad = misbehave(rig, addr, t.iqn)
    _assert_dropped_unserved(bad)
    bad.close()

    # the session that was already there still works, and new logins are served
    r = good.read10(1, 0, 8)
    assert r.status == 0 and r.data == b"\x11" * 4096
    good.logout()
    fresh = Initiator(*addr, IQN_A)
    fresh.login(t.iqn)
    assert fresh.read10(1, 0, 8).data == b"\x11" * 4096
    fresh.logout()


def test_client_vanishing_mid_write(rig: Rig) -> None:
    """A WRITE whose data never comes: the target asked for it (R2T), then the peer is gone."""
    t = rig.add_target("vanish")
    lun = rig.add_lun(t, 1)
    addr = rig.hostport(rig.chunk(2))
    other = Initiator(*addr, IQN_B)
    other.login(t.iqn)

    ini = Initiator(*addr, IQN_A)
    ini.login(t.iqn)
    bhs = bytearray(48)
    bhs[0], bhs[1] = 0x01, 0xA1  # F, W, simple
    bhs[9] = 1
    struct.pack_into(">III", bhs, 16, 99, 1 << 20, ini.cmd_sn)
    bhs[32:42] = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 2048, 0)
    ini.send_raw(bytes(bhs))
    r2t = ini.recv()
    assert r2t.opcode == 0x31  # the target solicits the data ...
    ini.send_raw(b"\0" * 48)  # ... and gets half a Data-Out header before the peer disappears
    ini.sock.close()

    assert other.read10(1, 0, 8).status == 0
    assert other.write10(1, 16, b"\x22" * 512).status == 0
    other.logout()
    with open(lun.path, "rb") as f:
        assert f.read(4096) == bytes(4096), "nothing of the abandoned write may land"


def test_nothing_served_on_the_vip(rig: Rig) -> None:
    """The VIP portal never carries data: a normal login there is only ever redirected."""
    t = rig.add_target("vip")
    rig.add_lun(t, 1)
    s = socket.create_connection(rig.hostport(rig.vip))
    s.sendall(_login_pdu(IQN_A, t.iqn))
    resp = s.recv(48)
    assert resp[0] & 0x3F == 0x23 and (resp[36], resp[37]) == (1, 1)
    s.sendall(_scsi_read_pdu())
    _assert_dropped_unserved(s)
    s.close()


def test_many_sessions_at_once_keep_their_data_apart(rig: Rig) -> None:
    """24 sessions on three chunks write and read their own regions of one LUN at the same time."""
    import threading

    t = rig.add_target("crowd")
    lun = rig.add_lun(t, 1)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            ini = Initiator(*rig.hostport(rig.chunk(1 + i % 3)), f"iqn.2020-01.io.zbs-test:crowd-{i}")
            ini.login(t.iqn)
            for round_ in range(10):
                data = bytes([i, round_]) * 2048  # 4 KiB
                assert ini.write10(1, i * 80 + round_ * 8, data).status == 0
                assert ini.read10(1, i * 80 + round_ * 8, 8).data == data
            ini.logout()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors[:3]
    with open(lun.path, "rb") as f:
        for i in range(24):
            f.seek((i * 80 + 9 * 8) * 512)
            assert f.read(4096) == bytes([i, 9]) * 2048
