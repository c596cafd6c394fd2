"""iSCSI PDU framing (RFC 7143 section 11): the 48-byte BHS, digests and text key=value data.

Pure functions and constants only, so framing is tested without sockets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from crc32c import crc32c as _crc32c

BHS_LEN = 48
RESERVED_TAG = 0xFFFFFFFF

# initiator opcodes
OP_NOP_OUT = 0x00
OP_SCSI_CMD = 0x01
OP_TASK_MGMT = 0x02
OP_LOGIN = 0x03
OP_TEXT = 0x04
OP_DATA_OUT = 0x05
OP_LOGOUT = 0x06
OP_SNACK = 0x10
# target opcodes
OP_NOP_IN = 0x20
OP_SCSI_RESP = 0x21
OP_TASK_MGMT_RESP = 0x22
OP_LOGIN_RESP = 0x23
OP_TEXT_RESP = 0x24
OP_DATA_IN = 0x25
OP_LOGOUT_RESP = 0x26
OP_R2T = 0x31
OP_ASYNC = 0x32
OP_REJECT = 0x3F

# Reject reasons
REJECT_DATA_DIGEST = 0x02
REJECT_PROTOCOL_ERROR = 0x04
REJECT_CMD_NOT_SUPPORTED = 0x05
REJECT_INVALID_PDU_FIELD = 0x09

FLAG_FINAL = 0x80


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C (Castagnoli), the iSCSI header and data digest (the `crc32c` package, in C)."""
    return int(_crc32c(data))


def pad4(n: int) -> int:
    """Bytes of padding after a data segment of n bytes (segments are 4-byte aligned)."""
    return -n % 4


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982 serial number comparison on 32 bits, as CmdSN/StatSN use."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def serial_le(a: int, b: int) -> bool:
    return a == b or serial_lt(a, b)


@dataclass
class Pdu:
    """A received PDU: the raw BHS plus its AHS and data segment."""

    bhs: bytes
    ahs: bytes = b""
    data: bytes = b""

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def immediate(self) -> bool:
        return bool(self.bhs[0] & 0x40)

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def final(self) -> bool:
        return bool(self.bhs[1] & FLAG_FINAL)

    @property
    def itt(self) -> int:
        return int(struct.unpack_from(">I", self.bhs, 16)[0])

    @property
    def lun_field(self) -> bytes:
        return self.bhs[8:16]

    def u32(self, offset: int) -> int:
        return int(struct.unpack_from(">I", self.bhs, offset)[0])


def bhs_lengths(bhs: bytes) -> tuple[int, int]:
    """(AHS length in bytes, data segment length) of a BHS."""
    return bhs[4] * 4, int.from_bytes(bhs[5:8], "big")


def build_bhs(
    opcode: int,
    flags: int = 0,
    *,
    b2: int = 0,
    b3: int = 0,
    data_len: int = 0,
    lun: bytes = b"\0" * 8,
    itt: int = RESERVED_TAG,
    words: tuple[int, ...] = (),
) -> bytearray:
    """A target BHS; `words` are the 32-bit fields from byte 20 on (TTT, StatSN, ExpCmdSN, ...)."""
    bhs = bytearray(BHS_LEN)
    bhs[0] = opcode
    bhs[1] = flags
    bhs[2] = b2
    bhs[3] = b3
    bhs[5:8] = data_len.to_bytes(3, "big")
    bhs[8:16] = lun
    struct.pack_into(">I", bhs, 16, itt)
    for i, w in enumerate(words):
        struct.pack_into(">I", bhs, 20 + 4 * i, w & 0xFFFFFFFF)
    return bhs


def decode_lun(field: bytes) -> int:
    """The LUN number from an 8-byte SAM LUN field (peripheral and flat addressing)."""
    method = field[0] >> 6
    if method in (0, 1):
        return ((field[0] & 0x3F) << 8) | field[1]
    return -1


def encode_lun(lun: int) -> bytes:
    if lun < 256:
        return bytes([0, lun]) + b"\0" * 6
    return bytes([0x40 | (lun >> 8), lun & 0xFF]) + b"\0" * 6


def parse_text(data: bytes) -> list[tuple[str, str]]:
    """key=value pairs of a Text or Login data segment (NUL separated)."""
    out: list[tuple[str, str]] = []
    for item in data.split(b"\0"):
        if not item:
            continue
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if not sep:
            raise ValueError(f"malformed key=value item {key[:64]!r}")
        out.append((key, value))
    return out


def encode_text(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)
