"""The SCSI target core: what an I_T nexus sees, unit attentions, and the opcode table.

As in tgt (``spc.c``/``sbc.c``) and LIO's target core, the transport hands a CDB to the
core and never interprets one itself. :class:`Nexus` holds one session's view of its
target: the LUNs masking lets it address and the unit attentions pending for them.
:func:`screen` applies the logical-unit rules every command goes through first (REPORT
LUNS, INQUIRY and REQUEST SENSE for a LUN that is not there, a pending UNIT ATTENTION, an
opcode we do not implement, a CDB that does not fit the LUN) before any buffer exists for
the command; :class:`Executor` then runs the command's entry of :data:`OPCODES` on the
LUN's file.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from zbs_lite.catalog import LunView
from zbs_lite.iscsi import sbc, spc
from zbs_lite.iscsi.backstore import BlockIo, LunFile, Payload
from zbs_lite.iscsi.sense import (
    CAPACITY_CHANGED,
    ILLEGAL_REQUEST,
    INVALID_FIELD_IN_CDB,
    INVALID_OPCODE,
    LU_NOT_READY_MANUAL_INTERVENTION,
    LU_NOT_SUPPORTED,
    MEDIUM_ERROR,
    NO_ADDITIONAL_SENSE,
    NO_SENSE,
    NOT_READY,
    READ_ERROR,
    UNIT_ATTENTION,
    WRITE_ERROR,
    ScsiError,
    ScsiResult,
    check,
    invalid_cdb,
    sense_fixed,
)

log = logging.getLogger(__name__)

REPORT_LUNS = 0xA0
INQUIRY = 0x12
REQUEST_SENSE = 0x03


@dataclass
class Nexus:
    """One I_T nexus (session) and its target's LUNs as masking shows them to it."""

    visible: dict[int, LunView] = field(default_factory=dict)
    pending_ua: dict[int, tuple[int, int]] = field(default_factory=dict)
    _sizes: dict[str, int] = field(default_factory=dict)

    def show(self, visible: dict[int, LunView]) -> tuple[list[int], list[int]]:
        """Take a new view; returns (LUNs resized, LUNs no longer visible) and queues
        CAPACITY DATA HAS CHANGED for each resized one (the initiator then re-reads it)."""
        resized = []
        for n, lun in visible.items():
            old = self._sizes.get(lun.id)
            if old is not None and old != lun.size:
                self.pending_ua[n] = CAPACITY_CHANGED
                resized.append(n)
            self._sizes[lun.id] = lun.size
        gone = sorted(set(self.visible) - set(visible))
        self.visible = visible
        return resized, gone

    def unit_attention(self, lun_id: str, asc_ascq: tuple[int, int]) -> None:
        """Queue a UNIT ATTENTION for the LUN with this catalog id, if this nexus sees it."""
        for n, lun in self.visible.items():
            if lun.id == lun_id:
                self.pending_ua[n] = asc_ascq


@dataclass
class Command:
    """One command as a handler sees it: the LUN exists and is visible, its file is open."""

    cdb: bytes
    lun: LunView
    file: LunFile
    data_out: Payload
    target_iqn: str
    io: BlockIo

    @property
    def nblocks(self) -> int:
        return self.lun.size >> sbc.BLOCK_SHIFT


Handler = Callable[[Command], Awaitable[ScsiResult]]
Sizer = Callable[[bytes, int], int]  # (CDB, LUN size in blocks) -> bytes moved; raises ScsiError


@dataclass(frozen=True)
class Opcode:
    name: str
    run: Handler
    # SPC-4 5.14: served while a UNIT ATTENTION is pending, which is then reported later
    ua_exempt: bool = False
    # checks the CDB against the LUN when the command arrives and says how much data it
    # takes (Data-Out) or returns (Data-In), so buffers exist only for commands that can run
    data_out: Sizer | None = None
    data_in: Sizer | None = None
    # the initiator must offer exactly the Data-Out the CDB asks for (WRITE SAME's one block)
    exact_data_out: bool = False


@dataclass(frozen=True)
class Admitted:
    """A command that passed :func:`screen`: the LUN it runs on and the data it moves."""

    lun: LunView
    data_out: int = 0
    data_in: int = 0


async def _good(cmd: Command) -> ScsiResult:
    return ScsiResult()


async def _inquiry(cmd: Command) -> ScsiResult:
    return ScsiResult(data=spc.inquiry(cmd.cdb, cmd.lun, cmd.target_iqn))


async def _mode_sense(cmd: Command) -> ScsiResult:
    ten = cmd.cdb[0] == 0x5A
    alloc = struct.unpack_from(">H", cmd.cdb, 7)[0] if ten else cmd.cdb[4]
    return ScsiResult(data=spc.mode_sense(cmd.cdb, cmd.nblocks, ten)[:alloc])


async def _read(cmd: Command) -> ScsiResult:
    return await sbc.read(cmd.io, cmd.file.fd, cmd.cdb, cmd.nblocks)


async def _write(cmd: Command) -> ScsiResult:
    return await sbc.write(cmd.io, cmd.file.fd, cmd.cdb, cmd.nblocks, cmd.data_out)


async def _verify(cmd: Command) -> ScsiResult:
    return await sbc.verify(cmd.io, cmd.file.fd, cmd.cdb, cmd.nblocks, cmd.data_out)


async def _read_capacity10(cmd: Command) -> ScsiResult:
    return sbc.read_capacity10(cmd.cdb, cmd.nblocks)


async def _service_action_in(cmd: Command) -> ScsiResult:
    return await sbc.service_action_in(cmd.io, cmd.file.fd, cmd.cdb, cmd.lun, cmd.nblocks)


async def _sync_cache(cmd: Command) -> ScsiResult:
    await cmd.io.run(os.fdatasync, cmd.file.fd)
    return ScsiResult()


async def _unmap(cmd: Command) -> ScsiResult:
    return await sbc.unmap(cmd.io, cmd.file.fd, cmd.cdb, cmd.nblocks, cmd.data_out)


async def _write_same(cmd: Command) -> ScsiResult:
    return await sbc.write_same(cmd.io, cmd.file.fd, cmd.cdb, cmd.nblocks, cmd.data_out)


OPCODES: dict[int, Opcode] = {
    0x00: Opcode("TEST UNIT READY", _good),
    0x08: Opcode("READ(6)", _read, data_in=sbc.transfer_length),
    0x0A: Opcode("WRITE(6)", _write, data_out=sbc.transfer_length),
    0x12: Opcode("INQUIRY", _inquiry, ua_exempt=True),
    0x1A: Opcode("MODE SENSE(6)", _mode_sense),
    0x1B: Opcode("START STOP UNIT", _good),  # nothing to spin
    0x1E: Opcode("PREVENT ALLOW MEDIUM REMOVAL", _good),  # nothing to eject
    0x25: Opcode("READ CAPACITY(10)", _read_capacity10),
    0x28: Opcode("READ(10)", _read, data_in=sbc.transfer_length),
    0x2A: Opcode("WRITE(10)", _write, data_out=sbc.transfer_length),
    0x2E: Opcode("WRITE AND VERIFY(10)", _write, data_out=sbc.transfer_length),
    0x2F: Opcode("VERIFY(10)", _verify, data_out=sbc.verify_length),
    0x35: Opcode("SYNCHRONIZE CACHE(10)", _sync_cache),
    0x41: Opcode("WRITE SAME(10)", _write_same, data_out=sbc.write_same_length, exact_data_out=True),
    0x42: Opcode("UNMAP", _unmap, data_out=sbc.unmap_length),
    0x5A: Opcode("MODE SENSE(10)", _mode_sense),
    0x88: Opcode("READ(16)", _read, data_in=sbc.transfer_length),
    0x8A: Opcode("WRITE(16)", _write, data_out=sbc.transfer_length),
    0x8E: Opcode("WRITE AND VERIFY(16)", _write, data_out=sbc.transfer_length),
    0x8F: Opcode("VERIFY(16)", _verify, data_out=sbc.verify_length),
    0x91: Opcode("SYNCHRONIZE CACHE(16)", _sync_cache),
    0x93: Opcode("WRITE SAME(16)", _write_same, data_out=sbc.write_same_length, exact_data_out=True),
    0x9E: Opcode("SERVICE ACTION IN(16)", _service_action_in),
    0xA8: Opcode("READ(12)", _read, data_in=sbc.transfer_length),
    0xAA: Opcode("WRITE(12)", _write, data_out=sbc.transfer_length),
    0xAE: Opcode("WRITE AND VERIFY(12)", _write, data_out=sbc.transfer_length),
    0xAF: Opcode("VERIFY(12)", _verify, data_out=sbc.verify_length),
}


def screen(nexus: Nexus, lun_no: int, cdb: bytes, offered: int) -> ScsiResult | Admitted:
    """The checks a command passes when it arrives, before any data moves: a final answer, or
    the LUN to run on with the data it moves (the CDB checked against the LUN by its sizers).
    ``offered`` is the Data-Out the initiator announced (its EDTL on a write, else 0).

    REPORT LUNS answers for any LUN address and lists what the nexus may see; INQUIRY and
    REQUEST SENSE answer for a LUN that is not there (peripheral qualifier 3, LOGICAL UNIT
    NOT SUPPORTED); anything else to such a LUN fails; a pending UNIT ATTENTION is reported
    once, except to the commands SPC lets through; an opcode not in :data:`OPCODES` fails.
    """
    op = cdb[0]
    if op == REPORT_LUNS:
        alloc = struct.unpack_from(">I", cdb, 6)[0]
        if alloc < 16 or cdb[2] > 2:
            return check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
        return ScsiResult(data=spc.report_luns(list(nexus.visible))[:alloc])
    lun = nexus.visible.get(lun_no)
    if lun is None:
        if op == INQUIRY and not cdb[1] & 1:
            alloc = struct.unpack_from(">H", cdb, 3)[0]
            return ScsiResult(data=spc.standard_inquiry(False)[:alloc])
        if op == REQUEST_SENSE:
            return ScsiResult(data=sense_fixed(ILLEGAL_REQUEST, LU_NOT_SUPPORTED)[: cdb[4]])
        return check(ILLEGAL_REQUEST, LU_NOT_SUPPORTED)
    if op == REQUEST_SENSE:
        if cdb[1] & 1:  # descriptor format: we only build fixed-format sense
            return check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
        ua = nexus.pending_ua.pop(lun_no, None)
        sense = sense_fixed(UNIT_ATTENTION, ua) if ua else sense_fixed(NO_SENSE, NO_ADDITIONAL_SENSE)
        return ScsiResult(data=sense[: cdb[4]])
    spec = OPCODES.get(op)
    if lun_no in nexus.pending_ua and not (spec is not None and spec.ua_exempt):
        return check(UNIT_ATTENTION, nexus.pending_ua.pop(lun_no))
    if spec is None:
        return check(ILLEGAL_REQUEST, INVALID_OPCODE)
    nblocks = lun.size >> sbc.BLOCK_SHIFT
    try:
        if op in sbc.PROTECTED and cdb[1] & 0xE0:  # RD/WR/VRPROTECT: we have no protection information
            raise invalid_cdb()
        data_out = spec.data_out(cdb, nblocks) if spec.data_out is not None else 0
        if spec.exact_data_out and data_out and offered != data_out:
            raise invalid_cdb()
        data_in = spec.data_in(cdb, nblocks) if spec.data_in is not None else 0
    except ScsiError as e:
        return check(e.key, e.asc_ascq)
    return Admitted(lun, data_out, data_in)


class Executor:
    """Runs a screened command's handler on the LUN's shared open file."""

    def __init__(self, io: BlockIo, open_file: Callable[[LunView], LunFile | None]) -> None:
        self.io = io
        self._open = open_file

    def try_inline(self, nexus: Nexus, lun_no: int, cdb: bytes, data_out: bytes | None) -> ScsiResult | None:
        """A plain READ/WRITE finished on the spot when the page cache allows (see sbc.try_inline);
        None for anything that needs :func:`screen` and :meth:`execute` (a missing LUN, a pending
        unit attention, an error, I/O that would block)."""
        if cdb[0] not in sbc.READS and cdb[0] not in sbc.WRITES:
            return None
        lun = nexus.visible.get(lun_no)
        if lun is None or lun_no in nexus.pending_ua:
            return None
        lf = self._open(lun)
        if lf is None:
            return None
        try:
            return sbc.try_inline(cdb, lun, lf.fd, data_out)
        finally:
            lf.release()

    async def execute(self, cdb: bytes, lun: LunView, data_out: Payload, target_iqn: str) -> ScsiResult:
        """Run an admitted command to its end (callers shield it: I/O on the file is never cut short)."""
        lf = self._open(lun)
        if lf is None:
            return check(NOT_READY, LU_NOT_READY_MANUAL_INTERVENTION)
        op = cdb[0]
        try:
            return await OPCODES[op].run(Command(cdb, lun, lf, data_out, target_iqn, self.io))
        except ScsiError as e:
            return check(e.key, e.asc_ascq)
        except OSError as e:
            log.error("I/O error on LUN %s (%s): %s", lun.name, lun.id, e)
            return check(MEDIUM_ERROR, WRITE_ERROR if op in sbc.WRITES else READ_ERROR)
        finally:
            lf.release()
