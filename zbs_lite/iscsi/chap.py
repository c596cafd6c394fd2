"""CHAP with MD5 (RFC 1994, as RFC 7143 section 12.1.3 uses it): one-way and mutual.

One-way: the initiator proves it knows the secret of its `initiator_chaps` entry on the
target. Mutual: when the initiator also sends CHAP_I/CHAP_C, the target answers with the
target's own chap_name/chap_secret. Secrets never leave this module except as MD5 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from zbs_lite.throttle import LoginThrottle, source_of

CHAP_MD5 = "5"
CHALLENGE_LEN = 16


class ChapError(Exception):
    """The exchange failed: wrong name or secret, malformed values, or a reflected challenge."""


def _decode(value: str) -> bytes:
    v = value.strip()
    try:
        if v[:2].lower() == "0x":
            return bytes.fromhex(v[2:])
        if v[:2].lower() == "0b":
            import base64

            return base64.b64decode(v[2:], validate=True)
    except ValueError as e:
        raise ChapError("malformed CHAP value") from e
    raise ChapError("CHAP value must be hex (0x...) or base64 (0b...)")


def response(ident: int, secret: str, challenge: bytes) -> bytes:
    return hashlib.md5(bytes([ident]) + secret.encode() + challenge, usedforsecurity=False).digest()


@dataclass
class ChapAuthenticator:
    """The target side of one CHAP exchange."""

    expected_name: str
    expected_secret: str = field(repr=False)
    target_name: str = ""
    target_secret: str = field(default="", repr=False)
    ident: int = field(default_factory=lambda: secrets.randbelow(256))
    challenge: bytes = field(default_factory=lambda: secrets.token_bytes(CHALLENGE_LEN))

    def offer(self, algorithms: str) -> list[tuple[str, str]]:
        """Answer CHAP_A with MD5 and our challenge."""
        if CHAP_MD5 not in [a.strip() for a in algorithms.split(",")]:
            raise ChapError("initiator does not offer CHAP with MD5")
        return [("CHAP_A", CHAP_MD5), ("CHAP_I", str(self.ident)), ("CHAP_C", "0x" + self.challenge.hex())]

    def verify(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        """Check CHAP_N/CHAP_R; for mutual CHAP return the target's CHAP_N/CHAP_R."""
        name, resp = keys.get("CHAP_N"), keys.get("CHAP_R")
        if name is None or resp is None:
            raise ChapError("CHAP_N or CHAP_R missing")
        got = _decode(resp)
        want = response(self.ident, self.expected_secret, self.challenge)
        name_ok = hmac.compare_digest(name.encode(), self.expected_name.encode())
        if not (hmac.compare_digest(got, want) and name_ok):
            raise ChapError("CHAP response does not match")
        if "CHAP_I" not in keys and "CHAP_C" not in keys:
            return []
        if not self.target_secret:
            raise ChapError("mutual CHAP asked but the target has no CHAP secret")
        try:
            ident = int(keys["CHAP_I"], 0)
        except (KeyError, ValueError) as e:
            raise ChapError("malformed CHAP_I") from e
        challenge = _decode(keys.get("CHAP_C", ""))
        if not 0 <= ident <= 255 or not challenge:
            raise ChapError("malformed mutual CHAP challenge")
        if challenge == self.challenge:
            raise ChapError("initiator reflected the target's challenge")
        return [
            ("CHAP_N", self.target_name),
            ("CHAP_R", "0x" + response(ident, self.target_secret, challenge).hex()),
        ]


def verify_with_backoff(
    chap: ChapAuthenticator, keys: dict[str, str], throttle: LoginThrottle, peer_ip: str, initiator: str, target: str
) -> list[tuple[str, str]]:
    """``chap.verify`` counted by the login back-off the API shares, per source and credential.

    Raises :class:`zbs_lite.throttle.Throttled` (unchecked) while that source must wait, and
    :class:`ChapError` for a wrong response.
    """
    answers: list[tuple[str, str]] = []
    failure: list[ChapError] = []

    def verify() -> bool:
        try:
            answers.extend(chap.verify(keys))
        except ChapError as e:
            failure.append(e)
            return False
        return True

    key = ("chap", source_of(peer_ip), f"{target} {initiator.lower()}")
    if not throttle.attempt(key, verify):
        raise failure[0]
    return answers
