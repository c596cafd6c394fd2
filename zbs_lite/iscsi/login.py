"""The login phase (RFC 7143 section 6): who logs in to what, CHAP, and the operational keys.

A normal login on the VIP portal is redirected to a chunk; on a chunk it ends in the
full-feature phase. Every refusal answers with the RFC's status class and detail, then the
connection closes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from zbs_lite.catalog import TargetView
from zbs_lite.iscsi import access
from zbs_lite.iscsi.chap import ChapAuthenticator, ChapError, verify_with_backoff
from zbs_lite.iscsi.negotiation import NegotiationError, SessionParams, negotiate
from zbs_lite.iscsi.numbering import Numbering
from zbs_lite.iscsi.pdu import OP_LOGIN, OP_LOGIN_RESP, Pdu, build_bhs, encode_text, parse_text
from zbs_lite.iscsi.transport import PduTransport, ProtocolError
from zbs_lite.throttle import LoginThrottle, Throttled

log = logging.getLogger(__name__)

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
LOGIN_SERVICE_UNAVAILABLE = (3, 1)


class LoginFailed(Exception):
    def __init__(self, status: tuple[int, int], reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Identity:
    """Who is logged in to what: set during the login, fixed for the session's life."""

    initiator: str = ""
    discovery: bool = False
    target: TargetView | None = None
    isid: bytes = b"\0" * 6
    tsih: int = 0


class LoginPortal(Protocol):
    """What the login needs from the portal it arrived on."""

    @property
    def role(self) -> str: ...

    def redirect(self, initiator: str, target_iqn: str) -> str | None: ...

    def new_tsih(self) -> int: ...

    @property
    def throttle(self) -> LoginThrottle: ...


class Login:
    def __init__(
        self,
        transport: PduTransport,
        numbers: Numbering,
        params: SessionParams,
        identity: Identity,
        *,
        portal: LoginPortal,
        peer_ip: str,
        target_by_iqn: Callable[[str], TargetView | None],
        entering_full_feature: Callable[[], None],
        who: object,
    ) -> None:
        self.transport = transport
        self.numbers = numbers
        self.params = params
        self.identity = identity
        self.portal = portal
        self.peer_ip = peer_ip
        self._target_by_iqn = target_by_iqn
        self._entering_full_feature = entering_full_feature
        self.who = who  # how log lines name the connection

    async def run(self) -> bool:
        """True once in the full-feature phase; False after a refusal or a redirect."""
        ident = self.identity
        first = True
        stage = STAGE_SECURITY
        chap: ChapAuthenticator | None = None
        chap_required = False
        authenticated = False
        text = b""
        declared_mrdsl = False
        while True:
            pdu = await self.transport.read()
            if pdu.opcode != OP_LOGIN:
                raise ProtocolError(f"opcode {pdu.opcode:#x} before login completed")
            flags = pdu.flags
            transit, cont = bool(flags & 0x80), bool(flags & 0x40)
            csg, nsg = (flags >> 2) & 3, flags & 3
            if first:
                if not pdu.bhs[3] <= 0 <= pdu.bhs[2]:
                    await self._reject(pdu, LOGIN_UNSUPPORTED_VERSION)
                    return False
                ident.isid = bytes(pdu.bhs[8:14])
                ident.tsih = int.from_bytes(pdu.bhs[14:16], "big")
                self.numbers.exp_cmd_sn = pdu.u32(24)
                self.numbers.stat_sn = pdu.u32(28)
                stage = csg
            if ident.tsih:
                await self._reject(pdu, LOGIN_NO_SESSION)  # one connection per session
                return False
            if csg != stage or csg not in (STAGE_SECURITY, STAGE_OPERATIONAL):
                await self._reject(pdu, LOGIN_INITIATOR_ERROR)
                return False
            text += pdu.data
            if len(text) > MAX_LOGIN_TEXT:
                raise ProtocolError("login text too long")
            if cont:
                await self._respond(pdu, csg, csg, False, [], cont=False)
                continue
            try:
                pairs = parse_text(text)
            except ValueError:
                await self._reject(pdu, LOGIN_INITIATOR_ERROR)
                return False
            text = b""
            keys = dict(pairs)
            answers: list[tuple[str, str]] = []
            try:
                if first:
                    first = False
                    redirect = self._identify(keys)
                    if redirect is not None:
                        await self._respond(
                            pdu, csg, 0, False, [("TargetAddress", redirect)], status=LOGIN_MOVED_TEMPORARILY
                        )
                        return False
                    chap_required = ident.target is not None and ident.target.chap_enabled
                    if not ident.discovery:
                        answers.append(("TargetPortalGroupTag", str(PORTAL_GROUP_TAG)))
                if csg == STAGE_SECURITY:
                    if "AuthMethod" in keys:
                        offered = [m.strip() for m in keys["AuthMethod"].split(",")]
                        if chap_required and "CHAP" not in offered:
                            raise LoginFailed(LOGIN_AUTH_FAILED, "CHAP required, not offered")
                        if chap_required:
                            answers.append(("AuthMethod", "CHAP"))
                            chap = self._chap()
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
                        assert ident.target is not None
                        who = (self.peer_ip, ident.initiator, ident.target.iqn)
                        answers += verify_with_backoff(chap, keys, self.portal.throttle, *who)
                        authenticated = True
                        log.info("%r: CHAP authentication succeeded", self.who)
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
                log.warning("%r: CHAP authentication failed: %s", self.who, e)
                await self._reject(pdu, LOGIN_AUTH_FAILED)
                return False
            except Throttled as e:
                log.warning("%r: refused unchecked after failed CHAP logins; next check in %d s", self.who, e.seconds)
                await self._reject(pdu, LOGIN_SERVICE_UNAVAILABLE)
                return False
            except LoginFailed as e:
                log.warning("%r: login refused (%d/%d): %s", self.who, e.status[0], e.status[1], e)
                await self._reject(pdu, e.status)
                return False
            except NegotiationError as e:
                log.warning("%r: bad login key: %s", self.who, e)
                await self._reject(pdu, LOGIN_INITIATOR_ERROR)
                return False
            do_transit = transit and authenticated and nsg in (STAGE_OPERATIONAL, STAGE_FULL_FEATURE) and nsg > csg
            if do_transit and nsg == STAGE_FULL_FEATURE:
                if not declared_mrdsl:
                    answers.append(("MaxRecvDataSegmentLength", str(self.params.target_mrdsl)))
                ident.tsih = self.portal.new_tsih()
                self._entering_full_feature()  # visible in get-iscsi-connections once the initiator is in
            await self._respond(pdu, csg, nsg if do_transit else csg, do_transit, answers)
            if do_transit:
                stage = nsg
                if nsg == STAGE_FULL_FEATURE:
                    self.transport.full_feature = True  # digests apply from the first PDU after the login
                    return True

    def _identify(self, keys: dict[str, str]) -> str | None:
        """Check who logs in to what; on the VIP return the chunk address to redirect to."""
        ident = self.identity
        ident.initiator = keys.get("InitiatorName", "")
        if not ident.initiator:
            raise LoginFailed(LOGIN_MISSING_PARAMETER, "InitiatorName missing")
        session_type = keys.get("SessionType", "Normal")
        if session_type not in ("Normal", "Discovery"):
            raise LoginFailed(LOGIN_INITIATOR_ERROR, "unknown SessionType")
        ident.discovery = session_type == "Discovery"
        if ident.discovery:
            return None
        name = keys.get("TargetName", "")
        if not name:
            raise LoginFailed(LOGIN_MISSING_PARAMETER, "TargetName missing")
        target = self._target_by_iqn(name)
        if target is None:
            raise LoginFailed(LOGIN_NOT_FOUND, f"no target {name[:223]}")
        if not access.target_admits(target, ident.initiator, self.peer_ip):
            raise LoginFailed(LOGIN_FORBIDDEN, f"{ident.initiator} from {self.peer_ip} not in the whitelists of {name}")
        ident.target = target
        if self.portal.role == "vip":
            address = self.portal.redirect(ident.initiator, target.iqn)
            if address is None:
                raise LoginFailed(LOGIN_SERVICE_UNAVAILABLE, "no chunk is up")
            log.info("%r: redirecting login for %s to %s", self.who, target.iqn, address)
            return f"{address},{PORTAL_GROUP_TAG}"
        return None

    def _chap(self) -> ChapAuthenticator:
        target = self.identity.target
        assert target is not None
        initiator = self.identity.initiator.lower()
        entry = next((c for c in target.initiator_chaps if c.initiator_iqn.lower() == initiator), None)
        if entry is None:
            raise LoginFailed(LOGIN_AUTH_FAILED, f"no CHAP credentials for {self.identity.initiator}")
        return ChapAuthenticator(
            expected_name=entry.chap_name,
            expected_secret=entry.chap_secret,
            target_name=target.chap_name,
            target_secret=target.chap_secret,
        )

    async def _respond(
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
        isid_tsih = self.identity.isid + self.identity.tsih.to_bytes(2, "big")
        n = self.numbers
        hdr = build_bhs(
            OP_LOGIN_RESP,
            flags,
            data_len=len(data),
            lun=isid_tsih,
            itt=pdu.itt,
            words=(0, n.next_stat_sn(), n.exp_cmd_sn, n.max_cmd_sn(), (status[0] << 24) | (status[1] << 16)),
        )
        await self.transport.send_pdu(hdr, data)

    async def _reject(self, pdu: Pdu, status: tuple[int, int]) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._respond(pdu, 0, 0, False, [], status=status)
