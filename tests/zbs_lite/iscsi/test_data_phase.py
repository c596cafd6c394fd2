"""The write data phase under peers that stall, send data for the wrong task, or send garbage.

A data phase that does not complete in time fails its command (ABORTED COMMAND / INITIATOR
RESPONSE TIMEOUT) and its late data is dropped; Data-Out for unknown, finished or aborted
tasks never lands; a seeded fuzz of the data phase (ZBS_LITE_ISCSI_FUZZ_SEED replays it)
never crashes the target, never writes outside what was asked, and never disturbs another
session.
"""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from initiator import Initiator
from iscsi_rig import IQN_A, IQN_B, Rig, make_rig

MiB = 1 << 20
DATA_OUT_TIMEOUT = 1.0


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[Rig]:
    """A data plane whose data phases time out after a second."""
    with make_rig(tmp_path, data_out_timeout=DATA_OUT_TIMEOUT) as r:
        yield r


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def test_a_stalled_data_phase_fails_its_command_and_its_late_data_is_dropped(quick: Rig) -> None:
    t = quick.add_target("stall")
    lun = quick.add_lun(t, 1)
    a = Initiator(*quick.hostport(quick.chunk(1)), IQN_A)
    a.login(t.iqn)
    data = b"\x5a" * 8192

    stalled = a.command(1, write10(0, 16), edtl=len(data), write=True)  # no data at all
    r2t = a.recv()
    assert r2t.opcode == 0x31
    ttt, _, _ = a.r2t_fields(r2t)
    half = a.command(1, write10(64, 16), edtl=len(data), write=True)  # half of it, then nothing
    r2t_half = a.recv()
    assert r2t_half.opcode == 0x31
    ttt_half, _, _ = a.r2t_fields(r2t_half)
    a.data_out(1, half, ttt_half, 0, data[:4096], final=False)
    t0 = time.monotonic()
    failed = {}
    while len(failed) < 2:
        r = a.recv()
        assert r.opcode == 0x21, f"unexpected opcode {r.opcode:#x}"
        failed[a.itt_of(r)] = a.reply(r)
    waited = time.monotonic() - t0
    assert set(failed) == {stalled, half}
    for reply in failed.values():
        assert reply.status == 0x02 and (reply.sense_key, reply.asc) == (0x0B, (0x4B, 0x06)), reply.sense.hex()
    assert DATA_OUT_TIMEOUT * 0.5 < waited < DATA_OUT_TIMEOUT + 3

    a.data_out(1, stalled, ttt, 0, data)  # too late: dropped
    a.data_out(1, half, ttt_half, 4096, data[4096:], data_sn=1)
    a.ping()
    assert a.tur(1).status == 0, "the session carries on"
    assert a.read10(1, 0, 128).data == bytes(128 * 512), "nothing of the failed writes landed"
    assert a.write10(1, 200, data).status == 0
    a.logout()
    with open(lun.path, "rb") as f:
        assert f.read(128 * 512) == bytes(128 * 512)


def test_data_out_for_tasks_that_are_not_waiting_is_dropped(rig: Rig) -> None:
    t = rig.add_target("stray")
    lun = rig.add_lun(t, 1)
    a = Initiator(*rig.hostport(rig.chunk(2)), IQN_A)
    a.login(t.iqn)
    junk = b"\xee" * 4096
    a.data_out(1, 0x4242, 0x77, 0, junk)  # a task that never existed
    done = a.command(1, write10(8, 8), edtl=4096, write=True, data=b"\x01" * 4096)  # all data immediate
    r = a.recv()
    assert r.opcode == 0x21 and a.itt_of(r) == done and a.reply(r).status == 0
    a.data_out(1, done, 0xFFFFFFFF, 0, junk)  # a task that already finished
    aborted = a.command(1, write10(16, 8), edtl=4096, write=True)
    r2t = a.recv()
    ttt, _, _ = a.r2t_fields(r2t)
    abort = struct.pack(">IIII", aborted, a.cmd_sn, a.exp_stat_sn, 0)  # ABORT TASK (RefCmdSN unchecked)
    a.send_raw(a.pdu(0x02, 0x80 | 0x01, lun=1, itt=0x9999, fields=abort, immediate=True))
    r = a.recv()
    assert r.opcode == 0x22 and r.bhs[2] == 0, "the task is aborted"
    a.data_out(1, aborted, ttt, 0, junk)  # data for the aborted task
    a.ping()
    assert a.tur(1).status == 0
    assert a.read10(1, 0, 32).data == bytes(4096) + b"\x01" * 4096 + bytes(8192)
    a.logout()
    with open(lun.path, "rb") as f:
        assert junk[:512] not in f.read(1 * MiB)


class Fuzzer:
    """One misbehaving session: random write commands, Data-Outs, aborts; reconnects when dropped."""

    def __init__(self, rig: Rig, target: str, rng: random.Random) -> None:
        self.rig, self.target, self.rng = rig, target, rng
        self.open: dict[int, list[tuple[int, int, int]]] = {}  # itt -> R2Ts seen (ttt, offset, length)
        self.finished: list[int] = []
        self.drops = 0
        self.answers = 0
        self._connect()

    def _connect(self) -> None:
        self.ini = Initiator(*self.rig.hostport(self.rig.chunk(1)), IQN_A, timeout=5)
        self.ini.login(self.target)
        self.open.clear()

    def _pump(self) -> None:
        """Read whatever the target sent, without blocking."""
        while select.select([self.ini.sock], [], [], 0)[0]:
            r = self.ini.recv()
            itt = self.ini.itt_of(r)
            if r.opcode == 0x31:
                self.open.setdefault(itt, []).append(self.ini.r2t_fields(r))
            elif r.opcode in (0x21, 0x25):
                self.answers += 1
                self.open.pop(itt, None)
                self.finished.append(itt)

    def step(self, act: bool = True) -> None:
        try:
            if act:
                self._act()
            self._pump()
        except (ConnectionError, socket.timeout, OSError):
            self.drops += 1  # the target dropped this connection (a protocol error): log in again
            self.ini.close()
            self._connect()

    def _act(self) -> None:
        rng, ini = self.rng, self.ini
        what = rng.random()
        if what < 0.3 or not self.open:
            blocks = rng.choice([0, 1, 8, 64, 2048, 70000])
            # writes of at most 4464 blocks (2.2 MiB) starting below 16 MiB, or far beyond the LUN
            lba = rng.choice([0, 8, 1000, 10**9]) if rng.random() < 0.2 else rng.randrange(0, 16 * MiB // 512)
            want = blocks * 512
            edtl = rng.choice([want, want // 2, want + 512, 0, 0xFFFFFE00, rng.randrange(0, 1 << 22)])
            imm = bytes([rng.randrange(1, 256)]) * min(edtl, rng.choice([0, 512, 4096, 65536]))
            cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks & 0xFFFF, 0)
            itt = ini.command(1, cdb, edtl=edtl, write=True, data=imm, final=rng.random() < 0.9)
            self.open[itt] = []
        elif what < 0.85:
            pool = list(self.open) + self.finished[-5:] + [rng.randrange(1 << 32)]
            itt = rng.choice(pool)
            r2ts = self.open.get(itt) or [(0xFFFFFFFF, 0, 8192)]
            ttt, offset, length = rng.choice(r2ts)
            if rng.random() < 0.2:
                ttt = rng.choice([ttt, 0xFFFFFFFF, rng.randrange(1 << 31)])
            if rng.random() < 0.2:
                offset = rng.choice([offset + 512, offset + length, rng.randrange(1 << 26)])
            size = rng.choice([512, 4096, 65536, length]) if rng.random() < 0.9 else rng.randrange(1, 300000)
            data = bytes([rng.randrange(1, 256)]) * min(size, 262144)
            ini.data_out(1, itt, ttt, offset, data, data_sn=rng.choice([0, 0, 1, 7]), final=rng.random() < 0.7)
        elif what < 0.95:
            itt = rng.choice(list(self.open))
            fields = struct.pack(">IIII", itt, ini.cmd_sn, ini.exp_stat_sn, 0)
            ini.send_raw(ini.pdu(0x02, 0x81, lun=1, itt=rng.randrange(1 << 31), fields=fields, immediate=True))
        else:
            ini.ping()


def test_fuzzed_data_phase_never_crashes_or_writes_where_not_asked(
    quick: Rig, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("ZBS_LITE_ISCSI_FUZZ_SEED", str(random.randrange(1 << 30))))
    print(f"iSCSI data-phase fuzz seed {seed} (ZBS_LITE_ISCSI_FUZZ_SEED replays it)")
    rng = random.Random(seed)
    t = quick.add_target("fuzz")
    lun = quick.add_lun(t, 1, size=64 * MiB)
    good = Initiator(*quick.hostport(quick.chunk(2)), IQN_B)
    good.login(t.iqn)
    fuzz = Fuzzer(quick, t.iqn, rng)
    written: dict[int, bytes] = {}
    with caplog.at_level(logging.WARNING, logger="zbs_lite"):
        for i in range(400):
            fuzz.step()
            if i % 20 == 0:  # the well-behaved session keeps working, on its own region
                lba = (40 * MiB >> 9) + 16 * (i // 20)
                data = struct.pack(">I", i) * 2048
                assert good.write10(1, lba, data).status == 0
                written[lba] = data
        time.sleep(DATA_OUT_TIMEOUT + 0.5)  # every data phase left open has timed out by now
        fuzz.step(act=False)
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert crashes == [], [r.getMessage() for r in crashes][:5]
    for lba, data in written.items():
        assert good.read10(1, lba, 16).data == data
    good.logout()
    fresh = Initiator(*quick.hostport(quick.chunk(1)), IQN_B)
    fresh.login(t.iqn)
    assert fresh.tur(1).status == 0, "the target still serves"
    fresh.logout()
    with open(lun.path, "rb") as f:
        f.seek(24 * MiB)
        assert f.read(16 * MiB) == bytes(16 * MiB), "the fuzzed writes only ever aimed below 19 MiB"
    with capsys.disabled():
        print(f"\ndata-phase fuzz (seed {seed}): 400 steps, {fuzz.answers} answers, {fuzz.drops} connections dropped")
