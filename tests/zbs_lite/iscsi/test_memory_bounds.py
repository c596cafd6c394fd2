"""What one peer can make a zbs-lite server allocate, measured on the server process's RSS.

A command's data buffers are allocated as its data arrives, burst by burst, and only after
the command was checked against the LUN (never on a discovery session); Text responses a
peer does not fetch are not kept beyond one per connection.
"""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from initiator import Initiator
from iscsi_rig import IQN_A
from zl_helpers import Api

from zbs_lite.testing import ZbsLiteProcess

MiB = 1 << 20


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes: its resident memory now and at its peak."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZbsLiteProcess]:
    """A server of its own: its peak RSS must only count what these tests do."""
    with ZbsLiteProcess(tmp_path_factory.mktemp("membound"), task_delay=0.01) as zl:
        yield zl


def write16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0, lba, blocks, 0, 0)


def test_a_4_gib_transfer_length_allocates_nothing(server: ZbsLiteProcess, capsys: pytest.CaptureFixture[str]) -> None:
    api = Api(server)
    t = api.target(f"edtl-{uuid.uuid4().hex[:8]}")
    lun = api.lun(t["id"], size=64 * MiB)
    assert server.proc is not None
    pid = server.proc.pid
    edtl = 0xFFFFFE00  # the largest Expected Data Transfer Length: 4 GiB less one block
    blocks = edtl // 512

    a = Initiator(*server.chunks[0], IQN_A)
    a.login(t["iqn_name"])
    assert a.tur(lun["lun_id"]).status == 0
    _, peak0 = rss(pid)

    # a 48-byte PDU asking for 4 GiB: refused at once, before any data phase
    itt = a.command(lun["lun_id"], write16(0, blocks), edtl=edtl, write=True)
    r = a.recv()
    assert r.opcode == 0x21 and a.itt_of(r) == itt, "no R2T: the command is refused before its data phase"
    assert a.reply(r).status == 0x02
    # the most a LUN allows in one command (32 MiB), sixteen times, data never sent: nothing is
    # allocated for data that did not come, and data is solicited for only as much as the
    # session's buffer budget holds
    writes = [a.command(lun["lun_id"], write16(0, 65536), edtl=32 * MiB, write=True) for _ in range(16)]
    tur = a.command(lun["lun_id"], bytes(6), edtl=0)
    solicited = set()
    while True:
        r = a.recv()
        if r.opcode == 0x31:
            solicited.add(a.itt_of(r))
            continue
        assert a.itt_of(r) == tur and a.reply(r).status == 0, "the session still works"
        break
    assert solicited and solicited <= set(writes)

    # the same PDU on a discovery session, where no SCSI command is allowed: the connection goes
    d = Initiator(*server.chunks[1], IQN_A)
    d.login(None, discovery=True)
    d.command(0, write16(0, blocks), edtl=edtl, write=True)
    with pytest.raises((ConnectionError, socket.timeout)):
        while True:
            assert d.recv().opcode == 0x3F, "only a Reject may come back"
    d.close()

    _, peak = rss(pid)
    a.close()
    grown = peak - peak0
    with capsys.disabled():
        print(f"\nmemory: peak RSS grew {grown / MiB:.1f} MiB under a 4 GiB EDTL request and 16 x 32 MiB writes")
    assert grown < 32 * MiB, f"the server's peak RSS grew by {grown / MiB:.0f} MiB"


def test_unfetched_text_responses_are_not_kept(server: ZbsLiteProcess, capsys: pytest.CaptureFixture[str]) -> None:
    api = Api(server)
    prefix = f"txt-{uuid.uuid4().hex[:6]}"
    for start in (0, 1000):
        body = [
            {"name": f"{prefix}-{i:04d}", "cluster_id": api.cluster_id(), "replica_num": 2, "thin_provision": True}
            for i in range(start, start + 1000)
        ]
        api.mutate("create-iscsi-target", body)
    assert server.proc is not None
    pid = server.proc.pid

    d = Initiator(*server.chunks[0], IQN_A)
    d.login(None, discovery=True, max_recv=512)  # it accepts 512 bytes per PDU
    first = d.text({"SendTargets": "All"})
    assert first, "the first 512 bytes of the answer"
    before, _ = rss(pid)
    for _ in range(150):  # ... asks again and again, and never fetches the rest
        d.text({"SendTargets": "All"})
    during, _ = rss(pid)
    d.close()
    d2 = Initiator(*server.chunks[0], IQN_A)
    d2.login(None, discovery=True)
    d2.logout()
    after, _ = rss(pid)
    with capsys.disabled():
        print(
            "\nmemory: 150 unfetched SendTargets answers (2,000 targets) grew RSS by"
            f" {(during - before) / MiB:.1f} MiB, {(after - before) / MiB:.1f} MiB after close"
        )
    assert during - before < 8 * MiB, f"RSS grew by {(during - before) / MiB:.0f} MiB"
    assert after - before < 8 * MiB
