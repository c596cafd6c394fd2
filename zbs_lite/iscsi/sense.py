"""SCSI status, sense keys and the (ASC, ASCQ) pairs zbs-lite reports, and the result of one command."""

from __future__ import annotations

import struct
from dataclasses import dataclass

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
NO_ADDITIONAL_SENSE = (0x00, 0x00)
LU_NOT_READY_MANUAL_INTERVENTION = (0x04, 0x03)
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
INITIATOR_RESPONSE_TIMEOUT = (0x4B, 0x06)
LU_RESET_OCCURRED = (0x29, 0x03)  # BUS DEVICE RESET FUNCTION OCCURRED
WRITE_ERROR = (0x0C, 0x00)
READ_ERROR = (0x11, 0x00)


def sense_fixed(key: int, asc_ascq: tuple[int, int], info: int | None = None) -> bytes:
    """Fixed-format sense data (SPC-4 4.5.3), with the INFORMATION field when given."""
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
    """Raised anywhere in a command's execution; becomes CHECK CONDITION with this sense."""

    def __init__(self, key: int, asc_ascq: tuple[int, int]) -> None:
        super().__init__(f"sense {key:#x}/{asc_ascq[0]:#x}/{asc_ascq[1]:#x}")
        self.key = key
        self.asc_ascq = asc_ascq


def invalid_cdb() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
