"""A finished SCSI command as PDUs: Data-In segments (status in the last) or a SCSI Response.

Residuals compare what the command moved with the initiator's Expected Data Transfer Length
(RFC 7143 section 11.4.5): underflow when it moved less, overflow when the CDB wanted more.
"""

from __future__ import annotations

import struct

from zbs_lite.iscsi.numbering import Numbering
from zbs_lite.iscsi.pdu import FLAG_FINAL, OP_DATA_IN, OP_SCSI_RESP, RESERVED_TAG, Pdu, build_bhs
from zbs_lite.iscsi.sense import GOOD, ScsiResult
from zbs_lite.iscsi.transport import Buf

FLAG_READ = 0x40
FLAG_WRITE = 0x20
RESIDUAL_UNDERFLOW = 0x02
RESIDUAL_OVERFLOW = 0x04
DATA_IN_STATUS = 0x01

Pieces = list[tuple[bytearray, Buf]]


def scsi_response(pdu: Pdu, result: ScsiResult, numbers: Numbering, segment: int) -> Pieces:
    """(header, data) pairs answering the command ``pdu``; Data-In segments of at most ``segment`` bytes."""
    edtl = pdu.u32(20)
    reading = bool(pdu.flags & FLAG_READ)
    produced = len(result.data)
    resid_flags, residual = 0, 0
    wanted = result.data_out_wanted if result.data_out_wanted is not None else produced
    if result.status == GOOD and (reading or wanted or pdu.flags & FLAG_WRITE):
        if wanted < edtl:
            resid_flags, residual = RESIDUAL_UNDERFLOW, edtl - wanted
        elif wanted > edtl:
            resid_flags, residual = RESIDUAL_OVERFLOW, wanted - edtl
    if result.status == GOOD and produced and edtl:
        return _data_in(pdu, memoryview(result.data)[:edtl], resid_flags, residual, numbers, segment)
    data = struct.pack(">H", len(result.sense)) + result.sense if result.sense else b""
    hdr = build_bhs(
        OP_SCSI_RESP,
        FLAG_FINAL | resid_flags,
        b2=0,
        b3=result.status,
        data_len=len(data),
        itt=pdu.itt,
        words=(0, numbers.next_stat_sn(), numbers.exp_cmd_sn, numbers.max_cmd_sn(), 0, 0, residual),
    )
    return [(hdr, data)]


def _data_in(pdu: Pdu, data: memoryview, resid_flags: int, residual: int, numbers: Numbering, segment: int) -> Pieces:
    total = len(data)
    out: Pieces = []
    for data_sn, off in enumerate(range(0, total, segment)):
        piece = data[off : off + segment]
        if off + segment >= total:
            flags = FLAG_FINAL | DATA_IN_STATUS | resid_flags  # the status rides in the last Data-In
            stat_sn = numbers.next_stat_sn()
            words = (RESERVED_TAG, stat_sn, numbers.exp_cmd_sn, numbers.max_cmd_sn(), data_sn, off, residual)
        else:
            flags = 0
            words = (RESERVED_TAG, 0, numbers.exp_cmd_sn, numbers.max_cmd_sn(), data_sn, off, 0)
        hdr = build_bhs(OP_DATA_IN, flags, b3=0, data_len=len(piece), lun=pdu.lun_field, itt=pdu.itt, words=words)
        out.append((hdr, piece))
    return out
