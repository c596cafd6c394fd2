"""The write data phase (RFC 7143 sections 10.7-10.8): immediate data, unsolicited Data-Out, R2Ts.

A WRITE-like command's data arrives with the command (immediate), in an unsolicited burst up
to FirstBurstLength, and for the rest in bursts the target solicits with R2Ts,
MaxOutstandingR2T at a time, each at most MaxBurstLength. The target takes only what the
command uses (``need``: what the CDB asks for, at most the Expected Data Transfer Length),
keeps each Data-Out's own buffer (no buffer of the whole length is made up front), and
solicits data only once the session's :class:`Budget` holds room for it.

A command's data phase ends one of three ways: complete; failed (a Data-Out out of order or
beyond its burst: ABORTED COMMAND / DATA PHASE ERROR, at ErrorRecoveryLevel 0 the command
cannot be saved); or timed out (no complete data within ``timeout``: ABORTED COMMAND /
INITIATOR RESPONSE TIMEOUT). Once it ended, or the task is aborted or fenced, later Data-Out
for it is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from dataclasses import dataclass, field

from zbs_lite.iscsi.backstore import Payload
from zbs_lite.iscsi.negotiation import SessionParams
from zbs_lite.iscsi.numbering import Numbering
from zbs_lite.iscsi.pdu import FLAG_FINAL, OP_R2T, RESERVED_TAG, Pdu, build_bhs
from zbs_lite.iscsi.sense import ABORTED_COMMAND, DATA_PHASE_ERROR, INITIATOR_RESPONSE_TIMEOUT, ScsiError
from zbs_lite.iscsi.transport import PduTransport, ProtocolError

log = logging.getLogger(__name__)

_ttt = itertools.count(1)


def next_ttt() -> int:
    """A Target Transfer Tag (never the reserved 0xffffffff)."""
    return next(_ttt) & 0x7FFFFFFF


class Budget:
    """Bytes of command data one session may hold at once; waiters are served in arrival order.

    Taking the room before soliciting a command's data (or reading a command's result) bounds
    a session's buffers whatever the peer asks for; a command never holds part of its room
    while waiting for the rest, so commands that got theirs always finish.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def take(self, n: int) -> int:
        """Wait for ``n`` bytes of room (at most the limit); returns what to give back."""
        n = min(n, self.limit)
        if not self._waiters and self.used + n <= self.limit:
            self.used += n
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give(n)  # granted in the same instant it was cancelled
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            raise
        return n

    def give(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self.used += n
                fut.set_result(None)


@dataclass
class Burst:
    """One Data-Out sequence: unsolicited (TTT 0xffffffff) or answering one R2T."""

    offset: int  # where the next Data-Out must start
    data_sn: int
    end: int


@dataclass(eq=False)
class WriteState:
    """Data-Out collection for one WRITE-like command."""

    edtl: int
    need: int  # the bytes the command uses: what its CDB asks for, at most the EDTL
    payload: Payload = field(default_factory=Payload)
    next_offset: int = 0  # where the next R2T starts
    outstanding: int = 0
    r2tsn: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)
    failure: tuple[int, tuple[int, int]] | None = None
    bursts: dict[int, Burst] = field(default_factory=dict)  # by TTT

    @property
    def complete(self) -> bool:
        return len(self.payload) >= self.need

    def take(self, offset: int, data: bytes) -> None:
        """Keep the part of the data the command uses (bursts never overlap)."""
        if offset < self.need:
            self.payload.add(offset, memoryview(data)[: self.need - offset])

    def fail(self, key: int, asc_ascq: tuple[int, int]) -> None:
        self.failure = (key, asc_ascq)
        self.event.set()


class DataOut:
    """The write data phases of one session's commands, by Initiator Task Tag."""

    def __init__(
        self, transport: PduTransport, numbers: Numbering, params: SessionParams, timeout: float, who: object
    ) -> None:
        self.transport = transport
        self.numbers = numbers
        self.params = params
        self.timeout = timeout
        self.who = who  # how log lines name the connection
        self.writes: dict[int, WriteState] = {}
        self.dropped = 0  # Data-Out PDUs for tasks not waiting for data

    def start(self, pdu: Pdu, edtl: int, need: int) -> WriteState:
        """The data phase of an admitted write command, from its immediate data on."""
        ws = WriteState(edtl, need)
        immediate = len(pdu.data)
        ws.take(0, pdu.data)
        # F on the command: no unsolicited Data-Out follows; otherwise it runs to FirstBurstLength
        unsolicited = 0 if self.params.initial_r2t or pdu.final else min(self.params.first_burst, edtl)
        if unsolicited > immediate:
            ws.bursts[RESERVED_TAG] = Burst(immediate, 0, unsolicited)
        ws.next_offset = max(immediate, unsolicited)
        if not ws.complete:
            self.writes[pdu.itt] = ws
        return ws

    def end(self, itt: int, ws: WriteState) -> None:
        """The command's data phase is over: drop whatever still comes for it."""
        if self.writes.get(itt) is ws:
            del self.writes[itt]

    def on_data_out(self, pdu: Pdu) -> None:
        ws = self.writes.get(pdu.itt)
        if ws is None:
            self.dropped += 1  # finished, failed, aborted, fenced or never there: the data goes nowhere
            return
        offset, ttt, data_sn = pdu.u32(40), pdu.u32(20), pdu.u32(36)
        n = len(pdu.data)
        burst = ws.bursts.get(ttt)
        if burst is None:
            raise ProtocolError(f"Data-Out for task {pdu.itt:#x} with unknown TTT {ttt:#x}")
        if offset != burst.offset or data_sn != burst.data_sn or offset + n > burst.end:
            log.warning(
                "%r: task %#x: Data-Out offset %d+%d DataSN %d, expected offset %d DataSN %d within %d",
                self.who, pdu.itt, offset, n, data_sn, burst.offset, burst.data_sn, burst.end,
            )  # fmt: skip
            self._fail(pdu.itt, ws, DATA_PHASE_ERROR)
            return
        ws.take(offset, pdu.data)
        burst.offset += n
        burst.data_sn += 1
        if pdu.final:
            if burst.offset != burst.end:
                log.warning("%r: task %#x: burst ended at %d, short of %d", self.who, pdu.itt, burst.offset, burst.end)
                self._fail(pdu.itt, ws, DATA_PHASE_ERROR)
                return
            del ws.bursts[ttt]
            if ttt != RESERVED_TAG:
                ws.outstanding -= 1
        ws.event.set()

    def _fail(self, itt: int, ws: WriteState, asc_ascq: tuple[int, int]) -> None:
        ws.fail(ABORTED_COMMAND, asc_ascq)
        self.end(itt, ws)

    def timed_out(self, itt: int, ws: WriteState) -> None:
        log.warning("%r: task %#x: no complete data within %ss", self.who, itt, self.timeout)
        self._fail(itt, ws, INITIATOR_RESPONSE_TIMEOUT)

    async def collect(self, pdu: Pdu, ws: WriteState) -> None:
        """Solicit the rest of a write's data with R2Ts, MaxOutstandingR2T at a time, until it is all
        there (raises ScsiError when the data phase failed). The caller bounds the time it takes."""
        p = self.params
        n = self.numbers
        while not ws.complete and ws.failure is None:
            while ws.outstanding < p.max_outstanding_r2t and ws.next_offset < ws.need:
                length = min(p.max_burst, ws.need - ws.next_offset)
                ttt = next_ttt()
                ws.bursts[ttt] = Burst(ws.next_offset, 0, ws.next_offset + length)
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
            if not ws.complete and ws.failure is None:
                await ws.event.wait()
        if ws.failure is not None:
            raise ScsiError(*ws.failure)
        self.end(pdu.itt, ws)
