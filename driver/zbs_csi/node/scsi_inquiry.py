"""Ask a block device who it is: SCSI INQUIRY for the unit serial number page (VPD 0x80).

The kernel connector verifies a volume's identity on the very device node it is about to
probe and format (``/dev/mapper/<wwid>`` or ``/dev/sdX``), not on a sysfs attribute cached
at scan time: SG_IO on a dm-multipath map is passed to one of its paths, so the answer
comes from the LUN behind that node right now. Building the request and parsing the answer
are pure functions; only :func:`read_unit_serial` touches a device.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

SG_IO = 0x2285
SG_DXFER_FROM_DEV = -3
INQUIRY = 0x12
VPD_UNIT_SERIAL = 0x80
_ALLOC = 252
# struct sg_io_hdr (include/scsi/sg.h) in native layout.
_SG_IO_HDR = "iiBBHIPPPIIiPBBBBHHiII"


class InquiryError(OSError):
    pass


def vpd_inquiry_cdb(page: int, alloc: int = _ALLOC) -> bytes:
    """INQUIRY with EVPD=1 for ``page`` (SPC-4 6.6)."""
    return bytes([INQUIRY, 0x01, page, (alloc >> 8) & 0xFF, alloc & 0xFF, 0])


def parse_unit_serial(raw: bytes) -> str:
    """The serial of a VPD 0x80 page (lower-case, blanks stripped); "" when it is not one."""
    if len(raw) < 4 or raw[1] != VPD_UNIT_SERIAL:
        return ""
    length = int.from_bytes(raw[2:4], "big")
    return raw[4 : 4 + length].decode("ascii", "replace").strip().lower()


def read_unit_serial(device: str, timeout_ms: int = 10_000) -> str:
    """VPD 0x80 of ``device`` through SG_IO; raises :class:`InquiryError` when it cannot be read."""
    cdb = ctypes.create_string_buffer(vpd_inquiry_cdb(VPD_UNIT_SERIAL), 6)
    data = ctypes.create_string_buffer(_ALLOC)
    sense = ctypes.create_string_buffer(32)
    hdr = struct.pack(
        _SG_IO_HDR,
        ord("S"),
        SG_DXFER_FROM_DEV,
        len(cdb),
        len(sense),
        0,
        _ALLOC,
        ctypes.addressof(data),
        ctypes.addressof(cdb),
        ctypes.addressof(sense),
        timeout_ms,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    )
    buf = bytearray(hdr)
    try:
        fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InquiryError(exc.errno, f"opening {device}: {exc.strerror}") from None
    try:
        fcntl.ioctl(fd, SG_IO, buf)
    except OSError as exc:
        raise InquiryError(exc.errno, f"SG_IO INQUIRY on {device}: {exc.strerror}") from None
    finally:
        os.close(fd)
    fields = struct.unpack(_SG_IO_HDR, bytes(buf))
    status, host_status, driver_status, resid = fields[13], fields[17], fields[18], fields[19]
    if status or host_status or driver_status:
        raise InquiryError(
            0, f"INQUIRY on {device} failed (status {status}, host {host_status}, driver {driver_status})"
        )
    return parse_unit_serial(data.raw[: _ALLOC - max(resid, 0)])
