"""CHAP credentials from CSI secrets (the keys of Kubernetes' ``kubernetes.io/iscsi-chap`` type).

One Secret per StorageClass, referenced three times: as its provisioner secret (CreateVolume
places the volume in targets of that CHAP class, see :func:`~.ownership.chap_class`), its
controller-publish secret (the controller registers the node's credentials on the target and
checks the target's mutual ones) and its node-stage secret (the node logs in with them).
``node.session.auth.username_in`` / ``password_in`` make it mutual: the node also checks the
target. Secrets are never logged, never put into volume or publish context, never in argv.
The rules for names and secrets are the shared client's (module_utils), as for the modules.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

from .errors import invalid
from .zbs import validate_chap_name, validate_chap_secret, zerr

USER_KEY = "node.session.auth.username"
PASSWORD_KEY = "node.session.auth.password"  # noqa: S105 - a key name, not a secret
USER_IN_KEY = "node.session.auth.username_in"
PASSWORD_IN_KEY = "node.session.auth.password_in"  # noqa: S105 - a key name, not a secret


@dataclass(frozen=True)
class Chap:
    username: str
    password: str = field(repr=False)
    # Mutual CHAP: the target's credentials, which the initiator checks.
    username_in: str = ""
    password_in: str = field(default="", repr=False)


def chap_from_secrets(values: dict[str, str]) -> Chap | None:
    """The CHAP credentials in CSI secrets; None when they hold none. Other keys are ignored."""
    user, password = values.get(USER_KEY, ""), values.get(PASSWORD_KEY, "")
    user_in, password_in = values.get(USER_IN_KEY, ""), values.get(PASSWORD_IN_KEY, "")
    if not (user or password or user_in or password_in):
        return None
    if not user or not password:
        raise invalid(f"CHAP needs both {USER_KEY} and {PASSWORD_KEY} in the secrets")
    if bool(user_in) != bool(password_in):
        raise invalid(f"mutual CHAP needs both {USER_IN_KEY} and {PASSWORD_IN_KEY} in the secrets")
    try:
        validate_chap_name(user, initiator=True, field=USER_KEY)
        validate_chap_secret(password, initiator=True, field=PASSWORD_KEY)
        if user_in:
            # The target's credentials: ZBS allows 12-16 characters for a target secret.
            validate_chap_name(user_in, field=USER_IN_KEY)
            validate_chap_secret(password_in, field=PASSWORD_IN_KEY)
    except zerr.ZbsValidationError as exc:
        raise invalid(f"{exc.field}: {exc.rule}") from None
    return Chap(user, password, user_in, password_in)


def random_secret(n: int = 16) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))
