"""A deliberately small blocking iSCSI initiator for tests that need what libiscsi's tools
cannot do: hold a session open across catalog changes, and misbehave on purpose.

It speaks only what the tests need: login without digests (AuthMethod=None or one-way
CHAP), SCSI commands with Data-In and immediate data, Text, Logout.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from dataclasses import dataclass

from zbs_lite.iscsi.pdu import crc32c


def _pad(n: int) -> int:
    return -n % 4


def kv(pairs: dict[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs.items())


def parse_kv(data: bytes) -> dict[str, str]:
    out = {}
    for item in data.split(b"\0"):
        if item:
            k, _, v = item.decode().partition("=")
            out[k] = v
    return out


@dataclass
class Response:
    opcode: int
    bhs: bytes
    data: bytes

    @property
    def status_class(self) -> int:
        return self.bhs[36]

    @property
    def status_detail(self) -> int:
        return self.bhs[37]


@dataclass
class ScsiReply:
    status: int
    data: bytes
    sense: bytes

    @property
    def sense_key(self) -> int:
        return self.sense[2] & 0x0F if len(self.sense) > 2 else 0

    @property
    def asc(self) -> tuple[int, int]:
        return (self.sense[12], self.sense[13]) if len(self.sense) > 13 else (0, 0)


class LoginError(Exception):
    def __init__(self, status: tuple[int, int], data: dict[str, str]) -> None:
        super().__init__(f"login failed with status {status[0]:#x}/{status[1]:#x}")
        self.status = status
        self.data = data


class Initiator:
    def __init__(self, host: str, port: int, initiator_iqn: str, timeout: float = 10) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.iqn = initiator_iqn
        self.itt = 1
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.isid = b"\x80\x12\x34\x56\x78\x9a"
        self.max_cmd_sn = 1
        self.digests = False  # CRC32C header and data digests, once negotiated

    def close(self) -> None:
        self.sock.close()

    # framing
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("target closed the connection")
            buf += chunk
        return bytes(buf)

    def recv(self) -> Response:
        bhs = self._recv_exact(48)
        ahs = bhs[4] * 4
        dlen = int.from_bytes(bhs[5:8], "big")
        if ahs:
            self._recv_exact(ahs)
        if self.digests and int.from_bytes(self._recv_exact(4), "little") != crc32c(bhs):
            raise ConnectionError("bad header digest from the target")
        data = self._recv_exact(dlen + _pad(dlen))[:dlen] if dlen else b""
        if self.digests and dlen and int.from_bytes(self._recv_exact(4), "little") != crc32c(data):
            raise ConnectionError("bad data digest from the target")
        op = bhs[0] & 0x3F
        if op in (0x21, 0x22, 0x23, 0x24, 0x26, 0x20, 0x3F) or (op == 0x25 and bhs[1] & 0x01):
            self.exp_stat_sn = (struct.unpack_from(">I", bhs, 24)[0] + 1) & 0xFFFFFFFF
        if op != 0x23:
            self.max_cmd_sn = struct.unpack_from(">I", bhs, 32)[0]
        return Response(op, bhs, data)

    def pdu(
        self,
        opcode: int,
        flags: int,
        *,
        data: bytes = b"",
        lun: int = 0,
        itt: int | None = None,
        fields: bytes = b"",
        immediate: bool = False,
    ) -> bytes:
        bhs = bytearray(48)
        bhs[0] = opcode | (0x40 if immediate else 0)
        bhs[1] = flags
        bhs[5:8] = len(data).to_bytes(3, "big")
        bhs[8:16] = bytes([0, lun]) + bytes(6)
        struct.pack_into(">I", bhs, 16, self.itt if itt is None else itt)
        bhs[20 : 20 + len(fields)] = fields
        if not self.digests:
            return bytes(bhs) + data + b"\0" * _pad(len(data))
        out = bytes(bhs) + crc32c(bytes(bhs)).to_bytes(4, "little")
        if data:
            out += data + b"\0" * _pad(len(data)) + crc32c(data).to_bytes(4, "little")
        return out

    # login
    def login(
        self,
        target: str | None,
        *,
        chap: tuple[str, str] | None = None,
        discovery: bool = False,
        digests: bool = False,
        max_recv: int = 262144,
    ) -> dict[str, str]:
        keys = {"InitiatorName": self.iqn, "SessionType": "Discovery" if discovery else "Normal"}
        if target:
            keys["TargetName"] = target
        keys["AuthMethod"] = "CHAP,None" if chap else "None"
        r = self._login_step(0, 1, keys, transit=chap is None)
        got = parse_kv(r.data)
        if chap is not None and got.get("AuthMethod") == "CHAP":
            r = self._login_step(0, 0, {"CHAP_A": "5"}, transit=False)
            c = parse_kv(r.data)
            ident = int(c["CHAP_I"])
            challenge = bytes.fromhex(c["CHAP_C"][2:])
            resp = hashlib.md5(bytes([ident]) + chap[1].encode() + challenge).hexdigest()
            r = self._login_step(0, 1, {"CHAP_N": chap[0], "CHAP_R": "0x" + resp}, transit=True)
        ops = {
            "HeaderDigest": "CRC32C" if digests else "None",
            "DataDigest": "CRC32C" if digests else "None",
            "InitialR2T": "Yes",
            "ImmediateData": "Yes",
            "MaxRecvDataSegmentLength": str(max_recv),
            "MaxBurstLength": "1048576",
            "FirstBurstLength": "262144",
        }
        r = self._login_step(1, 3, ops, transit=True)
        answers = parse_kv(r.data)
        self.digests = answers.get("HeaderDigest") == "CRC32C" and answers.get("DataDigest") == "CRC32C"
        return answers

    def _login_step(self, csg: int, nsg: int, keys: dict[str, str], *, transit: bool) -> Response:
        flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        fields = struct.pack(">HHII", 0, 0, self.cmd_sn, self.exp_stat_sn)  # CID, rsvd, CmdSN, ExpStatSN
        raw = bytearray(self.pdu(0x03, flags, data=kv(keys), fields=fields, immediate=True, itt=0))
        raw[8:14] = self.isid
        self.send_raw(bytes(raw))
        r = self.recv()
        if r.opcode != 0x23:
            raise ConnectionError(f"expected a login response, got opcode {r.opcode:#x}")
        if r.status_class:
            raise LoginError((r.status_class, r.status_detail), parse_kv(r.data))
        return r

    # full feature phase
    def _next_itt(self) -> int:
        self.itt += 1
        return self.itt

    def scsi(
        self, lun: int, cdb: bytes, *, read_len: int = 0, write: bytes = b"", immediate: int | None = None
    ) -> ScsiReply:
        """One command; `immediate` caps the data sent with it (the target asks for the rest with R2Ts)."""
        itt = self._next_itt()
        flags = 0x80 | (0x40 if read_len else 0) | (0x20 if write else 0) | 0x01
        edtl = read_len or len(write)
        fields = struct.pack(">III", edtl, self.cmd_sn, self.exp_stat_sn) + cdb.ljust(16, b"\0")
        first = write if immediate is None else write[:immediate]
        self.send_raw(self.pdu(0x01, flags, data=first, lun=lun, itt=itt, fields=fields))
        self.cmd_sn += 1
        data = bytearray()
        while True:
            r = self.recv()
            if r.opcode == 0x25:
                data += r.data
                if r.bhs[1] & 0x01:
                    return ScsiReply(r.bhs[3], bytes(data), b"")
            elif r.opcode == 0x21:
                sense = r.data[2 : 2 + struct.unpack_from(">H", r.data)[0]] if r.data else b""
                return ScsiReply(r.bhs[3], bytes(data), sense)
            elif r.opcode == 0x31:  # R2T: send what was asked, in Data-Outs the target accepts
                ttt, _, _, _, _, offset, length = struct.unpack_from(">IIIIIII", r.bhs, 20)
                seg = 65536
                for data_sn, off in enumerate(range(offset, offset + length, seg)):
                    chunk = write[off : min(off + seg, offset + length)]
                    final = 0x80 if off + seg >= offset + length else 0
                    f = struct.pack(">IIII", ttt, 0, self.exp_stat_sn, 0) + struct.pack(">II", data_sn, off)
                    self.send_raw(self.pdu(0x05, final, data=chunk, lun=lun, itt=itt, fields=f))
            else:
                raise ConnectionError(f"unexpected opcode {r.opcode:#x}")

    # pieces of a command, for tests that misbehave or keep several commands open at once
    def command(
        self, lun: int, cdb: bytes, *, edtl: int, write: bool = False, data: bytes = b"", final: bool = True
    ) -> int:
        """Send one SCSI Command PDU (with `data` as immediate data) and return its task tag, waiting for nothing."""
        itt = self._next_itt()
        flags = (0x80 if final else 0) | (0x20 if write else 0x40 if edtl else 0) | 0x01
        fields = struct.pack(">III", edtl, self.cmd_sn, self.exp_stat_sn) + cdb.ljust(16, b"\0")
        self.send_raw(self.pdu(0x01, flags, data=data, lun=lun, itt=itt, fields=fields))
        self.cmd_sn += 1
        return itt

    def data_out(
        self, lun: int, itt: int, ttt: int, offset: int, data: bytes, *, data_sn: int = 0, final: bool = True
    ) -> None:
        f = struct.pack(">IIII", ttt, 0, self.exp_stat_sn, 0) + struct.pack(">II", data_sn, offset)
        self.send_raw(self.pdu(0x05, 0x80 if final else 0, data=data, lun=lun, itt=itt, fields=f))

    def reply(self, r: Response) -> ScsiReply:
        """A SCSI Response (or a final Data-In) as status, data and sense."""
        if r.opcode == 0x25:
            return ScsiReply(r.bhs[3], r.data, b"")
        sense = r.data[2 : 2 + struct.unpack_from(">H", r.data)[0]] if r.data else b""
        return ScsiReply(r.bhs[3], r.data, sense)

    @staticmethod
    def itt_of(r: Response) -> int:
        return int(struct.unpack_from(">I", r.bhs, 16)[0])

    @staticmethod
    def r2t_fields(r: Response) -> tuple[int, int, int]:
        """(TTT, buffer offset, desired length) of an R2T."""
        ttt, _, _, _, _, offset, length = struct.unpack_from(">IIIIIII", r.bhs, 20)
        return ttt, offset, length

    def ping(self) -> None:
        """NOP-Out / NOP-In: everything this connection sent before is processed by the target."""
        fields = struct.pack(">III", 0xFFFFFFFF, self.cmd_sn, self.exp_stat_sn)
        itt = self._next_itt()
        self.send_raw(self.pdu(0x00, 0x80, itt=itt, fields=fields, immediate=True))
        while True:
            r = self.recv()
            if r.opcode == 0x20 and self.itt_of(r) == itt:
                return

    def report_luns(self) -> list[int]:
        r = self.scsi(0, bytes([0xA0, 0, 0, 0, 0, 0]) + struct.pack(">I", 4096) + b"\0\0", read_len=4096)
        n = struct.unpack_from(">I", r.data)[0] // 8
        return [((r.data[8 + 8 * i] & 0x3F) << 8) | r.data[9 + 8 * i] for i in range(n)]

    def tur(self, lun: int) -> ScsiReply:
        return self.scsi(lun, bytes(6))

    def read10(self, lun: int, lba: int, blocks: int) -> ScsiReply:
        return self.scsi(lun, struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0), read_len=blocks * 512)

    def write10(self, lun: int, lba: int, data: bytes) -> ScsiReply:
        return self.scsi(lun, struct.pack(">BBIBHB", 0x2A, 0, lba, 0, len(data) // 512, 0), write=data)

    def text(self, keys: dict[str, str]) -> dict[str, str]:
        fields = struct.pack(">III", 0xFFFFFFFF, self.cmd_sn, self.exp_stat_sn)
        self.send_raw(self.pdu(0x04, 0x80, data=kv(keys), itt=self._next_itt(), fields=fields))
        self.cmd_sn += 1
        return parse_kv(self.recv().data)

    def logout(self) -> None:
        fields = struct.pack(">HHII", 0, 0, self.cmd_sn, self.exp_stat_sn)
        self.send_raw(self.pdu(0x06, 0x80, itt=self._next_itt(), fields=fields, immediate=True))
        r = self.recv()
        assert r.opcode == 0x26
        self.close()
