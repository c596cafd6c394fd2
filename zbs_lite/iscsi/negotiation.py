"""Login-phase operational key negotiation (RFC 7143 section 13).

The target answers each key the initiator offers with the RFC's rule for that key (minimum,
maximum, boolean AND/OR, first supported value of a list) against the target's own limits,
and declares its own MaxRecvDataSegmentLength.
"""

from __future__ import annotations

from dataclasses import dataclass

# what this target supports / prefers
TARGET_MAX_RECV_DATA_SEGMENT = 262144
TARGET_MAX_BURST = 1048576
TARGET_FIRST_BURST = 262144
TARGET_MAX_OUTSTANDING_R2T = 8
SUPPORTED_DIGESTS = ("None", "CRC32C")


@dataclass
class SessionParams:
    """Negotiated values (RFC defaults until the initiator offers otherwise)."""

    header_digest: bool = False
    data_digest: bool = False
    initial_r2t: bool = True
    immediate_data: bool = True
    max_burst: int = 262144
    first_burst: int = 65536
    max_outstanding_r2t: int = 1
    # how much data the initiator accepts per PDU (its declaration), and what we accept
    initiator_mrdsl: int = 8192
    target_mrdsl: int = TARGET_MAX_RECV_DATA_SEGMENT
    default_time2wait: int = 2
    default_time2retain: int = 20
    error_recovery_level: int = 0


class NegotiationError(ValueError):
    """An offered value outside the RFC's range: the login fails with an initiator error."""


def _num(key: str, value: str, lo: int, hi: int) -> int:
    try:
        n = int(value, 0)
    except ValueError as e:
        raise NegotiationError(f"{key}: not a number") from e
    if not lo <= n <= hi:
        raise NegotiationError(f"{key}: {n} outside {lo}..{hi}")
    return n


def _bool(key: str, value: str) -> bool:
    if value not in ("Yes", "No"):
        raise NegotiationError(f"{key}: expected Yes or No")
    return value == "Yes"


def _yn(b: bool) -> str:
    return "Yes" if b else "No"


IRRELEVANT = frozenset(
    {"IFMarkInt", "OFMarkInt", "TargetAlias", "TargetAddress", "TargetPortalGroupTag", "SendTargets"}
)
# keys a login handles elsewhere (security phase, session identity), never answered here
LOGIN_KEYS = frozenset({"InitiatorName", "InitiatorAlias", "TargetName", "SessionType", "AuthMethod"})


def negotiate(pairs: list[tuple[str, str]], params: SessionParams) -> list[tuple[str, str]]:
    """Apply the initiator's offers to `params` and return the target's answers."""
    answers: list[tuple[str, str]] = []
    for key, value in pairs:
        if key in LOGIN_KEYS or key.startswith("CHAP_"):
            continue
        if key in ("HeaderDigest", "DataDigest"):
            choice = next((v for v in value.split(",") if v in SUPPORTED_DIGESTS), None)
            if choice is None:
                answers.append((key, "Reject"))
                continue
            if key == "HeaderDigest":
                params.header_digest = choice == "CRC32C"
            else:
                params.data_digest = choice == "CRC32C"
            answers.append((key, choice))
        elif key == "MaxRecvDataSegmentLength":
            params.initiator_mrdsl = _num(key, value, 512, 2**24 - 1)
        elif key == "MaxConnections":
            _num(key, value, 1, 65535)
            answers.append((key, "1"))
        elif key == "InitialR2T":
            params.initial_r2t = _bool(key, value)  # OR with ours (No): the initiator's value
            answers.append((key, _yn(params.initial_r2t)))
        elif key == "ImmediateData":
            params.immediate_data = _bool(key, value)  # AND with ours (Yes)
            answers.append((key, _yn(params.immediate_data)))
        elif key == "MaxBurstLength":
            params.max_burst = min(_num(key, value, 512, 2**24 - 1), TARGET_MAX_BURST)
            answers.append((key, str(params.max_burst)))
        elif key == "FirstBurstLength":
            params.first_burst = min(_num(key, value, 512, 2**24 - 1), TARGET_FIRST_BURST)
            answers.append((key, str(params.first_burst)))
        elif key == "MaxOutstandingR2T":
            params.max_outstanding_r2t = min(_num(key, value, 1, 65535), TARGET_MAX_OUTSTANDING_R2T)
            answers.append((key, str(params.max_outstanding_r2t)))
        elif key == "DefaultTime2Wait":
            params.default_time2wait = max(_num(key, value, 0, 3600), 2)
            answers.append((key, str(params.default_time2wait)))
        elif key == "DefaultTime2Retain":
            params.default_time2retain = min(_num(key, value, 0, 3600), 20)
            answers.append((key, str(params.default_time2retain)))
        elif key in ("DataPDUInOrder", "DataSequenceInOrder"):
            _bool(key, value)
            answers.append((key, "Yes"))  # OR with ours (Yes)
        elif key == "ErrorRecoveryLevel":
            _num(key, value, 0, 2)
            params.error_recovery_level = 0
            answers.append((key, "0"))
        elif key in ("IFMarker", "OFMarker"):
            answers.append((key, "No"))
        elif key in IRRELEVANT:
            answers.append((key, "Irrelevant"))
        else:
            answers.append((key, "NotUnderstood"))
    # FirstBurstLength may not exceed MaxBurstLength, whatever order they came in
    params.first_burst = min(params.first_burst, params.max_burst)
    return answers
