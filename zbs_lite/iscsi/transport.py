"""PDUs on one TCP connection: reading them whole (digests, size limits) and writing them corked.

Digests apply from the first PDU after the login (``full_feature``), as the RFC says.
"""

from __future__ import annotations

import asyncio
from typing import Union

from zbs_lite.iscsi.negotiation import SessionParams
from zbs_lite.iscsi.pdu import BHS_LEN, Pdu, bhs_lengths, crc32c, pad4

CORK_LIMIT = 64 * 1024
LOGIN_MAX_DATA = 8192
Buf = Union[bytes, bytearray, memoryview]


class ProtocolError(Exception):
    """The peer broke the protocol: the connection is dropped."""


class PduTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, params: SessionParams) -> None:
        self.reader = reader
        self.writer = writer
        self.params = params
        self.full_feature = False
        self.closed = False
        self._out: list[Buf] = []
        self._flush_scheduled = False

    async def read(self) -> Pdu:
        bhs = await self.reader.readexactly(BHS_LEN)
        ahs_len, dlen = bhs_lengths(bhs)
        ahs = await self.reader.readexactly(ahs_len) if ahs_len else b""
        digests = self.full_feature
        if digests and self.params.header_digest:
            got = int.from_bytes(await self.reader.readexactly(4), "little")
            if got != crc32c(bhs + ahs):
                raise ProtocolError("header digest mismatch")
        limit = self.params.target_mrdsl if self.full_feature else LOGIN_MAX_DATA
        if dlen > limit:
            raise ProtocolError(f"data segment of {dlen} bytes exceeds {limit} (opcode {bhs[0] & 0x3F:#x})")
        data = b""
        if dlen:
            raw = await self.reader.readexactly(dlen + pad4(dlen))
            data = raw[:dlen] if pad4(dlen) else raw
            if digests and self.params.data_digest:
                got = int.from_bytes(await self.reader.readexactly(4), "little")
                if got != crc32c(data):
                    raise ProtocolError("data digest mismatch")
        return Pdu(bhs, ahs, data)

    def frame(self, hdr: bytearray, data: Buf = b"") -> list[Buf]:
        """A target PDU as buffers to write: header, digests and padding as negotiated."""
        out: list[Buf] = [hdr]
        digests = self.full_feature
        if digests and self.params.header_digest:
            out.append(crc32c(hdr).to_bytes(4, "little"))
        if len(data):
            out.append(data)
            if pad4(len(data)):
                out.append(b"\0" * pad4(len(data)))
            if digests and self.params.data_digest:
                out.append(crc32c(data).to_bytes(4, "little"))
        return out

    def emit(self, bufs: list[Buf]) -> None:
        """Hand PDUs to the socket without waiting.

        Small responses completed in the same loop iteration leave in one send() (at queue
        depth 32 that saves most of the syscalls); big ones go straight to the transport.
        Order is kept either way: the queue is flushed before a big write.
        """
        if self.closed:
            raise ConnectionResetError("connection closed")
        if sum(len(b) for b in bufs) < CORK_LIMIT:
            self._out.extend(bufs)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
            return
        self.flush()
        transport = self.writer.transport
        for b in bufs:  # not writelines(): on Python < 3.12 it joins everything into one copy
            transport.write(b)

    def backlogged(self) -> bool:
        return self.writer.transport.get_write_buffer_size() > CORK_LIMIT

    async def send(self, bufs: list[Buf]) -> None:
        self.emit(bufs)
        if self.backlogged():
            await self.writer.drain()

    async def send_pdu(self, hdr: bytearray, data: Buf = b"") -> None:
        await self.send(self.frame(hdr, data))

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed:
            self.writer.writelines(self._out)
        self._out = []

    def abort(self) -> None:
        """Drop the connection at once, unsent data included."""
        self.closed = True
        transport = self.writer.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        self.flush()  # a last login reject, redirect or logout response still goes out
        self.closed = True
        self.writer.close()
