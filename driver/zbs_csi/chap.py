"""CHAP credentials from CSI secrets (the keys of Kubernetes' ``kubernetes.io/iscsi-chap`` type).

The same Secret is referenced as the StorageClass's controller-publish secret (the controller
registers the node's credentials on the target) and node-stage secret (the node logs in with
them). Secrets are never logged, never put into volume or publish context.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

from .errors import invalid

USER_KEY = "node.session.auth.username"
PASSWORD_KEY = "node.session.auth.password"  # noqa: S105 - a key name, not a secret


@dataclass(frozen=True)
class Chap:
    username: str
    password: str = field(repr=False)


def chap_from_secrets(values: dict[str, str]) -> Chap | None:
    user, password = values.get(USER_KEY, ""), values.get(PASSWORD_KEY, "")
    if not user and not password:
        return None
    if not user or not password:
        raise invalid(f"CHAP needs both {USER_KEY} and {PASSWORD_KEY} in the secrets")
    if len(user) > 223 or not all(c.isascii() and (c.isalnum() or c in ".:-") for c in user):
        raise invalid(f"{USER_KEY} may only hold letters, digits and .:- (up to 223)")
    if not (password.isascii() and password.isalnum()) or not 12 <= len(password) <= 512:
        raise invalid(f"{PASSWORD_KEY} must be 12-512 letters and digits")
    return Chap(user, password)


def random_secret(n: int = 16) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))
