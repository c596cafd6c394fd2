"""One session's SCSI commands from arrival to response: checks, data phase, execution, fencing.

A command is screened by the SCSI core when it arrives (nothing is allocated for one that
cannot run); a write's data is collected (dataout.py) within the session's buffer budget
and its time limit; access is checked again before it runs; its execution on the file runs
to its end even when the command is aborted or fenced, so no file is closed under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from zbs_lite.iscsi.backstore import Payload
from zbs_lite.iscsi.dataout import Budget, DataOut, WriteState
from zbs_lite.iscsi.login import Identity
from zbs_lite.iscsi.negotiation import SessionParams
from zbs_lite.iscsi.numbering import QUEUE_DEPTH, Numbering
from zbs_lite.iscsi.pdu import Pdu, decode_lun
from zbs_lite.iscsi.responses import scsi_response
from zbs_lite.iscsi.scsi import Admitted, Executor, Nexus, screen
from zbs_lite.iscsi.sense import (
    ABORTED_COMMAND,
    ILLEGAL_REQUEST,
    INITIATOR_RESPONSE_TIMEOUT,
    LU_NOT_SUPPORTED,
    ScsiError,
    ScsiResult,
    check,
)
from zbs_lite.iscsi.transport import PduTransport, ProtocolError

log = logging.getLogger(__name__)

# a write's data must all be there this long after the command arrived, or the command fails
DATA_OUT_TIMEOUT = 15.0
# bytes of command data (Data-Out collected, Data-In read) one session may hold at once: two of
# the largest commands (32 MiB); unsolicited data comes on top, at most FirstBurstLength per command
SESSION_BUFFER_BUDGET = 64 << 20
MAX_TASKS = 2 * QUEUE_DEPTH


@dataclass(frozen=True)
class SessionLimits:
    """What one session may take from the target (docs/zbs-lite.md, Limits)."""

    data_out_timeout: float = DATA_OUT_TIMEOUT
    buffer_budget: int = SESSION_BUFFER_BUDGET


@dataclass(eq=False)
class Task:
    """One SCSI command from its arrival to its response."""

    pdu: Pdu
    lun_no: int
    admitted: Admitted
    arrived: float  # monotonic
    ws: WriteState | None = None
    runner: asyncio.Task[None] | None = None  # the coroutine that answers it
    io: asyncio.Task[ScsiResult] | None = None  # its execution on the file, once started: runs to its end
    held: int = 0  # bytes of the session's buffer budget it holds

    @property
    def itt(self) -> int:
        return self.pdu.itt


class Commands:
    """The SCSI commands of one session (its I_T nexus), by Initiator Task Tag."""

    def __init__(
        self,
        transport: PduTransport,
        numbers: Numbering,
        params: SessionParams,
        identity: Identity,
        nexus: Nexus,
        executor: Executor,
        limits: SessionLimits,
        who: object,
    ) -> None:
        self.transport = transport
        self.numbers = numbers
        self.params = params
        self.identity = identity
        self.nexus = nexus
        self.executor = executor
        self.who = who  # how log lines name the connection
        self.data_out = DataOut(transport, numbers, params, limits.data_out_timeout, who)
        self.budget = Budget(limits.buffer_budget)
        self.tasks: dict[int, Task] = {}

    def submit(self, pdu: Pdu) -> None:
        """A SCSI Command PDU the CmdSN window accepted."""
        itt = pdu.itt
        if itt in self.tasks:
            raise ProtocolError(f"task tag {itt:#x} already in use")
        if len(self.tasks) >= MAX_TASKS:  # immediate commands are outside the CmdSN window: bound them too
            raise ProtocolError(f"more than {MAX_TASKS} tasks at once")
        edtl = pdu.u32(20)
        write = bool(pdu.flags & 0x20)
        if len(pdu.data) and not (write and self.params.immediate_data):
            raise ProtocolError("immediate data without W bit or with ImmediateData=No")
        if len(pdu.data) > edtl:
            raise ProtocolError("immediate data beyond the expected transfer length")
        if self._try_inline(pdu, write, edtl):
            return
        lun_no = decode_lun(pdu.lun_field)
        screened = screen(self.nexus, lun_no, pdu.bhs[32:48], edtl if write else 0)
        if isinstance(screened, ScsiResult):  # refused or answered before any data moves
            self._emit_result(pdu, screened)
            return
        task = Task(pdu, lun_no, screened, time.monotonic())
        need = min(edtl, screened.data_out) if write else 0
        if need:
            task.ws = self.data_out.start(pdu, edtl, need)
        if not pdu.immediate:
            self.numbers.inflight += 1
        self.tasks[itt] = task
        task.runner = asyncio.get_running_loop().create_task(self._run(task))

    def data(self, pdu: Pdu) -> None:
        """A Data-Out PDU."""
        self.data_out.on_data_out(pdu)

    def runners(self) -> list[asyncio.Task[None]]:
        return [t.runner for t in self.tasks.values() if t.runner is not None]

    def fence(self) -> list[asyncio.Task[ScsiResult]]:
        """Fence the commands to LUNs the nexus no longer shows (after a catalog change): those waiting
        for their data fail with CHECK CONDITION (their late Data-Out is dropped); those already
        writing to the file are returned, to be waited for."""
        writing: list[asyncio.Task[ScsiResult]] = []
        for task in list(self.tasks.values()):
            if self._may_run(task):
                continue
            if task.io is not None:
                writing.append(task.io)
                continue
            log.info("%r: task %#x fenced: LUN %d is no longer visible", self.who, task.itt, task.lun_no)
            if task.ws is not None:
                self.data_out.end(task.itt, task.ws)
            if task.runner is not None:
                task.runner.cancel()
            with contextlib.suppress(ConnectionError):
                self._answer(task, check(ILLEGAL_REQUEST, LU_NOT_SUPPORTED))
        return writing

    def _may_run(self, task: Task) -> bool:
        lun = self.nexus.visible.get(task.lun_no)
        return lun is not None and lun.id == task.admitted.lun.id

    def _try_inline(self, pdu: Pdu, write: bool, edtl: int) -> bool:
        """Complete a READ/WRITE right here when the page cache serves it without blocking.

        Most commands of a busy session take this path: no task, no thread, the response
        corked with its neighbours. Anything unusual (unit attention, masking, errors, data
        still to come, a read that would touch the disk) goes the general way.
        """
        if write and len(pdu.data) != edtl:
            return False
        lun_no = decode_lun(pdu.lun_field)
        result = self.executor.try_inline(self.nexus, lun_no, pdu.bhs[32:48], pdu.data if write else None)
        if result is None:
            return False
        self._emit_result(pdu, result)
        return True

    async def _run(self, task: Task) -> None:
        try:
            result = await self._scsi_result(task)
            self._answer(task, result)
            if self.transport.backlogged():
                await self.transport.writer.drain()
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as e:
            log.debug("%r: could not complete task %#x: %s", self.who, task.itt, e)
        except ProtocolError as e:
            log.warning("%r: %s", self.who, e)
            self.transport.abort()
        except Exception:
            log.exception("%r: task %#x failed", self.who, task.itt)
            self.transport.abort()
        finally:
            if task.held:
                self.budget.give(task.held)
                task.held = 0
            self._forget(task)

    async def _scsi_result(self, task: Task) -> ScsiResult:
        pdu, ws = task.pdu, task.ws
        if ws is not None and not ws.complete:
            remaining = task.arrived + self.data_out.timeout - time.monotonic()
            try:
                await asyncio.wait_for(self._data_phase(task, ws), max(remaining, 0))
            except asyncio.TimeoutError:
                self.data_out.timed_out(task.itt, ws)
                return check(*(ws.failure or (ABORTED_COMMAND, INITIATOR_RESPONSE_TIMEOUT)))
            except ScsiError as e:
                return check(e.key, e.asc_ascq)
        if ws is not None:
            self.data_out.end(task.itt, ws)
        # access is checked again now that the data is here: a revoke may have come meanwhile
        if not self._may_run(task):
            return check(ILLEGAL_REQUEST, LU_NOT_SUPPORTED)
        lun = self.nexus.visible[task.lun_no]
        if task.admitted.data_in:
            task.held += await self.budget.take(task.admitted.data_in)
        target = self.identity.target
        assert target is not None
        payload = ws.payload if ws is not None else Payload()
        task.io = asyncio.get_running_loop().create_task(
            self.executor.execute(pdu.bhs[32:48], lun, payload, target.iqn)
        )
        return await asyncio.shield(task.io)  # aborting the command never cuts its file I/O short

    async def _data_phase(self, task: Task, ws: WriteState) -> None:
        task.held += await self.budget.take(ws.need)
        await self.data_out.collect(task.pdu, ws)

    def _answer(self, task: Task, result: ScsiResult) -> None:
        """Send a task's response; MaxCmdSN opens up before the status goes out."""
        self._forget(task)
        self._emit_result(task.pdu, result)

    def _forget(self, task: Task) -> None:
        if self.tasks.get(task.itt) is task:
            del self.tasks[task.itt]
            if not task.pdu.immediate:
                self.numbers.inflight -= 1
        if task.ws is not None:
            self.data_out.end(task.itt, task.ws)

    def _emit_result(self, pdu: Pdu, result: ScsiResult) -> None:
        pieces = scsi_response(pdu, result, self.numbers, self.params.initiator_mrdsl)
        self.transport.emit([b for hdr, data in pieces for b in self.transport.frame(hdr, data)])

    async def cancel(self, which: Callable[[Task], bool]) -> None:
        """Abort tasks (no response for them) and wait until none of them can still touch a file."""
        tasks = [t for t in self.tasks.values() if which(t)]
        for t in tasks:
            self._forget(t)
            if t.runner is not None:
                t.runner.cancel()
        waits = [x for t in tasks for x in (t.runner, t.io) if x is not None]
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
