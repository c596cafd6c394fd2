"""SBC-3 block commands on a LUN's file: READ/WRITE/VERIFY, WRITE SAME, UNMAP, capacity, LBA status.

Each function gets the CDB and what it acts on (the fd, the LUN's size in blocks, the Data-Out
already collected) and returns a result or raises :class:`ScsiError`; the opcode table in
scsi.py decides which one runs.
"""

from __future__ import annotations

import errno
import os
import struct

from zbs_lite.catalog import LunView
from zbs_lite.iscsi.backstore import NOWAIT, BlockIo, Payload, punch_hole, pwrite_all
from zbs_lite.iscsi.sense import (
    CHECK_CONDITION,
    ILLEGAL_REQUEST,
    INVALID_FIELD_IN_PARAM,
    LBA_OUT_OF_RANGE,
    MISCOMPARE,
    MISCOMPARE_VERIFY,
    PARAM_LIST_LENGTH_ERROR,
    ScsiError,
    ScsiResult,
    invalid_cdb,
    sense_fixed,
)
from zbs_lite.iscsi.spc import BLOCK, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BLOCKS, MAX_XFER_BLOCKS

BLOCK_SHIFT = 9
PHYS_EXP = 3  # 4 KiB physical blocks: 8 logical blocks each

READS = frozenset({0x08, 0x28, 0x88, 0xA8})
WRITES = frozenset({0x0A, 0x2A, 0x8A, 0xAA, 0x2E, 0x8E, 0xAE})
VERIFIES = frozenset({0x2F, 0x8F, 0xAF})
# opcodes with an RDPROTECT/WRPROTECT/VRPROTECT field in byte 1 (we have no protection information)
PROTECTED = frozenset({0x28, 0x88, 0xA8, 0x2A, 0x8A, 0xAA, 0x2E, 0x8E, 0xAE, 0x2F, 0x8F, 0xAF, 0x41, 0x93})


def rw_args(cdb: bytes) -> tuple[int, int]:
    """(lba, blocks) of a READ/WRITE/VERIFY/WRITE SAME CDB."""
    op = cdb[0]
    if op in (0x08, 0x0A):
        lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
        return lba, cdb[4] or 256
    if op in (0x28, 0x2A, 0x2E, 0x2F, 0x41):
        return struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">H", cdb, 7)[0]
    if op in (0xA8, 0xAA, 0xAE, 0xAF):
        return struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">I", cdb, 6)[0]
    return struct.unpack_from(">Q", cdb, 2)[0], struct.unpack_from(">I", cdb, 10)[0]


def check_range(lba: int, n: int, nblocks: int) -> None:
    if lba + n > nblocks or (lba >= nblocks and n):
        raise ScsiError(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)


# Sizers: check a CDB against the LUN before any data moves, and say how many bytes it moves.
# The opcode table runs them when a command arrives; a command they refuse never gets a buffer.


def transfer_length(cdb: bytes, nblocks: int) -> int:
    """READ and WRITE: the blocks asked for, within the LUN and MAX_XFER_BLOCKS."""
    lba, n = rw_args(cdb)
    check_range(lba, n, nblocks)
    if n > MAX_XFER_BLOCKS:
        raise invalid_cdb()
    return n << BLOCK_SHIFT


def verify_length(cdb: bytes, nblocks: int) -> int:
    """VERIFY: nothing (BYTCHK 0), the blocks (1) or one block to compare with each (3)."""
    lba, n = rw_args(cdb)
    check_range(lba, n, nblocks)
    bytchk = (cdb[1] >> 1) & 3
    if bytchk == 2 or n > MAX_XFER_BLOCKS:
        raise invalid_cdb()
    return 0 if bytchk == 0 else (n if bytchk == 1 else 1) << BLOCK_SHIFT


def unmap_length(cdb: bytes, nblocks: int) -> int:
    return int(struct.unpack_from(">H", cdb, 7)[0])


def write_same_length(cdb: bytes, nblocks: int) -> int:
    """WRITE SAME: one block, or none with NDOB (16 only)."""
    lba, n = rw_args(cdb)
    if cdb[1] & 0x16 or n == 0 or n > MAX_WRITE_SAME_BLOCKS:  # ANCHOR, PBDATA, LBDATA; WSNZ
        raise invalid_cdb()
    check_range(lba, n, nblocks)
    return 0 if cdb[0] == 0x93 and cdb[1] & 0x01 else BLOCK


def try_inline(cdb: bytes, lun: LunView, fd: int, data_out: bytes | None) -> ScsiResult | None:
    """A plain READ or WRITE done synchronously if the kernel can do it without blocking.

    None means "take the general path" (which also produces any error): nothing here
    may block the event loop, so I/O uses RWF_NOWAIT and gives up on EAGAIN.
    """
    op = cdb[0]
    if not NOWAIT or (op in PROTECTED and cdb[1] & 0xE0) or op in (0x08, 0x0A):
        return None
    lba, n = rw_args(cdb)
    if n == 0 or n > MAX_XFER_BLOCKS or lba + n > lun.size >> BLOCK_SHIFT:
        return None
    length = n << BLOCK_SHIFT
    try:
        if op in READS:
            buf = bytearray(length)
            if os.preadv(fd, [buf], lba << BLOCK_SHIFT, NOWAIT) != length:
                return None
            return ScsiResult(data=buf)
        if op not in (0x2A, 0x8A, 0xAA) or cdb[1] & 0x08 or data_out is None or len(data_out) != length:
            return None  # FUA, WRITE AND VERIFY, short data: general path
        if os.pwritev(fd, [data_out], lba << BLOCK_SHIFT, NOWAIT) != length:
            return None  # a partial write is simply redone in full by the general path
        return ScsiResult(data_out_wanted=length)
    except OSError:
        return None


async def read(io: BlockIo, fd: int, cdb: bytes, nblocks: int) -> ScsiResult:
    length = transfer_length(cdb, nblocks)
    buf = bytearray(length)
    if length:
        await io.read(fd, buf, rw_args(cdb)[0] << BLOCK_SHIFT)
    return ScsiResult(data=buf)


async def write(io: BlockIo, fd: int, cdb: bytes, nblocks: int, data: Payload) -> ScsiResult:
    length = transfer_length(cdb, nblocks)
    # an initiator may send less than the CDB asks for (EDTL): write the whole blocks it
    # did send and report the overflow residual, as SAM and libiscsi's tests expect
    whole = min(length, len(data) >> BLOCK_SHIFT << BLOCK_SHIFT)
    if whole:
        await io.write(fd, data.views(whole), rw_args(cdb)[0] << BLOCK_SHIFT)
        if cdb[1] & 0x08:  # FUA
            await io.run(os.fdatasync, fd)
    return ScsiResult(data_out_wanted=length)


async def verify(io: BlockIo, fd: int, cdb: bytes, nblocks: int, data: Payload) -> ScsiResult:
    want = verify_length(cdb, nblocks)
    if want == 0:  # medium verification: a file has no media errors to find
        return ScsiResult()
    lba, n = rw_args(cdb)
    given = data.tobytes(min(want, len(data)))
    if len(given) < want:
        return ScsiResult(data_out_wanted=want)
    stored = bytearray(n << BLOCK_SHIFT)
    await io.run(os.preadv, fd, [stored], lba << BLOCK_SHIFT)
    expect = given if want == len(stored) else given * n
    if stored != expect:
        pos = next(i for i in range(len(expect)) if stored[i] != expect[i])
        return ScsiResult(CHECK_CONDITION, sense=sense_fixed(MISCOMPARE, MISCOMPARE_VERIFY, pos))
    return ScsiResult(data_out_wanted=want)


def read_capacity10(cdb: bytes, nblocks: int) -> ScsiResult:
    if not cdb[8] & 1 and struct.unpack_from(">I", cdb, 2)[0]:
        raise invalid_cdb()
    return ScsiResult(data=struct.pack(">II", min(nblocks - 1, 0xFFFFFFFF), BLOCK))


async def service_action_in(io: BlockIo, fd: int, cdb: bytes, lun: LunView, nblocks: int) -> ScsiResult:
    """SERVICE ACTION IN (16): READ CAPACITY 16 and GET LBA STATUS."""
    sa = cdb[1] & 0x1F
    alloc = struct.unpack_from(">I", cdb, 10)[0]
    if sa == 0x10:  # READ CAPACITY 16
        lbp = 0x80 | 0x40 if lun.thin_provision else 0x00  # LBPME, LBPRZ
        d = struct.pack(">QIBBH", nblocks - 1, BLOCK, 0, PHYS_EXP, lbp << 8) + bytes(16)
        return ScsiResult(data=d[:alloc])
    if sa == 0x12:  # GET LBA STATUS
        lba = struct.unpack_from(">Q", cdb, 2)[0]
        if lba >= nblocks:
            raise ScsiError(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
        d = await io.run(_lba_status, fd, lba, nblocks)
        return ScsiResult(data=d[:alloc])
    raise invalid_cdb()


def _lba_status(fd: int, lba: int, nblocks: int) -> bytes:
    off = lba << BLOCK_SHIFT
    end = nblocks << BLOCK_SHIFT
    try:
        data = os.lseek(fd, off, os.SEEK_DATA)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        data = end
    if data > off:  # a hole first
        status, stop = 1, min(data, end)
    else:
        try:
            stop = min(os.lseek(fd, off, os.SEEK_HOLE), end)
        except OSError:
            stop = end
        status = 0
    count = max((stop - off) >> BLOCK_SHIFT, 1)
    desc = struct.pack(">QIB3x", lba, min(count, 0xFFFFFFFF), status)
    return struct.pack(">I4x", len(desc) + 4) + desc


async def unmap(io: BlockIo, fd: int, cdb: bytes, nblocks: int, data: Payload) -> ScsiResult:
    plen = unmap_length(cdb, nblocks)
    result = ScsiResult(data_out_wanted=plen)
    if plen == 0:
        return result
    param = data.tobytes()
    if plen < 8 or len(param) < 8:
        raise ScsiError(ILLEGAL_REQUEST, PARAM_LIST_LENGTH_ERROR)
    bdlen = struct.unpack_from(">H", param, 2)[0]
    bdlen = min(bdlen, len(param) - 8, plen - 8)
    if bdlen // 16 > MAX_UNMAP_DESCRIPTORS:
        raise ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAM)
    ranges = []
    for off in range(8, 8 + bdlen - bdlen % 16, 16):
        lba, n = struct.unpack_from(">QI", param, off)
        if lba + n > nblocks:
            raise ScsiError(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
        if n > MAX_UNMAP_BLOCKS:
            raise ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAM)
        ranges.append((lba, n))
    for lba, n in ranges:
        if n:
            await io.run(punch_hole, fd, lba << BLOCK_SHIFT, n << BLOCK_SHIFT)
    return result


async def write_same(io: BlockIo, fd: int, cdb: bytes, nblocks: int, data: Payload) -> ScsiResult:
    want = write_same_length(cdb, nblocks)
    lba, n = rw_args(cdb)
    unmap_bit = bool(cdb[1] & 0x08)
    block = data.tobytes() if want else bytes(BLOCK)  # NDOB: zeros
    if len(block) != BLOCK:
        raise invalid_cdb()
    if unmap_bit and block == bytes(BLOCK):
        await io.run(punch_hole, fd, lba << BLOCK_SHIFT, n << BLOCK_SHIFT)
    else:
        await io.run(_fill, fd, block, lba << BLOCK_SHIFT, n)
    return ScsiResult(data_out_wanted=want)


def _fill(fd: int, block: bytes, offset: int, n: int) -> None:
    chunk = block * min(n, 2048)
    while n > 0:
        k = min(n, 2048)
        pwrite_all(fd, memoryview(chunk)[: k << BLOCK_SHIFT], offset)
        offset += k << BLOCK_SHIFT
        n -= k
