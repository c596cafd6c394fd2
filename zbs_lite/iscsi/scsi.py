"""The SCSI block device each LUN presents (SBC-3/SPC-4 subset Linux, libiscsi and qemu use).

`execute` turns one CDB (plus its Data-Out, already collected) into a `ScsiResult`. File I/O
runs in the loop's executor (pread/pwrite release the GIL), on one shared fd per LUN file.
Masking and UNIT ATTENTION are the session's business (see connection.py): by the time a
CDB reaches here the LUN is visible to the initiator.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import struct
import threading
import uuid
from dataclasses import dataclass

from zbs_lite.catalog import LunView

log = logging.getLogger(__name__)

BLOCK = 512
BLOCK_SHIFT = 9
PHYS_EXP = 3  # 4 KiB physical blocks: 8 logical blocks each
MAX_XFER_BLOCKS = 65536  # 32 MiB per command
MAX_UNMAP_BLOCKS = 0x100000
MAX_UNMAP_DESCRIPTORS = 256
MAX_WRITE_SAME_BLOCKS = 0x400000
# an IEEE company id for our NAA 6 designators (a locally chosen constant; the 100 bits after
# it come from the LUN's UUID so the id is stable for the LUN's whole life, on every chunk)
ZBS_OUI = 0x0C5A5B

GOOD = 0x00
CHECK_CONDITION = 0x02

NO_SENSE = 0x00
NOT_READY = 0x02
MEDIUM_ERROR = 0x03
ILLEGAL_REQUEST = 0x05
UNIT_ATTENTION = 0x06
ABORTED_COMMAND = 0x0B
MISCOMPARE = 0x0E

# (asc, ascq)
INVALID_OPCODE = (0x20, 0x00)
LBA_OUT_OF_RANGE = (0x21, 0x00)
INVALID_FIELD_IN_CDB = (0x24, 0x00)
LU_NOT_SUPPORTED = (0x25, 0x00)
INVALID_FIELD_IN_PARAM = (0x26, 0x00)
PARAM_LIST_LENGTH_ERROR = (0x1A, 0x00)
SAVING_PARAMS_UNSUPPORTED = (0x39, 0x00)
CAPACITY_CHANGED = (0x2A, 0x09)
MISCOMPARE_VERIFY = (0x1D, 0x00)
DATA_PHASE_ERROR = (0x4B, 0x00)
REPORTED_LUNS_CHANGED = (0x3F, 0x0E)
POWER_ON_RESET = (0x29, 0x00)
LU_RESET_OCCURRED = (0x29, 0x03)  # BUS DEVICE RESET FUNCTION OCCURRED
WRITE_ERROR = (0x0C, 0x00)
READ_ERROR = (0x11, 0x00)

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def sense_fixed(key: int, asc_ascq: tuple[int, int], info: int | None = None) -> bytes:
    s = bytearray(18)
    s[0] = 0x70 | (0x80 if info is not None else 0)
    s[2] = key
    if info is not None:
        struct.pack_into(">I", s, 3, info & 0xFFFFFFFF)
    s[7] = 10
    s[12], s[13] = asc_ascq
    return bytes(s)


@dataclass
class ScsiResult:
    status: int = GOOD
    data: bytes | bytearray | memoryview = b""
    sense: bytes = b""
    # bytes of Data-Out the CDB asked for, so the session can report residuals against EDTL
    data_out_wanted: int | None = None


def check(key: int, asc_ascq: tuple[int, int]) -> ScsiResult:
    return ScsiResult(CHECK_CONDITION, sense=sense_fixed(key, asc_ascq))


class ScsiError(Exception):
    def __init__(self, key: int, asc_ascq: tuple[int, int]) -> None:
        super().__init__(f"sense {key:#x}/{asc_ascq[0]:#x}/{asc_ascq[1]:#x}")
        self.key = key
        self.asc_ascq = asc_ascq


def _invalid_cdb() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)


_libc_fallocate = None
_libc_name = ctypes.util.find_library("c")
if _libc_name:
    _libc = ctypes.CDLL(_libc_name, use_errno=True)
    _libc_fallocate = _libc.fallocate
    _libc_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _libc_fallocate.restype = ctypes.c_int


_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_INLINE_WRITE_MAX = 256 * 1024  # bigger writes copy long enough in the kernel to be worth a thread


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range of a sparse file (reads back as zeros); zero-fill where unsupported."""
    if _libc_fallocate is not None:
        if _libc_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(err, os.strerror(err))
    zeros = bytes(min(length, 1 << 20))
    while length > 0:
        n = os.pwrite(fd, zeros[: min(length, len(zeros))], offset)
        offset += n
        length -= n


class LunFile:
    """One open fd per LUN file, shared by every session; closed after the last user lets go.

    The management plane keeps the inode across resize and rollback, so the fd stays valid
    for the LUN's whole life; it only goes away when the LUN leaves the catalog.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._refs = 0
        self._retired = False
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            close = self._retired and self._refs == 0
        if close:
            os.close(self.fd)

    def retire(self) -> None:
        with self._lock:
            if self._retired:
                return
            self._retired = True
            close = self._refs == 0
        if close:
            os.close(self.fd)


def naa_id(local_id: str) -> bytes:
    """A 16-byte NAA 6 identifier, stable for a LUN's UUID."""
    try:
        raw = uuid.UUID(local_id).bytes
    except ValueError:
        raw = hashlib.sha256(local_id.encode()).digest()[:16]
    n = (0x6 << 124) | (ZBS_OUI << 100) | (int.from_bytes(raw, "big") >> 28)
    return n.to_bytes(16, "big")


def serial_number(local_id: str) -> str:
    return local_id.replace("-", "")[:32] or "0"


def _pad(s: str, n: int) -> bytes:
    return s.encode("ascii", "replace")[:n].ljust(n, b" ")


def standard_inquiry(present: bool) -> bytes:
    d = bytearray(66)
    d[0] = 0x00 if present else 0x7F  # peripheral qualifier 3 / type 0x1f for a LUN not there
    d[2] = 0x06  # SPC-4
    d[3] = 0x12  # HiSup, response data format 2
    d[4] = len(d) - 5
    d[7] = 0x02  # CmdQue
    d[8:16] = _pad("ZBS", 8)
    d[16:32] = _pad("VOLUME", 16)
    d[32:36] = _pad("1.0", 4)
    # version descriptors: SAM-5, iSCSI, SPC-4, SBC-3
    for i, v in enumerate((0x00A0, 0x0960, 0x0460, 0x04C0)):
        struct.pack_into(">H", d, 58 + 2 * i, v)
    return bytes(d)


def _designator(code_set: int, assoc_type: int, value: bytes, piv_proto: int = 0) -> bytes:
    return bytes([(piv_proto << 4) | code_set, assoc_type, 0, len(value)]) + value


def vpd_page(page: int, lun: LunView, target_iqn: str) -> bytes:
    if page == 0x00:
        body = bytes([0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2])
    elif page == 0x80:
        body = serial_number(lun.local_id).encode()
    elif page == 0x83:
        scsi_name = (target_iqn + ",t,0x0001").encode()
        scsi_name += b"\0" * (4 - len(scsi_name) % 4)
        body = (
            _designator(0x01, 0x03, naa_id(lun.local_id))  # binary, LU, NAA
            + _designator(0x02, 0x01, _pad("ZBS", 8) + serial_number(lun.local_id).encode())  # T10 vendor id
            + _designator(0x51, 0x94, struct.pack(">HH", 0, 1), 0)  # target port, relative port 1
            + _designator(0x53, 0x98, scsi_name, 0)  # target port, SCSI name string (iSCSI)
        )
    elif page == 0xB0:
        b = bytearray(0x3C)
        b[0] = 0x01  # WSNZ: WRITE SAME with 0 blocks is refused
        struct.pack_into(">H", b, 2, 8)  # optimal transfer length granularity: 4 KiB
        struct.pack_into(">I", b, 4, MAX_XFER_BLOCKS)
        struct.pack_into(">I", b, 8, 2048)  # optimal transfer length: 1 MiB
        struct.pack_into(">I", b, 16, MAX_UNMAP_BLOCKS)
        struct.pack_into(">I", b, 20, MAX_UNMAP_DESCRIPTORS)
        struct.pack_into(">I", b, 24, 8)  # optimal unmap granularity
        struct.pack_into(">Q", b, 32, MAX_WRITE_SAME_BLOCKS)
        body = bytes(b)
    elif page == 0xB1:
        b = bytearray(0x3C)
        struct.pack_into(">H", b, 0, 1)  # non-rotating medium
        body = bytes(b)
    elif page == 0xB2:
        # threshold exponent 0; LBPU, LBPWS, LBPWS10; LBPRZ (holes read as zeros); provisioning type
        body = bytes([0, 0xE0 | 0x04, 0x02 if lun.thin_provision else 0x00, 0])
    else:
        raise _invalid_cdb()
    return bytes([0x00, page]) + struct.pack(">H", len(body)) + body


def report_luns(luns: list[int]) -> bytes:
    from zbs_lite.iscsi.pdu import encode_lun

    body = b"".join(encode_lun(n) for n in sorted(luns))
    return struct.pack(">II", len(body), 0) + body


def _mode_pages(page: int, pc: int) -> bytes:
    changeable = pc == 1
    caching = bytearray(20)
    caching[0:2] = b"\x08\x12"
    caching[2] = 0x04  # WCE: writes land in the page cache until SYNCHRONIZE CACHE
    control = bytearray(12)
    control[0:2] = b"\x0a\x0a"
    control[8:10] = b"\xff\xff"  # busy timeout: unlimited
    iec = bytearray(12)
    iec[0:2] = b"\x1c\x0a"
    pages: dict[int, bytes] = {0x08: bytes(caching), 0x0A: bytes(control), 0x1C: bytes(iec)}
    if changeable:
        pages = {k: bytes(v[:2]) + bytes(len(v) - 2) for k, v in pages.items()}
    if page == 0x3F:
        return b"".join(bytes(pages[k]) for k in sorted(pages))
    if page in pages:
        return bytes(pages[page])
    raise _invalid_cdb()


def mode_sense(cdb: bytes, nblocks: int, ten: bool) -> bytes:
    dbd = bool(cdb[1] & 0x08)
    pc, page, subpage = cdb[2] >> 6, cdb[2] & 0x3F, cdb[3]
    if pc == 3:
        raise ScsiError(ILLEGAL_REQUEST, SAVING_PARAMS_UNSUPPORTED)
    if subpage not in (0x00, 0xFF):
        raise _invalid_cdb()
    pages = _mode_pages(page, pc)
    bd = b""
    if not dbd:
        bd = struct.pack(">I", min(nblocks, 0xFFFFFF)) + struct.pack(">I", BLOCK)
    devspec = 0x10  # DPOFUA
    if ten:
        hdr = struct.pack(">HBBBBH", 6 + len(bd) + len(pages), 0, devspec, 0, 0, len(bd))
    else:
        hdr = bytes([3 + len(bd) + len(pages), 0, devspec, len(bd)])
    return hdr + bd + pages


def _rw_args(cdb: bytes) -> tuple[int, int]:
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


READS = frozenset({0x08, 0x28, 0x88, 0xA8})
WRITES = frozenset({0x0A, 0x2A, 0x8A, 0xAA, 0x2E, 0x8E, 0xAE})
VERIFIES = frozenset({0x2F, 0x8F, 0xAF})
# opcodes with an RDPROTECT/WRPROTECT/VRPROTECT field in byte 1 (we have no protection information)
_PROTECT = frozenset({0x28, 0x88, 0xA8, 0x2A, 0x8A, 0xAA, 0x2E, 0x8E, 0xAE, 0x2F, 0x8F, 0xAF, 0x41, 0x93})
# opcodes allowed while a UNIT ATTENTION is pending (SPC-4 section 5.14)
UA_EXEMPT = frozenset({0x12, 0xA0, 0x03})


def cdb_length_ok(cdb: bytes) -> bool:
    return len(cdb) >= 16


class ScsiDevice:
    """Executes CDBs for one LUN view on an open `LunFile`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    @staticmethod
    def try_inline(cdb: bytes, lun: LunView, lf: LunFile, data_out: bytes | None) -> ScsiResult | None:
        """A plain READ or WRITE done synchronously if the kernel can do it without blocking.

        None means "take the general path" (which also produces any error): nothing here
        may block the event loop, so I/O uses RWF_NOWAIT and gives up on EAGAIN.
        """
        op = cdb[0]
        if not _NOWAIT or (op in _PROTECT and cdb[1] & 0xE0) or op in (0x08, 0x0A):
            return None
        lba, n = _rw_args(cdb)
        if n == 0 or n > MAX_XFER_BLOCKS or lba + n > lun.size >> BLOCK_SHIFT:
            return None
        length = n << BLOCK_SHIFT
        try:
            if op in READS:
                buf = bytearray(length)
                if os.preadv(lf.fd, [buf], lba << BLOCK_SHIFT, _NOWAIT) != length:
                    return None
                return ScsiResult(data=buf)
            if op not in (0x2A, 0x8A, 0xAA) or cdb[1] & 0x08 or data_out is None or len(data_out) != length:
                return None  # FUA, WRITE AND VERIFY, short data: general path
            if os.pwritev(lf.fd, [data_out], lba << BLOCK_SHIFT, _NOWAIT) != length:
                return None  # a partial write is simply redone in full by the general path
            return ScsiResult(data_out_wanted=length)
        except OSError:
            return None

    async def _read(self, fd: int, buf: bytearray, offset: int) -> None:
        """Read into buf; inline when the page cache has it all (RWF_NOWAIT), else on a thread.

        A thread hand-off costs more than a cached 4 KiB read itself, and RWF_NOWAIT never
        blocks the event loop on the disk: it fails with EAGAIN instead.
        """
        if _NOWAIT:
            try:
                n = os.preadv(fd, [buf], offset, _NOWAIT)
            except (BlockingIOError, OSError):
                n = 0
            if n == len(buf):
                return
            if n > 0:
                await self._io(os.preadv, fd, [memoryview(buf)[n:]], offset + n)
                return
        await self._io(os.preadv, fd, [buf], offset)

    async def _write(self, fd: int, data: memoryview, offset: int) -> None:
        """Write data; inline when the kernel can take it without blocking (RWF_NOWAIT)."""
        if _NOWAIT and len(data) <= _INLINE_WRITE_MAX:
            try:
                n = os.pwritev(fd, [data], offset, _NOWAIT)
            except (BlockingIOError, OSError):
                n = 0
            if n == len(data):
                return
            data, offset = data[n:], offset + n
        await self._io(_pwrite_all, fd, data, offset)

    async def _io(self, fn, *args):
        return await self.loop.run_in_executor(None, fn, *args)

    async def execute(
        self, cdb: bytes, lun: LunView, lf: LunFile, data_out: bytes | bytearray | None, target_iqn: str
    ) -> ScsiResult:
        try:
            return await self._execute(cdb, lun, lf, data_out, target_iqn)
        except ScsiError as e:
            return check(e.key, e.asc_ascq)
        except OSError as e:
            log.error("I/O error on LUN %s (%s): %s", lun.name, lun.id, e)
            op = cdb[0]
            return check(MEDIUM_ERROR, WRITE_ERROR if op in WRITES else READ_ERROR)

    async def _execute(
        self, cdb: bytes, lun: LunView, lf: LunFile, data_out: bytes | bytearray | None, target_iqn: str
    ) -> ScsiResult:
        op = cdb[0]
        nblocks = lun.size >> BLOCK_SHIFT
        fd = lf.fd
        if op in _PROTECT and cdb[1] & 0xE0:
            raise _invalid_cdb()
        if op in READS:
            lba, n = _rw_args(cdb)
            if op == 0x08 and cdb[4] == 0:
                n = 256
            self._range(lba, n, nblocks)
            if n > MAX_XFER_BLOCKS:
                raise _invalid_cdb()
            buf = bytearray(n << BLOCK_SHIFT)
            if n:
                await self._read(fd, buf, lba << BLOCK_SHIFT)
            return ScsiResult(data=buf)
        if op in WRITES:
            lba, n = _rw_args(cdb)
            self._range(lba, n, nblocks)
            if n > MAX_XFER_BLOCKS:
                raise _invalid_cdb()
            # an initiator may send less than the CDB asks for (EDTL): write the whole blocks it
            # did send and report the overflow residual, as SAM and libiscsi's tests expect
            data = memoryview(data_out or b"")
            k = min(n, len(data) >> BLOCK_SHIFT)
            if k:
                await self._write(fd, data[: k << BLOCK_SHIFT], lba << BLOCK_SHIFT)
                if cdb[1] & 0x08:  # FUA
                    await self._io(os.fdatasync, fd)
            return ScsiResult(data_out_wanted=n << BLOCK_SHIFT)
        if op == 0x00:  # TEST UNIT READY
            return ScsiResult()
        if op == 0x12:
            return ScsiResult(data=self._inquiry(cdb, lun, target_iqn))
        if op == 0x25:  # READ CAPACITY 10
            if not cdb[8] & 1 and struct.unpack_from(">I", cdb, 2)[0]:
                raise _invalid_cdb()
            return ScsiResult(data=struct.pack(">II", min(nblocks - 1, 0xFFFFFFFF), BLOCK))
        if op == 0x9E:
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
                d = await self._io(self._lba_status, fd, lba, nblocks)
                return ScsiResult(data=d[:alloc])
            raise _invalid_cdb()
        if op in (0x35, 0x91):  # SYNCHRONIZE CACHE 10/16
            await self._io(os.fdatasync, fd)
            return ScsiResult()
        if op in (0x1A, 0x5A):
            d = mode_sense(cdb, nblocks, op == 0x5A)
            alloc = cdb[4] if op == 0x1A else struct.unpack_from(">H", cdb, 7)[0]
            return ScsiResult(data=d[:alloc])
        if op in VERIFIES:
            lba, n = _rw_args(cdb)
            self._range(lba, n, nblocks)
            bytchk = (cdb[1] >> 1) & 3
            if bytchk == 2 or n > MAX_XFER_BLOCKS:
                raise _invalid_cdb()
            if bytchk == 0:  # medium verification: a file has no media errors to find
                return ScsiResult()
            want = (n if bytchk == 1 else 1) << BLOCK_SHIFT
            given = bytes(data_out or b"")[:want]
            if len(given) < want:
                return ScsiResult(data_out_wanted=want)
            stored = bytearray(n << BLOCK_SHIFT)
            await self._io(os.preadv, fd, [stored], lba << BLOCK_SHIFT)
            expect = given if bytchk == 1 else given * n
            if stored != expect:
                pos = next(i for i in range(len(expect)) if stored[i] != expect[i])
                return ScsiResult(CHECK_CONDITION, sense=sense_fixed(MISCOMPARE, MISCOMPARE_VERIFY, pos))
            return ScsiResult(data_out_wanted=want)
        if op == 0x42:
            await self._unmap(cdb, data_out or b"", fd, nblocks)
            return ScsiResult(data_out_wanted=struct.unpack_from(">H", cdb, 7)[0])
        if op in (0x41, 0x93):
            await self._write_same(cdb, data_out, fd, nblocks)
            return ScsiResult(data_out_wanted=0 if op == 0x93 and cdb[1] & 0x01 else BLOCK)
        if op in (0x1B, 0x1E):  # START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL: nothing to move
            return ScsiResult()
        raise ScsiError(ILLEGAL_REQUEST, INVALID_OPCODE)

    @staticmethod
    def _range(lba: int, n: int, nblocks: int) -> None:
        if lba + n > nblocks or (lba >= nblocks and n):
            raise ScsiError(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)

    @staticmethod
    def _inquiry(cdb: bytes, lun: LunView, target_iqn: str) -> bytes:
        evpd, page = cdb[1] & 0x01, cdb[2]
        alloc = struct.unpack_from(">H", cdb, 3)[0]
        if cdb[1] & 0x02:  # CmdDt is obsolete
            raise _invalid_cdb()
        if not evpd:
            if page:
                raise _invalid_cdb()
            return standard_inquiry(True)[:alloc]
        return vpd_page(page, lun, target_iqn)[:alloc]

    @staticmethod
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

    async def _unmap(self, cdb: bytes, param: bytes | bytearray, fd: int, nblocks: int) -> None:
        plen = struct.unpack_from(">H", cdb, 7)[0]
        if plen == 0:
            return
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
                await self._io(punch_hole, fd, lba << BLOCK_SHIFT, n << BLOCK_SHIFT)

    async def _write_same(self, cdb: bytes, data: bytes | bytearray | None, fd: int, nblocks: int) -> None:
        lba, n = _rw_args(cdb)
        unmap = bool(cdb[1] & 0x08)
        ndob = cdb[0] == 0x93 and bool(cdb[1] & 0x01)
        if cdb[1] & 0x16 or n == 0 or n > MAX_WRITE_SAME_BLOCKS:  # ANCHOR, PBDATA, LBDATA; WSNZ
            raise _invalid_cdb()
        self._range(lba, n, nblocks)
        block = bytes(BLOCK) if ndob else bytes(data or b"")
        if len(block) != BLOCK:
            raise _invalid_cdb()
        if unmap and block == bytes(BLOCK):
            await self._io(punch_hole, fd, lba << BLOCK_SHIFT, n << BLOCK_SHIFT)
            return
        await self._io(self._fill, fd, block, lba << BLOCK_SHIFT, n)

    @staticmethod
    def _fill(fd: int, block: bytes, offset: int, n: int) -> None:
        chunk = block * min(n, 2048)
        while n > 0:
            k = min(n, 2048)
            _pwrite_all(fd, memoryview(chunk)[: k << BLOCK_SHIFT], offset)
            offset += k << BLOCK_SHIFT
            n -= k
