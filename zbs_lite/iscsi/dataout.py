"""The write data phase (RFC 7143 section 10.7-10.8): immediate data, unsolicited Data-Out, R2Ts.

A WRITE-like command's data arrives with the command (immediate), in an unsolicited burst
up to FirstBurstLength, and for the rest in bursts the target solicits with R2Ts,
MaxOutstandingR2T at a time. A Data-Out out of order fails its command only (ErrorRecovery
Level 0 cannot recover it); one for a task that is gone is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field

from zbs_lite.iscsi.negotiation import SessionParams
from zbs_lite.iscsi.numbering import Numbering
from zbs_lite.iscsi.pdu import FLAG_FINAL, OP_R2T, RESERVED_TAG, Pdu, build_bhs
from zbs_lite.iscsi.sense import ABORTED_COMMAND, DATA_PHASE_ERROR, ScsiError
from zbs_lite.iscsi.transport import PduTransport, ProtocolError

log = logging.getLogger(__name__)

_ttt = itertools.count(1)


def next_ttt() -> int:
    """A Target Transfer Tag (never the reserved 0xffffffff)."""
    return next(_ttt) & 0x7FFFFFFF


@dataclass
class WriteState:
    """Data-Out collection for one WRITE-like command."""

    edtl: int
    buffer: bytearray | bytes  # bytes only when the command carried all its data immediately
    received: int = 0
    next_offset: int = 0
    outstanding: int = 0
    r2tsn: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False
    # Data-Out sequences in progress: TTT (RESERVED_TAG for unsolicited data) -> [next offset, next DataSN]
    sequences: dict[int, list[int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.received >= self.edtl


class DataOut:
    """The write data phases of one session's commands, by Initiator Task Tag."""

    def __init__(self, transport: PduTransport, numbers: Numbering, params: SessionParams, who: object) -> None:
        self.transport = transport
        self.numbers = numbers
        self.params = params
        self.who = who  # how log lines name the connection
        self.writes: dict[int, WriteState] = {}

    def start(self, pdu: Pdu, edtl: int) -> WriteState:
        """The data phase of a write command, from its immediate data on."""
        if len(pdu.data) == edtl:  # all of it came as immediate data: no copy
            return WriteState(edtl, pdu.data, received=edtl, next_offset=edtl)
        buf = bytearray(edtl)
        buf[: len(pdu.data)] = pdu.data
        # F on the command: no unsolicited Data-Out follows; otherwise it runs to FirstBurstLength
        unsolicited = 0 if self.params.initial_r2t or pdu.final else min(self.params.first_burst, edtl)
        ws = WriteState(edtl, buf, received=len(pdu.data), next_offset=max(len(pdu.data), unsolicited))
        if unsolicited > len(pdu.data):
            ws.sequences[RESERVED_TAG] = [len(pdu.data), 0]
        self.writes[pdu.itt] = ws
        return ws

    def forget(self, itt: int) -> None:
        self.writes.pop(itt, None)

    def on_data_out(self, pdu: Pdu) -> None:
        ws = self.writes.get(pdu.itt)
        if ws is None:
            return  # the command already finished (e.g. failed early): drop its remaining data
        offset, ttt, data_sn = pdu.u32(40), pdu.u32(20), pdu.u32(36)
        n = len(pdu.data)
        seq = ws.sequences.get(ttt)
        if seq is None:
            raise ProtocolError(f"Data-Out for task {pdu.itt:#x} with unknown TTT {ttt:#x}")
        if offset != seq[0] or data_sn != seq[1]:
            # at ErrorRecoveryLevel 0 the command cannot be saved: fail it (ABORTED COMMAND),
            # drop the rest of its data, keep the connection for everything else
            log.warning(
                "%r: task %#x: Data-Out offset %d DataSN %d, expected %s", self.who, pdu.itt, offset, data_sn, seq
            )
            ws.failed = True
            del self.writes[pdu.itt]
            ws.event.set()
            return
        if offset + n > ws.edtl:
            raise ProtocolError(f"Data-Out at {offset}+{n} beyond the expected length {ws.edtl}")
        if not isinstance(ws.buffer, bytearray):
            raise ProtocolError("Data-Out for a command that carried all its data")
        ws.buffer[offset : offset + n] = pdu.data
        ws.received += n
        seq[0] += n
        seq[1] += 1
        if pdu.final:
            del ws.sequences[ttt]
            if ttt != RESERVED_TAG:
                ws.outstanding -= 1
        ws.event.set()

    async def collect(self, pdu: Pdu, ws: WriteState) -> None:
        """Solicit the rest of a write's data with R2Ts, MaxOutstandingR2T at a time."""
        p = self.params
        n = self.numbers
        while ws.received < ws.edtl:
            while ws.outstanding < p.max_outstanding_r2t and ws.next_offset < ws.edtl:
                length = min(p.max_burst, ws.edtl - ws.next_offset)
                ttt = next_ttt()
                ws.sequences[ttt] = [ws.next_offset, 0]
                hdr = build_bhs(
                    OP_R2T,
                    FLAG_FINAL,
                    lun=pdu.lun_field,
                    itt=pdu.itt,
                    words=(ttt, n.stat_sn, n.exp_cmd_sn, n.max_cmd_sn(), ws.r2tsn, ws.next_offset, length),
                )
                ws.r2tsn += 1
                ws.next_offset += length
                ws.outstanding += 1
                await self.transport.send_pdu(hdr)
            ws.event.clear()
            if ws.received < ws.edtl and not ws.failed:
                await ws.event.wait()
            if ws.failed:
                raise ScsiError(ABORTED_COMMAND, DATA_PHASE_ERROR)
