"""One iSCSI connection (= one session: MaxConnections=1) on a chunk or on the VIP portal.

Login (security with CHAP, operational negotiation) then the full-feature phase with SCSI
commands running concurrently as asyncio tasks. A chunk serves data; the VIP portal only
answers discovery and redirects normal logins to a chunk (`Portal.redirect`). Any protocol
violation drops this connection only: it is logged, and every other connection carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from zbs_lite.catalog import ConnectionInfo, LunView, TargetView
from zbs_lite.iscsi import access, scsi
from zbs_lite.iscsi.chap import ChapAuthenticator, ChapError, verify_with_backoff
from zbs_lite.iscsi.negotiation import NegotiationError, SessionParams, negotiate
from zbs_lite.iscsi.pdu import (
    BHS_LEN,
    FLAG_FINAL,
    OP_DATA_IN,
    OP_DATA_OUT,
    OP_LOGIN,
    OP_LOGIN_RESP,
    OP_LOGOUT,
    OP_LOGOUT_RESP,
    OP_NOP_IN,
    OP_NOP_OUT,
    OP_R2T,
    OP_REJECT,
    OP_SCSI_CMD,
    OP_SCSI_RESP,
    OP_SNACK,
    OP_TASK_MGMT,
    OP_TASK_MGMT_RESP,
    OP_TEXT,
    OP_TEXT_RESP,
    REJECT_CMD_NOT_SUPPORTED,
    REJECT_PROTOCOL_ERROR,
    RESERVED_TAG,
    Pdu,
    bhs_lengths,
    build_bhs,
    crc32c,
    decode_lun,
    encode_text,
    pad4,
    parse_text,
    serial_le,
    serial_lt,
)
from zbs_lite.throttle import Throttled

if TYPE_CHECKING:
    from zbs_lite.iscsi.dataplane import Portal

log = logging.getLogger(__name__)

QUEUE_DEPTH = 128
CORK_LIMIT = 64 * 1024
LOGIN_TIMEOUT = 30.0
LOGIN_MAX_DATA = 8192
MAX_LOGIN_TEXT = 65536
PORTAL_GROUP_TAG = 1

STAGE_SECURITY = 0
STAGE_OPERATIONAL = 1
STAGE_FULL_FEATURE = 3

# Login status (class, detail)
LOGIN_OK = (0, 0)
LOGIN_MOVED_TEMPORARILY = (1, 1)
LOGIN_INITIATOR_ERROR = (2, 0)
LOGIN_AUTH_FAILED = (2, 1)
LOGIN_FORBIDDEN = (2, 2)
LOGIN_NOT_FOUND = (2, 3)
LOGIN_UNSUPPORTED_VERSION = (2, 5)
LOGIN_MISSING_PARAMETER = (2, 7)
LOGIN_NO_SESSION = (2, 10)
LOGIN_TARGET_ERROR = (3, 0)
LOGIN_SERVICE_UNAVAILABLE = (3, 1)

_ttt = itertools.count(1)
Buf = Union[bytes, bytearray, memoryview]


class ProtocolError(Exception):
    """The peer broke the protocol: the connection is dropped."""


class LoginFailed(Exception):
    def __init__(self, status: tuple[int, int], reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class WriteState:
    """Data-Out collection for one WRITE-like command."""

    edtl: int
    buffer: bytearray | bytes  # bytes only when the command carried all its data immediately
    received: int = 0
    next_offset: int = 0
    outstanding: int = 0
    r2tsn: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False
    # Data-Out sequences in progress: TTT (RESERVED_TAG for unsolicited data) -> [next offset, next DataSN]
    sequences: dict[int, list[int]] = field(default_factory=dict)


class Connection:
    def __init__(self, portal: Portal, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.portal = portal
        self.catalog = portal.plane.catalog
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer_ip, self.peer_port = str(peer[0]), int(peer[1])
        self.params = SessionParams()
        self.full_feature = False
        self.discovery = False
        self.initiator = ""
        self.target: TargetView | None = None
        self.isid = b"\0" * 6
        self.tsih = 0
        self.stat_sn = 0
        self.exp_cmd_sn = 0
        self.inflight = 0
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.task_luns: dict[int, int] = {}
        self.writes: dict[int, WriteState] = {}
        self.text_pending: dict[int, bytes] = {}
        self.conn_info: ConnectionInfo | None = None
        self._gen = -1
        self.visible: dict[int, LunView] = {}
        self._sizes: dict[str, int] = {}
        self.pending_ua: dict[int, tuple[int, int]] = {}
        self.closed = False
        self._out: list[Buf] = []
        self._flush_scheduled = False

    def __repr__(self) -> str:
        return f"<iscsi conn {self.peer_ip}:{self.peer_port} {self.initiator or '-'} on {self.portal.name}>"

    # ---------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        try:
            try:
                ok = await asyncio.wait_for(self._login(), LOGIN_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("%r: login did not finish within %ss, dropping", self, LOGIN_TIMEOUT)
                return
            if ok:
                await self._full_feature()
        except asyncio.IncompleteReadError as e:
            if e.partial:
                log.warning("%r: peer went away mid-PDU (%d of %s bytes)", self, len(e.partial), e.expected)
            elif self.full_feature:
                log.info("%r: peer closed the connection", self)
        except (ConnectionError, OSError) as e:
            log.info("%r: connection lost: %s", self, e)
        except ProtocolError as e:
            log.warning("%r: protocol error, dropping the connection: %s", self, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%r: unexpected error, dropping the connection", self)
        finally:
            await self._close()

    def abort(self) -> None:
        """Kill the connection at once (chunk stop, session reinstatement)."""
        self.closed = True
        transport = self.writer.transport
        if transport is not None:
            transport.abort()

    async def _close(self) -> None:
        self._flush()  # a last login reject, redirect or logout response still goes out
        self.closed = True
        for t in list(self.tasks.values()):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.portal.session_ended(self)
        if self.conn_info is not None:
            try:
                self.catalog.connection_closed(self.conn_info.id)
            except Exception:
                log.exception("%r: catalog.connection_closed failed", self)
        with contextlib.suppress(Exception):
            self.writer.close()

    # ---------------------------------------------------------------- framing
    async def read_pdu(self) -> Pdu:
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

    def _frame(self, hdr: bytearray, data: Buf = b"") -> list[Buf]:
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

    def _emit(self, bufs: list[Buf]) -> None:
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
                asyncio.get_running_loop().call_soon(self._flush)
            return
        self._flush()
        transport = self.writer.transport
        for b in bufs:  # not writelines(): on Python < 3.12 it joins everything into one copy
            transport.write(b)

    def _backlogged(self) -> bool:
        return self.writer.transport.get_write_buffer_size() > CORK_LIMIT

    async def _send(self, bufs: list[Buf]) -> None:
        self._emit(bufs)
        if self._backlogged():
            await self.writer.drain()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed:
            self.writer.writelines(self._out)
        self._out = []

    def _max_cmd_sn(self) -> int:
        return (self.exp_cmd_sn + QUEUE_DEPTH - 1 - self.inflight) & 0xFFFFFFFF

    def _next_stat_sn(self) -> int:
        sn = self.stat_sn
        self.stat_sn = (sn + 1) & 0xFFFFFFFF
        return sn

    # ---------------------------------------------------------------- login
    async def _login(self) -> bool:
        first = True
        stage = STAGE_SECURITY
        chap: ChapAuthenticator | None = None
        chap_required = False
        authenticated = False
        text = b""
        declared_mrdsl = False
        while True:
            pdu = await self.read_pdu()
            if pdu.opcode != OP_LOGIN:
                raise ProtocolError(f"opcode {pdu.opcode:#x} before login completed")
            flags = pdu.flags
            transit, cont = bool(flags & 0x80), bool(flags & 0x40)
            csg, nsg = (flags >> 2) & 3, flags & 3
            if first:
                if not pdu.bhs[3] <= 0 <= pdu.bhs[2]:
                    await self._login_reject(pdu, LOGIN_UNSUPPORTED_VERSION)
                    return False
                self.isid = bytes(pdu.bhs[8:14])
                self.tsih = int.from_bytes(pdu.bhs[14:16], "big")
                self.exp_cmd_sn = pdu.u32(24)
                self.stat_sn = pdu.u32(28)
                stage = csg
            if self.tsih:
                await self._login_reject(pdu, LOGIN_NO_SESSION)  # one connection per session
                return False
            if csg != stage or csg not in (STAGE_SECURITY, STAGE_OPERATIONAL):
                await self._login_reject(pdu, LOGIN_INITIATOR_ERROR)
                return False
            text += pdu.data
            if len(text) > MAX_LOGIN_TEXT:
                raise ProtocolError("login text too long")
            if cont:
                await self._login_respond(pdu, csg, csg, False, [], cont=False)
                continue
            try:
                pairs = parse_text(text)
            except ValueError:
                await self._login_reject(pdu, LOGIN_INITIATOR_ERROR)
                return False
            text = b""
            keys = dict(pairs)
            answers: list[tuple[str, str]] = []
            try:
                if first:
                    first = False
                    redirect = self._login_identity(keys)
                    if redirect is not None:
                        await self._login_respond(
                            pdu, csg, 0, False, [("TargetAddress", redirect)], status=LOGIN_MOVED_TEMPORARILY
                        )
                        return False
                    chap_required = self._chap_required()
                    if not self.discovery:
                        answers.append(("TargetPortalGroupTag", str(PORTAL_GROUP_TAG)))
                if csg == STAGE_SECURITY:
                    if "AuthMethod" in keys:
                        offered = [m.strip() for m in keys["AuthMethod"].split(",")]
                        if chap_required and "CHAP" not in offered:
                            raise LoginFailed(LOGIN_AUTH_FAILED, "CHAP required, not offered")
                        if chap_required:
                            answers.append(("AuthMethod", "CHAP"))
                            chap = self._chap_authenticator()
                        elif "None" in offered:
                            answers.append(("AuthMethod", "None"))
                            authenticated = True
                        else:
                            raise LoginFailed(LOGIN_AUTH_FAILED, "no acceptable AuthMethod")
                    if "CHAP_A" in keys:
                        if chap is None:
                            raise LoginFailed(LOGIN_INITIATOR_ERROR, "CHAP_A before AuthMethod=CHAP")
                        answers += chap.offer(keys["CHAP_A"])
                    if "CHAP_R" in keys:
                        if chap is None:
                            raise LoginFailed(LOGIN_INITIATOR_ERROR, "CHAP_R before a challenge")
                        assert self.target is not None
                        who = (self.peer_ip, self.initiator, self.target.iqn)
                        answers += verify_with_backoff(chap, keys, self.portal.plane.throttle, *who)
                        authenticated = True
                        log.info("%r: CHAP authentication succeeded", self)
                    if not chap_required and "AuthMethod" not in keys:
                        authenticated = True
                    answers += negotiate([(k, v) for k, v in pairs if not k.startswith("CHAP_")], self.params)
                else:
                    if chap_required and not authenticated:
                        raise LoginFailed(LOGIN_AUTH_FAILED, "CHAP required but the security stage was skipped")
                    authenticated = authenticated or not chap_required
                    answers += negotiate(pairs, self.params)
                    if not declared_mrdsl:
                        answers.append(("MaxRecvDataSegmentLength", str(self.params.target_mrdsl)))
                        declared_mrdsl = True
            except ChapError as e:
                log.warning("%r: CHAP authentication failed: %s", self, e)
                await self._login_reject(pdu, LOGIN_AUTH_FAILED)
                return False
            except Throttled as e:
                log.warning("%r: refused unchecked after failed CHAP logins; next check in %d s", self, e.seconds)
                await self._login_reject(pdu, LOGIN_SERVICE_UNAVAILABLE)
                return False
            except LoginFailed as e:
                log.warning("%r: login refused (%d/%d): %s", self, e.status[0], e.status[1], e)
                await self._login_reject(pdu, e.status)
                return False
            except NegotiationError as e:
                log.warning("%r: bad login key: %s", self, e)
                await self._login_reject(pdu, LOGIN_INITIATOR_ERROR)
                return False
            do_transit = transit and authenticated and nsg in (STAGE_OPERATIONAL, STAGE_FULL_FEATURE) and nsg > csg
            if do_transit and nsg == STAGE_FULL_FEATURE:
                if not declared_mrdsl:
                    answers.append(("MaxRecvDataSegmentLength", str(self.params.target_mrdsl)))
                self.tsih = self.portal.new_tsih()
                self._register_session()  # visible in get-iscsi-connections once the initiator is in
            await self._login_respond(pdu, csg, nsg if do_transit else csg, do_transit, answers)
            if do_transit:
                stage = nsg
                if nsg == STAGE_FULL_FEATURE:
                    self.full_feature = True  # digests apply from the first PDU after the login
                    return True

    def _login_identity(self, keys: dict[str, str]) -> str | None:
        """Check who logs in to what; on the VIP return the chunk address to redirect to."""
        self.initiator = keys.get("InitiatorName", "")
        if not self.initiator:
            raise LoginFailed(LOGIN_MISSING_PARAMETER, "InitiatorName missing")
        session_type = keys.get("SessionType", "Normal")
        if session_type not in ("Normal", "Discovery"):
            raise LoginFailed(LOGIN_INITIATOR_ERROR, "unknown SessionType")
        self.discovery = session_type == "Discovery"
        if self.discovery:
            return None
        name = keys.get("TargetName", "")
        if not name:
            raise LoginFailed(LOGIN_MISSING_PARAMETER, "TargetName missing")
        target = self.catalog.target_by_iqn(name)
        if target is None:
            raise LoginFailed(LOGIN_NOT_FOUND, f"no target {name[:223]}")
        if not access.target_admits(target, self.initiator, self.peer_ip):
            raise LoginFailed(LOGIN_FORBIDDEN, f"{self.initiator} from {self.peer_ip} not in the whitelists of {name}")
        self.target = target
        if self.portal.role == "vip":
            address = self.portal.redirect(self.initiator, target.iqn)
            if address is None:
                raise LoginFailed(LOGIN_SERVICE_UNAVAILABLE, "no chunk is up")
            log.info("%r: redirecting login for %s to %s", self, target.iqn, address)
            return f"{address},{PORTAL_GROUP_TAG}"
        return None

    def _chap_required(self) -> bool:
        return self.target is not None and self.target.chap_enabled

    def _chap_authenticator(self) -> ChapAuthenticator:
        assert self.target is not None
        entry = next(
            (c for c in self.target.initiator_chaps if c.initiator_iqn.lower() == self.initiator.lower()),
            None,
        )
        if entry is None:
            raise LoginFailed(LOGIN_AUTH_FAILED, f"no CHAP credentials for {self.initiator}")
        return ChapAuthenticator(
            expected_name=entry.chap_name,
            expected_secret=entry.chap_secret,
            target_name=self.target.chap_name,
            target_secret=self.target.chap_secret,
        )

    async def _login_respond(
        self,
        pdu: Pdu,
        csg: int,
        nsg: int,
        transit: bool,
        answers: list[tuple[str, str]],
        *,
        cont: bool = False,
        status: tuple[int, int] = LOGIN_OK,
    ) -> None:
        data = encode_text(answers)
        flags = (0x80 if transit else 0) | (0x40 if cont else 0) | (csg << 2) | nsg
        isid_tsih = self.isid + self.tsih.to_bytes(2, "big")
        hdr = build_bhs(
            OP_LOGIN_RESP,
            flags,
            data_len=len(data),
            lun=isid_tsih,
            itt=pdu.itt,
            words=(0, self._next_stat_sn(), self.exp_cmd_sn, self._max_cmd_sn(), (status[0] << 24) | (status[1] << 16)),
        )
        await self._send(self._frame(hdr, data))

    async def _login_reject(self, pdu: Pdu, status: tuple[int, int]) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._login_respond(pdu, 0, 0, False, [], status=status)

    def _register_session(self) -> None:
        if self.discovery:
            log.info("%r: discovery session open", self)
            return
        assert self.target is not None
        self.portal.session_started(self)
        self.conn_info = ConnectionInfo(
            id=uuid.uuid4().hex,
            target_id=self.target.id,
            initiator_iqn=self.initiator,
            initiator_ip=self.peer_ip,
            client_port=self.peer_port,
            chunk=self.portal.n,
        )
        try:
            self.catalog.connection_opened(self.conn_info)
        except Exception:
            log.exception("%r: catalog.connection_opened failed", self)
        self._refresh()
        p = self.params
        log.info(
            "%r: session open on %s, LUNs visible: %s; digests header=%s data=%s, ImmediateData=%s InitialR2T=%s,"
            " bursts %d/%d, MaxRecvDataSegmentLength initiator %d target %d",
            self,
            self.target.iqn,
            sorted(self.visible),
            "CRC32C" if p.header_digest else "None",
            "CRC32C" if p.data_digest else "None",
            p.immediate_data,
            p.initial_r2t,
            p.first_burst,
            p.max_burst,
            p.initiator_mrdsl,
            p.target_mrdsl,
        )

    # ---------------------------------------------------------------- full feature phase
    async def _full_feature(self) -> None:
        while not self.closed:
            pdu = await self.read_pdu()
            op = pdu.opcode
            if op == OP_SCSI_CMD:
                self._on_scsi(pdu)
                if self._backlogged():
                    await self.writer.drain()
            elif op == OP_DATA_OUT:
                self._on_data_out(pdu)
            elif op == OP_NOP_OUT:
                await self._on_nop(pdu)
            elif op == OP_TASK_MGMT:
                await self._on_tmf(pdu)
            elif op == OP_TEXT:
                await self._on_text(pdu)
            elif op == OP_LOGOUT:
                await self._on_logout(pdu)
                return
            elif op == OP_LOGIN:
                raise ProtocolError("login request in the full-feature phase")
            elif op == OP_SNACK:
                await self._reject(pdu, REJECT_CMD_NOT_SUPPORTED)  # ErrorRecoveryLevel 0
            else:
                await self._reject(pdu, REJECT_PROTOCOL_ERROR)
                raise ProtocolError(f"unknown opcode {op:#x}")

    def _accept_cmd_sn(self, pdu: Pdu) -> bool:
        """Advance ExpCmdSN for a non-immediate command; False if it lies outside the window."""
        if pdu.immediate:
            return True
        cmd_sn = pdu.u32(24)
        if serial_lt(cmd_sn, self.exp_cmd_sn) or serial_lt(self._max_cmd_sn(), cmd_sn):
            log.info("%r: ignoring CmdSN %d outside [%d, %d]", self, cmd_sn, self.exp_cmd_sn, self._max_cmd_sn())
            return False
        if serial_le(self.exp_cmd_sn, cmd_sn):
            self.exp_cmd_sn = (cmd_sn + 1) & 0xFFFFFFFF
        return True

    async def _reject(self, pdu: Pdu, reason: int) -> None:
        hdr = build_bhs(
            OP_REJECT,
            FLAG_FINAL,
            b2=reason,
            data_len=BHS_LEN,
            words=(0, self._next_stat_sn(), self.exp_cmd_sn, self._max_cmd_sn()),
        )
        await self._send(self._frame(hdr, pdu.bhs))

    # -------- masking and unit attention
    def unit_attention(self, lun_id: str, asc_ascq: tuple[int, int]) -> None:
        """Queue a UNIT ATTENTION for the LUN with this catalog id, if this session sees it."""
        self._refresh()
        for n, lv in self.visible.items():
            if lv.id == lun_id:
                self.pending_ua[n] = asc_ascq

    def _refresh(self) -> None:
        gen = self.catalog.generation()
        if gen == self._gen or self.target is None:
            return
        self._gen = gen
        target = self.catalog.target_by_iqn(self.target.iqn)
        if target is None or target.id != self.target.id:
            self.visible = {}
            return
        self.target = target
        visible = access.visible_luns(target, self.catalog.luns(target.id), self.initiator, self.peer_ip)
        for n, lv in visible.items():
            old = self._sizes.get(lv.id)
            if old is not None and old != lv.size:
                self.pending_ua[n] = scsi.CAPACITY_CHANGED
                log.info("%r: LUN %d resized %d -> %d bytes", self, n, old, lv.size)
            self._sizes[lv.id] = lv.size
        for n in set(self.visible) - set(visible):
            log.info("%r: LUN %d no longer visible", self, n)
        self.visible = visible

    # -------- SCSI commands
    def _on_scsi(self, pdu: Pdu) -> None:
        if not self._accept_cmd_sn(pdu):
            return
        itt = pdu.itt
        if itt in self.tasks:
            raise ProtocolError(f"task tag {itt:#x} already in use")
        edtl = pdu.u32(20)
        write = bool(pdu.flags & 0x20)
        if len(pdu.data) and not (write and self.params.immediate_data):
            raise ProtocolError("immediate data without W bit or with ImmediateData=No")
        if len(pdu.data) > edtl:
            raise ProtocolError("immediate data beyond the expected transfer length")
        if self._try_inline(pdu, write, edtl):
            return
        ws: WriteState | None = None
        if write and edtl and len(pdu.data) == edtl:  # all of it came as immediate data: no copy
            ws = WriteState(edtl, pdu.data, received=edtl, next_offset=edtl)
        elif write and edtl:
            buf = bytearray(edtl)
            buf[: len(pdu.data)] = pdu.data
            # F on the command: no unsolicited Data-Out follows; otherwise it runs to FirstBurstLength
            unsolicited = 0 if self.params.initial_r2t or pdu.final else min(self.params.first_burst, edtl)
            ws = WriteState(edtl, buf, received=len(pdu.data), next_offset=max(len(pdu.data), unsolicited))
            if unsolicited > len(pdu.data):
                ws.sequences[RESERVED_TAG] = [len(pdu.data), 0]
            self.writes[itt] = ws
        if not pdu.immediate:
            self.inflight += 1
        task = asyncio.get_running_loop().create_task(self._run_scsi(pdu, ws))
        self.tasks[itt] = task
        self.task_luns[itt] = decode_lun(pdu.lun_field)

    def _try_inline(self, pdu: Pdu, write: bool, edtl: int) -> bool:
        """Complete a READ/WRITE right here when the page cache serves it without blocking.

        Most commands of a busy session take this path: no task, no thread, the response
        corked with its neighbours. Anything unusual (unit attention, masking, errors, data
        still to come, a read that would touch the disk) goes the general way.
        """
        op = pdu.bhs[32]
        if op not in scsi.READS and op not in scsi.WRITES:
            return False
        if write and len(pdu.data) != edtl:
            return False
        self._refresh()
        lun_no = decode_lun(pdu.lun_field)
        lun = self.visible.get(lun_no)
        if lun is None or lun_no in self.pending_ua:
            return False
        lf = self.portal.plane.lun_file(lun)
        if lf is None:
            return False
        try:
            result = self.portal.plane.device.try_inline(pdu.bhs[32:48], lun, lf, pdu.data if write else None)
        finally:
            lf.release()
        if result is None:
            return False
        self._emit(self._result_pdus(pdu, result))
        return True

    def _on_data_out(self, pdu: Pdu) -> None:
        ws = self.writes.get(pdu.itt)
        if ws is None:
            return  # the command already finished (e.g. failed early): drop its remaining data
        offset, ttt, data_sn = pdu.u32(40), pdu.u32(20), pdu.u32(36)
        n = len(pdu.data)
        seq = ws.sequences.get(ttt)
        if seq is None:
            raise ProtocolError(f"Data-Out for task {pdu.itt:#x} with unknown TTT {ttt:#x}")
        if offset != seq[0] or data_sn != seq[1]:
            # at ErrorRecoveryLevel 0 the command cannot be saved: fail it (ABORTED COMMAND),
            # drop the rest of its data, keep the connection for everything else
            log.warning("%r: task %#x: Data-Out offset %d DataSN %d, expected %s", self, pdu.itt, offset, data_sn, seq)
            ws.failed = True
            del self.writes[pdu.itt]
            ws.event.set()
            return
        if offset + n > ws.edtl:
            raise ProtocolError(f"Data-Out at {offset}+{n} beyond the expected length {ws.edtl}")
        if not isinstance(ws.buffer, bytearray):
            raise ProtocolError("Data-Out for a command that carried all its data")
        ws.buffer[offset : offset + n] = pdu.data
        ws.received += n
        seq[0] += n
        seq[1] += 1
        if pdu.final:
            del ws.sequences[ttt]
            if ttt != RESERVED_TAG:
                ws.outstanding -= 1
        ws.event.set()

    async def _collect(self, pdu: Pdu, ws: WriteState) -> None:
        """Solicit the rest of a write's data with R2Ts, MaxOutstandingR2T at a time."""
        p = self.params
        while ws.received < ws.edtl:
            while ws.outstanding < p.max_outstanding_r2t and ws.next_offset < ws.edtl:
                length = min(p.max_burst, ws.edtl - ws.next_offset)
                ttt = next(_ttt) & 0x7FFFFFFF
                ws.sequences[ttt] = [ws.next_offset, 0]
                hdr = build_bhs(
                    OP_R2T,
                    FLAG_FINAL,
                    lun=pdu.lun_field,
                    itt=pdu.itt,
                    words=(
                        ttt,
                        self.stat_sn,
                        self.exp_cmd_sn,
                        self._max_cmd_sn(),
                        ws.r2tsn,
                        ws.next_offset,
                        length,
                    ),
                )
                ws.r2tsn += 1
                ws.next_offset += length
                ws.outstanding += 1
                await self._send(self._frame(hdr))
            ws.event.clear()
            if ws.received < ws.edtl and not ws.failed:
                await ws.event.wait()
            if ws.failed:
                raise scsi.ScsiError(scsi.ABORTED_COMMAND, scsi.DATA_PHASE_ERROR)

    async def _run_scsi(self, pdu: Pdu, ws: WriteState | None) -> None:
        itt = pdu.itt
        try:
            result = await self._scsi_result(pdu, ws)
            if not pdu.immediate:
                self.inflight -= 1
                self.tasks.pop(itt, None)  # MaxCmdSN opens up before the status goes out
            await self._send_result(pdu, result)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as e:
            log.debug("%r: could not complete task %#x: %s", self, itt, e)
        except ProtocolError as e:
            log.warning("%r: %s", self, e)
            self.abort()
        except Exception:
            log.exception("%r: task %#x failed", self, itt)
            self.abort()
        finally:
            if self.tasks.pop(itt, None) is not None and not pdu.immediate:
                self.inflight -= 1
            self.task_luns.pop(itt, None)
            self.writes.pop(itt, None)

    async def _scsi_result(self, pdu: Pdu, ws: WriteState | None) -> scsi.ScsiResult:
        cdb = pdu.bhs[32:48]
        op = cdb[0]
        lun_no = decode_lun(pdu.lun_field)
        self._refresh()
        if op == 0xA0:  # REPORT LUNS: any LUN address, lists only what this initiator may see
            alloc = struct.unpack_from(">I", cdb, 6)[0]
            if alloc < 16 or cdb[2] > 2:
                return scsi.check(scsi.ILLEGAL_REQUEST, scsi.INVALID_FIELD_IN_CDB)
            return scsi.ScsiResult(data=scsi.report_luns(list(self.visible))[:alloc])
        lun = self.visible.get(lun_no)
        if lun is None:
            if op == 0x12 and not cdb[1] & 1:
                alloc = struct.unpack_from(">H", cdb, 3)[0]
                return scsi.ScsiResult(data=scsi.standard_inquiry(False)[:alloc])
            if op == 0x03:
                sense = scsi.sense_fixed(scsi.ILLEGAL_REQUEST, scsi.LU_NOT_SUPPORTED)
                return scsi.ScsiResult(data=sense[: cdb[4]])
            return scsi.check(scsi.ILLEGAL_REQUEST, scsi.LU_NOT_SUPPORTED)
        if op == 0x03:  # REQUEST SENSE
            if cdb[1] & 1:
                return scsi.check(scsi.ILLEGAL_REQUEST, scsi.INVALID_FIELD_IN_CDB)
            ua = self.pending_ua.pop(lun_no, None)
            sense = scsi.sense_fixed(scsi.UNIT_ATTENTION, ua) if ua else scsi.sense_fixed(scsi.NO_SENSE, (0, 0))
            return scsi.ScsiResult(data=sense[: cdb[4]])
        if lun_no in self.pending_ua and op not in scsi.UA_EXEMPT:
            return scsi.check(scsi.UNIT_ATTENTION, self.pending_ua.pop(lun_no))
        if ws is not None and ws.received < ws.edtl:
            try:
                await self._collect(pdu, ws)
            except scsi.ScsiError as e:
                return scsi.check(e.key, e.asc_ascq)
            self.writes.pop(pdu.itt, None)
        lf = self.portal.plane.lun_file(lun)
        if lf is None:
            return scsi.check(scsi.NOT_READY, (0x04, 0x03))
        try:
            assert self.target is not None
            return await self.portal.plane.device.execute(
                cdb, lun, lf, ws.buffer if ws is not None else None, self.target.iqn
            )
        finally:
            lf.release()

    async def _send_result(self, pdu: Pdu, result: scsi.ScsiResult) -> None:
        await self._send(self._result_pdus(pdu, result))

    def _result_pdus(self, pdu: Pdu, result: scsi.ScsiResult) -> list[Buf]:
        edtl = pdu.u32(20)
        reading = bool(pdu.flags & 0x40)
        produced = len(result.data)
        resid_flags, residual = 0, 0
        wanted = result.data_out_wanted if result.data_out_wanted is not None else produced
        if result.status == scsi.GOOD and (reading or wanted or pdu.flags & 0x20):
            if wanted < edtl:
                resid_flags, residual = 0x02, edtl - wanted  # underflow
            elif wanted > edtl:
                resid_flags, residual = 0x04, wanted - edtl  # overflow
        if result.status == scsi.GOOD and produced and edtl:
            return self._data_in_pdus(pdu, memoryview(result.data)[:edtl], resid_flags, residual)
        data = struct.pack(">H", len(result.sense)) + result.sense if result.sense else b""
        hdr = build_bhs(
            OP_SCSI_RESP,
            FLAG_FINAL | resid_flags,
            b2=0,
            b3=result.status,
            data_len=len(data),
            itt=pdu.itt,
            words=(0, self._next_stat_sn(), self.exp_cmd_sn, self._max_cmd_sn(), 0, 0, residual),
        )
        return self._frame(hdr, data)

    def _data_in_pdus(self, pdu: Pdu, data: memoryview, resid_flags: int, residual: int) -> list[Buf]:
        seg = self.params.initiator_mrdsl
        total = len(data)
        bufs: list[Buf] = []
        for data_sn, off in enumerate(range(0, total, seg)):
            piece = data[off : off + seg]
            last = off + seg >= total
            if last:
                flags = FLAG_FINAL | 0x01 | resid_flags  # F, S: status rides in the last Data-In
                stat_sn = self._next_stat_sn()
                words = (RESERVED_TAG, stat_sn, self.exp_cmd_sn, self._max_cmd_sn(), data_sn, off, residual)
            else:
                flags = 0
                words = (RESERVED_TAG, 0, self.exp_cmd_sn, self._max_cmd_sn(), data_sn, off, 0)
            hdr = build_bhs(OP_DATA_IN, flags, b3=0, data_len=len(piece), lun=pdu.lun_field, itt=pdu.itt, words=words)
            bufs += self._frame(hdr, piece)
        return bufs

    # -------- other requests
    async def _on_nop(self, pdu: Pdu) -> None:
        if not self._accept_cmd_sn(pdu):
            return
        if pdu.itt == RESERVED_TAG:
            return  # an answer to a NOP-In we never send, or a one-way ping
        hdr = build_bhs(
            OP_NOP_IN,
            FLAG_FINAL,
            data_len=len(pdu.data),
            lun=pdu.lun_field,
            itt=pdu.itt,
            words=(RESERVED_TAG, self._next_stat_sn(), self.exp_cmd_sn, self._max_cmd_sn()),
        )
        await self._send(self._frame(hdr, pdu.data))

    async def _on_tmf(self, pdu: Pdu) -> None:
        self._accept_cmd_sn(pdu)
        function = pdu.flags & 0x7F
        lun_no = decode_lun(pdu.lun_field)
        response = 0
        if function == 1:  # ABORT TASK
            ref = pdu.u32(20)
            task = self.tasks.get(ref)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            elif not serial_lt(pdu.u32(32), pdu.u32(24)):
                response = 1  # task does not exist
        elif function in (2, 4, 5):  # ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET
            self._refresh()
            if function == 5 and lun_no not in self.visible:
                response = 2
            else:
                await self._cancel(lambda itt: self.task_luns.get(itt) == lun_no)
                if function == 5:  # every I_T nexus of this LU, on every chunk, learns of the reset
                    self.portal.plane.unit_attention(self.visible[lun_no].id, scsi.LU_RESET_OCCURRED)
        elif function in (6, 7):  # TARGET WARM/COLD RESET
            await self._cancel(lambda itt: True)
        elif function == 3:  # CLEAR ACA: we never establish ACA
            response = 0
        elif function == 8:  # TASK REASSIGN needs ErrorRecoveryLevel 2
            response = 4
        else:
            response = 5
        hdr = build_bhs(
            OP_TASK_MGMT_RESP,
            FLAG_FINAL,
            b2=response,
            itt=pdu.itt,
            words=(0, self._next_stat_sn(), self.exp_cmd_sn, self._max_cmd_sn()),
        )
        await self._send(self._frame(hdr))
        if function == 7:
            raise ConnectionResetError("target cold reset")

    async def _cancel(self, which) -> None:
        tasks = [t for itt, t in self.tasks.items() if which(itt)]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_text(self, pdu: Pdu) -> None:
        if not self._accept_cmd_sn(pdu):
            return
        ttt = pdu.u32(20)
        if ttt != RESERVED_TAG and ttt in self.text_pending:
            body = self.text_pending.pop(ttt)
        else:
            try:
                pairs = parse_text(pdu.data)
            except ValueError as e:
                raise ProtocolError(str(e)) from e
            answers: list[tuple[str, str]] = []
            for key, value in pairs:
                if key == "SendTargets":
                    answers += self._send_targets(value)
                else:
                    answers.append((key, "NotUnderstood"))
            body = encode_text(answers)
        limit = self.params.initiator_mrdsl
        more = len(body) > limit
        flags = 0x40 if more else FLAG_FINAL
        next_ttt = RESERVED_TAG
        if more:
            next_ttt = next(_ttt) & 0x7FFFFFFF
            self.text_pending[next_ttt] = body[limit:]
            body = body[:limit]
        hdr = build_bhs(
            OP_TEXT_RESP,
            flags,
            data_len=len(body),
            itt=pdu.itt,
            words=(next_ttt, self._next_stat_sn(), self.exp_cmd_sn, self._max_cmd_sn()),
        )
        await self._send(self._frame(hdr, body))

    def _send_targets(self, value: str) -> list[tuple[str, str]]:
        """Targets this initiator may reach from where it is, all at this portal's address."""
        if self.discovery:
            targets = [t for t in self.catalog.targets() if access.target_admits(t, self.initiator, self.peer_ip)]
            if value not in ("All", ""):
                targets = [t for t in targets if t.iqn == value]
        else:
            targets = [self.target] if self.target is not None and value in ("", "All", self.target.iqn) else []
        out: list[tuple[str, str]] = []
        for t in sorted(targets, key=lambda t: t.iqn):
            out.append(("TargetName", t.iqn))
            out.append(("TargetAddress", f"{self.portal.address},{PORTAL_GROUP_TAG}"))
        return out

    async def _on_logout(self, pdu: Pdu) -> None:
        self._accept_cmd_sn(pdu)
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=10)
        hdr = build_bhs(
            OP_LOGOUT_RESP,
            FLAG_FINAL,
            b2=0,
            itt=pdu.itt,
            words=(0, self._next_stat_sn(), self.exp_cmd_sn, self._max_cmd_sn(), 0, (2 << 16) | 0),
        )
        await self._send(self._frame(hdr))
        log.info("%r: logged out", self)
