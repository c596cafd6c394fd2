"""Fencing through the management API: once a revoke returns, the revoked initiator cannot write.

The seed's node-failure scenario with a half-dead node A: A has writes waiting for their data
(the target sent R2Ts), A is revoked (ControllerUnpublish), B is granted and writes; A's late
Data-Out must never land, and every outstanding write of A must fail with CHECK CONDITION.
"""

from __future__ import annotations

import struct
import time
import uuid

import pytest
from initiator import Initiator
from iscsi_rig import IQN_A, IQN_B
from zl_helpers import Api

from zbs_lite.testing import ZbsLiteProcess

BLOCK = 512


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def test_revoked_initiator_cannot_write_late_data(
    zbs_lite: ZbsLiteProcess, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    t = api.target(f"fence-{uuid.uuid4().hex[:8]}")
    lun = api.lun(t["id"], size=16 << 20, allowed_initiators=IQN_A)
    n = lun["lun_id"]

    # A has a session on two chunks (multipath), each with two writes waiting for their data
    stale = b"STALE-WRITE-FROM-A".ljust(BLOCK, b"!") * 8
    paths = [Initiator(*zbs_lite.chunks[i], IQN_A, timeout=10) for i in (0, 1)]
    pending: list[tuple[Initiator, int, int, int]] = []  # (path, itt, ttt, lba)
    for k, a in enumerate(paths):
        a.login(t["iqn_name"])
        for j in range(2):
            lba = 100 + 8 * (2 * k + j)
            itt = a.command(n, write10(lba, 8), edtl=len(stale), write=True)
            r2t = a.recv()
            assert r2t.opcode == 0x31 and a.itt_of(r2t) == itt, "the target solicits the data with an R2T"
            ttt, offset, length = a.r2t_fields(r2t)
            assert (offset, length) == (0, len(stale))
            pending.append((a, itt, ttt, lba))

    t0 = time.monotonic()
    api.ok("update-iscsi-lun", {"where": {"id": lun["id"]}, "data": {"allowed_initiators": IQN_B}})
    acknowledged = time.monotonic() - t0

    # every outstanding write of A fails, without A sending anything more
    for a, itt, _, _ in pending:
        r = a.recv()
        assert r.opcode == 0x21 and a.itt_of(r) == itt, f"expected the SCSI Response of {itt:#x}, got {r.opcode:#x}"
        reply = a.reply(r)
        assert reply.status == 0x02, "a fenced write must fail with CHECK CONDITION"
        assert (reply.sense_key, reply.asc) == (0x05, (0x25, 0x00)), reply.sense.hex()
    all_failed = time.monotonic() - t0

    b = Initiator(*zbs_lite.chunks[0], IQN_B)
    b.login(t["iqn_name"])
    mine = b"WRITTEN-BY-B".ljust(BLOCK, b".") * 8
    for _, _, _, lba in pending:
        assert b.write10(n, lba, mine).status == 0

    # A wakes up and sends the data its R2Ts asked for, ten seconds too late
    for a, itt, ttt, _ in pending:
        a.data_out(n, itt, ttt, 0, stale)
    for a in paths:
        a.ping()  # A's Data-Outs have been read and dropped by now
    time.sleep(0.2)
    for _, _, _, lba in pending:
        assert b.read10(n, lba, 8).data == mine, "A's late Data-Out overwrote B's data"
    with open(zbs_lite.pool_path / "luns" / lun["local_id"], "rb") as f:
        for _, _, _, lba in pending:
            f.seek(lba * BLOCK)
            assert f.read(len(mine)) == mine
    assert b.write10(n, 0, mine).status == 0
    b.logout()
    for a in paths:
        assert a.tur(n).asc == (0x25, 0x00), "A stays fenced"
        a.logout()
    with capsys.disabled():
        print(
            f"\nfencing: revoke acknowledged after {acknowledged * 1000:.1f} ms; all 4 outstanding writes of the"
            f" revoked initiator (2 sessions) failed {all_failed * 1000:.1f} ms after the revoke was sent"
        )
