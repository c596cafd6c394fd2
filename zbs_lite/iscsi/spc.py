"""SPC-4 primary commands a LUN answers: INQUIRY and its VPD pages, MODE SENSE, REPORT LUNS data.

Pure functions of the LUN's view: every chunk answers the same, so multipath sees one device.
"""

from __future__ import annotations

import hashlib
import struct
import uuid

from zbs_lite.catalog import LunView
from zbs_lite.iscsi.pdu import encode_lun
from zbs_lite.iscsi.sense import ILLEGAL_REQUEST, SAVING_PARAMS_UNSUPPORTED, ScsiError, invalid_cdb

BLOCK = 512
MAX_XFER_BLOCKS = 65536  # 32 MiB per command
MAX_UNMAP_BLOCKS = 0x100000
MAX_UNMAP_DESCRIPTORS = 256
MAX_WRITE_SAME_BLOCKS = 0x400000
# an IEEE company id for our NAA 6 designators (a locally chosen constant; the 100 bits after
# it come from the LUN's UUID so the id is stable for the LUN's whole life, on every chunk)
ZBS_OUI = 0x0C5A5B


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
        raise invalid_cdb()
    return bytes([0x00, page]) + struct.pack(">H", len(body)) + body


def inquiry(cdb: bytes, lun: LunView, target_iqn: str) -> bytes:
    evpd, page = cdb[1] & 0x01, cdb[2]
    alloc = struct.unpack_from(">H", cdb, 3)[0]
    if cdb[1] & 0x02:  # CmdDt is obsolete
        raise invalid_cdb()
    if not evpd:
        if page:
            raise invalid_cdb()
        return standard_inquiry(True)[:alloc]
    return vpd_page(page, lun, target_iqn)[:alloc]


def report_luns(luns: list[int]) -> bytes:
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
    raise invalid_cdb()


def mode_sense(cdb: bytes, nblocks: int, ten: bool) -> bytes:
    dbd = bool(cdb[1] & 0x08)
    pc, page, subpage = cdb[2] >> 6, cdb[2] & 0x3F, cdb[3]
    if pc == 3:
        raise ScsiError(ILLEGAL_REQUEST, SAVING_PARAMS_UNSUPPORTED)
    if subpage not in (0x00, 0xFF):
        raise invalid_cdb()
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
