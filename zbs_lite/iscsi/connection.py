"""One iSCSI connection (= one session: MaxConnections=1) on a chunk or on the VIP portal.

The login (login.py) then the full-feature phase: each PDU is dispatched here; SCSI
commands run concurrently in commands.py (their semantics in the SCSI core, scsi.py, which
this module never interprets). A chunk serves
data; the VIP portal only answers discovery and redirects normal logins to a chunk. Any
protocol violation drops this connection only: it is logged, and every other connection
carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Protocol

from zbs_lite.catalog import Catalog, CatalogSnapshot, ConnectionInfo, TargetView
from zbs_lite.iscsi import access
from zbs_lite.iscsi.commands import Commands, SessionLimits
from zbs_lite.iscsi.dataout import next_ttt
from zbs_lite.iscsi.login import PORTAL_GROUP_TAG, Identity, Login, LoginPortal
from zbs_lite.iscsi.negotiation import SessionParams
from zbs_lite.iscsi.numbering import Numbering
from zbs_lite.iscsi.pdu import (
    BHS_LEN,
    FLAG_FINAL,
    OP_DATA_OUT,
    OP_LOGIN,
    OP_LOGOUT,
    OP_LOGOUT_RESP,
    OP_NOP_IN,
    OP_NOP_OUT,
    OP_REJECT,
    OP_SCSI_CMD,
    OP_SNACK,
    OP_TASK_MGMT,
    OP_TASK_MGMT_RESP,
    OP_TEXT,
    OP_TEXT_RESP,
    REJECT_CMD_NOT_SUPPORTED,
    REJECT_PROTOCOL_ERROR,
    RESERVED_TAG,
    Pdu,
    build_bhs,
    decode_lun,
    encode_text,
    parse_text,
    serial_lt,
)
from zbs_lite.iscsi.scsi import Executor, Nexus
from zbs_lite.iscsi.sense import (
    LU_RESET_OCCURRED,
    ScsiResult,
)
from zbs_lite.iscsi.transport import PduTransport, ProtocolError

log = logging.getLogger(__name__)

LOGIN_TIMEOUT = 30.0

# task management functions (RFC 7143 section 11.5.1) and responses
TMF_ABORT_TASK = 1
TMF_ABORT_TASK_SET = 2
TMF_CLEAR_ACA = 3
TMF_CLEAR_TASK_SET = 4
TMF_LOGICAL_UNIT_RESET = 5
TMF_TARGET_WARM_RESET = 6
TMF_TARGET_COLD_RESET = 7
TMF_TASK_REASSIGN = 8
TMF_COMPLETE = 0
TMF_NO_TASK = 1
TMF_NO_LUN = 2
TMF_REASSIGN_UNSUPPORTED = 4
TMF_NOT_SUPPORTED = 5


class Host(LoginPortal, Protocol):
    """What a connection needs from the portal it arrived on and the data plane behind it."""

    @property
    def n(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def snapshot(self) -> CatalogSnapshot: ...

    @property
    def executor(self) -> Executor: ...

    def session_started(self, conn: Connection) -> None: ...

    def session_ended(self, conn: Connection) -> None: ...

    def unit_attention(self, lun_id: str, asc_ascq: tuple[int, int]) -> None: ...


class Connection:
    def __init__(
        self,
        host: Host,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: SessionLimits,
    ) -> None:
        self.host = host
        self.catalog = host.catalog
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer_ip, self.peer_port = str(peer[0]), int(peer[1])
        self.params = SessionParams()
        self.transport = PduTransport(reader, writer, self.params)
        self.numbers = Numbering()
        self.identity = Identity()
        self.nexus = Nexus()
        self.commands = Commands(
            self.transport, self.numbers, self.params, self.identity, self.nexus, host.executor, limits, self
        )
        self.text_pending: tuple[int, bytes] | None = None  # the rest of a Text answer: (TTT, bytes)
        self.conn_info: ConnectionInfo | None = None

    def __repr__(self) -> str:
        who = self.identity.initiator or "-"
        return f"<iscsi conn {self.peer_ip}:{self.peer_port} {who} on {self.host.name}>"

    @property
    def target(self) -> TargetView | None:
        return self.identity.target

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
            elif self.transport.full_feature:
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
        self.transport.abort()

    async def _close(self) -> None:
        self.transport.flush()  # a last login reject, redirect or logout response still goes out
        self.transport.closed = True
        await self.commands.cancel(lambda task: True)
        self.text_pending = None
        self.host.session_ended(self)
        if self.conn_info is not None:
            try:
                self.catalog.connection_closed(self.conn_info.id)
            except Exception:
                log.exception("%r: catalog.connection_closed failed", self)
        with contextlib.suppress(Exception):
            self.transport.writer.close()

    # ---------------------------------------------------------------- login
    async def _login(self) -> bool:
        login = Login(
            self.transport,
            self.numbers,
            self.params,
            self.identity,
            portal=self.host,
            peer_ip=self.peer_ip,
            target_by_iqn=lambda iqn: self.host.snapshot.target_by_iqn(iqn),
            entering_full_feature=self._register_session,
            who=self,
        )
        return await login.run()

    def _register_session(self) -> None:
        if self.identity.discovery:
            log.info("%r: discovery session open", self)
            return
        target = self.target
        assert target is not None
        self.host.session_started(self)
        self.conn_info = ConnectionInfo(
            id=uuid.uuid4().hex,
            target_id=target.id,
            initiator_iqn=self.identity.initiator,
            initiator_ip=self.peer_ip,
            client_port=self.peer_port,
            chunk=self.host.n,
        )
        try:
            self.catalog.connection_opened(self.conn_info)
        except Exception:
            log.exception("%r: catalog.connection_opened failed", self)
        self.catalog_changed(self.host.snapshot)
        p = self.params
        log.info(
            "%r: session open on %s, LUNs visible: %s; digests header=%s data=%s, ImmediateData=%s InitialR2T=%s,"
            " bursts %d/%d, MaxRecvDataSegmentLength initiator %d target %d",
            self,
            target.iqn,
            sorted(self.nexus.visible),
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
        while not self.transport.closed:
            pdu = await self.transport.read()
            op = pdu.opcode
            if self.identity.discovery and op not in (OP_TEXT, OP_NOP_OUT, OP_LOGOUT):
                await self._reject(pdu, REJECT_PROTOCOL_ERROR)  # RFC 7143 4.3: Text and Logout only
                raise ProtocolError(f"opcode {op:#x} on a discovery session")
            if op == OP_SCSI_CMD:
                if self._accept_cmd_sn(pdu):
                    self.commands.submit(pdu)
                if self.transport.backlogged():
                    await self.transport.writer.drain()
            elif op == OP_DATA_OUT:
                self.commands.data(pdu)
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
        if self.numbers.accept(pdu):
            return True
        n = self.numbers
        log.info("%r: ignoring CmdSN %d outside [%d, %d]", self, pdu.u32(24), n.exp_cmd_sn, n.max_cmd_sn())
        return False

    async def _reject(self, pdu: Pdu, reason: int) -> None:
        n = self.numbers
        hdr = build_bhs(
            OP_REJECT,
            FLAG_FINAL,
            b2=reason,
            data_len=BHS_LEN,
            words=(0, n.next_stat_sn(), n.exp_cmd_sn, n.max_cmd_sn()),
        )
        await self.transport.send_pdu(hdr, pdu.bhs)

    # -------- masking and unit attention
    def unit_attention(self, lun_id: str, asc_ascq: tuple[int, int]) -> None:
        """Queue a UNIT ATTENTION for the LUN with this catalog id, if this session sees it."""
        self.nexus.unit_attention(lun_id, asc_ascq)

    def catalog_changed(self, snap: CatalogSnapshot) -> list[asyncio.Task[ScsiResult]]:
        """Re-apply masking and whitelists to this session (on the loop, when its target changed),
        and fence its commands to LUNs it may no longer use (Commands.fence); returns the writes
        already under way, which the change waits for before it is acknowledged."""
        current = self.target
        if current is None:
            return []
        target = snap.by_id.get(current.id)
        if target is None or target.iqn != current.iqn:
            self.nexus.show({})
        else:
            self.identity.target = target
            ident = self.identity
            visible = access.visible_luns(target, list(snap.luns(target.id)), ident.initiator, self.peer_ip)
            resized, gone = self.nexus.show(visible)
            for n in resized:
                log.info("%r: LUN %d resized to %d bytes", self, n, visible[n].size)
            for n in gone:
                log.info("%r: LUN %d no longer visible", self, n)
        return self.commands.fence()

    # -------- other requests
    async def _on_nop(self, pdu: Pdu) -> None:
        if not self._accept_cmd_sn(pdu):
            return
        if pdu.itt == RESERVED_TAG:
            return  # an answer to a NOP-In we never send, or a one-way ping
        n = self.numbers
        hdr = build_bhs(
            OP_NOP_IN,
            FLAG_FINAL,
            data_len=len(pdu.data),
            lun=pdu.lun_field,
            itt=pdu.itt,
            words=(RESERVED_TAG, n.next_stat_sn(), n.exp_cmd_sn, n.max_cmd_sn()),
        )
        await self.transport.send_pdu(hdr, pdu.data)

    async def _on_tmf(self, pdu: Pdu) -> None:
        self._accept_cmd_sn(pdu)
        function = pdu.flags & 0x7F
        lun_no = decode_lun(pdu.lun_field)
        response = TMF_COMPLETE
        if function == TMF_ABORT_TASK:
            ref = pdu.u32(20)
            if ref in self.commands.tasks:
                await self.commands.cancel(lambda task: task.itt == ref)
            elif not serial_lt(pdu.u32(32), pdu.u32(24)):
                response = TMF_NO_TASK
        elif function in (TMF_ABORT_TASK_SET, TMF_CLEAR_TASK_SET, TMF_LOGICAL_UNIT_RESET):
            if function == TMF_LOGICAL_UNIT_RESET and lun_no not in self.nexus.visible:
                response = TMF_NO_LUN
            else:
                await self.commands.cancel(lambda task: task.lun_no == lun_no)
                if function == TMF_LOGICAL_UNIT_RESET:  # every I_T nexus of this LU, on every chunk, learns of it
                    self.host.unit_attention(self.nexus.visible[lun_no].id, LU_RESET_OCCURRED)
        elif function in (TMF_TARGET_WARM_RESET, TMF_TARGET_COLD_RESET):
            await self.commands.cancel(lambda task: True)
        elif function == TMF_CLEAR_ACA:  # we never establish ACA
            response = TMF_COMPLETE
        elif function == TMF_TASK_REASSIGN:  # needs ErrorRecoveryLevel 2
            response = TMF_REASSIGN_UNSUPPORTED
        else:
            response = TMF_NOT_SUPPORTED
        n = self.numbers
        hdr = build_bhs(
            OP_TASK_MGMT_RESP,
            FLAG_FINAL,
            b2=response,
            itt=pdu.itt,
            words=(0, n.next_stat_sn(), n.exp_cmd_sn, n.max_cmd_sn()),
        )
        await self.transport.send_pdu(hdr)
        if function == TMF_TARGET_COLD_RESET:
            raise ConnectionResetError("target cold reset")

    async def _on_text(self, pdu: Pdu) -> None:
        if not self._accept_cmd_sn(pdu):
            return
        ttt = pdu.u32(20)
        pending, self.text_pending = self.text_pending, None  # a new request abandons an unfetched answer
        if pending is not None and ttt == pending[0]:
            body = pending[1]
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
        next_tag = RESERVED_TAG
        if more:
            next_tag = next_ttt()
            self.text_pending = (next_tag, body[limit:])
            body = body[:limit]
        n = self.numbers
        hdr = build_bhs(
            OP_TEXT_RESP,
            flags,
            data_len=len(body),
            itt=pdu.itt,
            words=(next_tag, n.next_stat_sn(), n.exp_cmd_sn, n.max_cmd_sn()),
        )
        await self.transport.send_pdu(hdr, body)

    def _send_targets(self, value: str) -> list[tuple[str, str]]:
        """Targets this initiator may reach from where it is, all at this portal's address."""
        ident = self.identity
        if ident.discovery:
            known = self.host.snapshot.targets()
            targets = [t for t in known if access.target_admits(t, ident.initiator, self.peer_ip)]
            if value not in ("All", ""):
                targets = [t for t in targets if t.iqn == value]
        else:
            target = ident.target
            targets = [target] if target is not None and value in ("", "All", target.iqn) else []
        out: list[tuple[str, str]] = []
        for t in sorted(targets, key=lambda t: t.iqn):
            out.append(("TargetName", t.iqn))
            out.append(("TargetAddress", f"{self.host.address},{PORTAL_GROUP_TAG}"))
        return out

    async def _on_logout(self, pdu: Pdu) -> None:
        self._accept_cmd_sn(pdu)
        runners = self.commands.runners()
        if runners:
            await asyncio.wait(runners, timeout=10)
        n = self.numbers
        hdr = build_bhs(
            OP_LOGOUT_RESP,
            FLAG_FINAL,
            b2=0,
            itt=pdu.itt,
            words=(0, n.next_stat_sn(), n.exp_cmd_sn, n.max_cmd_sn(), 0, (2 << 16) | 0),
        )
        await self.transport.send_pdu(hdr)
        log.info("%r: logged out", self)
