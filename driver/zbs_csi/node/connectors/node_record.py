"""CHAP credentials into open-iscsi's node record, never through any process's argv.

``iscsiadm -o update -n ... -v <secret>`` would put the secret in iscsiadm's argv, readable in
``/proc/<pid>/cmdline`` by every local user while it runs; iscsiadm has no stdin or file form.
So the auth block is appended to the record file itself: ``find`` lists the record files of
one portal (their paths and modes only), ``dd`` appends the block it reads from stdin (it
writes nothing to stdout, and neither creates nor truncates the file, whose 0600 mode
open-iscsi chose; a record others could read is made 0600 first).
open-iscsi's record parser applies a file's lines in order, so the appended lines win over
the defaults ``-o new`` wrote; ``iscsiadm -o show`` (secrets masked) then proves that it
parsed them before any login uses the record.

The record layouts (``NODE_DBS``: Debian/Ubuntu keep the database in /etc/iscsi, RHEL and
SUSE in /var/lib/iscsi): a record made with ``-o new`` before its portal group is known is the
flat file ``nodes/<iqn>/<address>,<port>`` (open-iscsi 2.1.8, tests/vm); a discovered one is
``nodes/<iqn>/<address>,<port>,<tpgt>/<iface>``. open-iscsi keeps 255 characters of a value.
"""

from __future__ import annotations

import re

from ...chap import PASSWORD_IN_KEY, PASSWORD_KEY, USER_IN_KEY, USER_KEY, Chap
from .base import ConnectorError

NODE_DBS = ("/etc/iscsi/nodes", "/var/lib/iscsi/nodes")
AUTHMETHOD_KEY = "node.session.auth.authmethod"
# open-iscsi keeps 255 characters of a CHAP name or secret and cuts a longer value silently
# (tests/vm saw it): the login would then fail as an authorization failure, unexplained.
AUTH_VALUE_MAX = 255
_MASKED = "********"  # what ``iscsiadm -o show`` prints for a set secret


def auth_block(chap: Chap) -> str:
    """The record lines of ``chap``: one-way, or mutual with the target's ``*_in`` pair."""
    pairs = [(AUTHMETHOD_KEY, "CHAP"), (USER_KEY, chap.username), (PASSWORD_KEY, chap.password)]
    if chap.username_in:
        pairs += [(USER_IN_KEY, chap.username_in), (PASSWORD_IN_KEY, chap.password_in)]
    for key, value in pairs:
        # The record is line-based: a value must be one line of printable text, not too long.
        if not value or len(value) > AUTH_VALUE_MAX or not value.isprintable() or value != value.strip():
            raise ConnectorError(
                f"{key} cannot go into an open-iscsi node record (1-{AUTH_VALUE_MAX} printable characters, "
                "no surrounding blanks)",
                retryable=False,
            )
    return "".join(f"{key} = {value}\n" for key, value in pairs)


def record_name(portal: str) -> str:
    """``address,port`` as open-iscsi names a portal's record (``[fd00::1]:3260`` → ``fd00::1,3260``)."""
    host, _, port = portal.rpartition(":")
    return f"{host.removeprefix('[').removesuffix(']')},{port}"


FIND_FORMAT = "%m %p\\n"  # find -printf: the octal mode and the path of each file, nothing else


def record_files(found: str, iqn: str, portal: str) -> dict[str, int]:
    """The record files of ``portal`` and their modes among ``find -printf FIND_FORMAT``'s output
    (any iface, any tpgt, either layout)."""
    name = re.escape(record_name(portal))
    dbs = "|".join(re.escape(d) for d in NODE_DBS)
    layout = re.compile(rf"^([0-7]{{1,4}}) ((?:{dbs})/{re.escape(iqn)}/{name}(?:,-?\d+/[^/]+)?)$")
    return {m[2]: int(m[1], 8) for m in map(layout.match, found.splitlines()) if m}


def check_shown(shown: str, chap: Chap) -> str | None:
    """What ``iscsiadm -m node -o show`` (secrets masked) says is wrong with the auth block, or None.

    The output holds one record per iface; each must use CHAP with our names and a set secret.
    """
    want = {AUTHMETHOD_KEY: "CHAP", USER_KEY: chap.username, PASSWORD_KEY: _MASKED}
    if chap.username_in:
        want |= {USER_IN_KEY: chap.username_in, PASSWORD_IN_KEY: _MASKED}
    records = shown.count("# BEGIN RECORD") or 1
    seen: dict[str, list[str]] = {}
    for line in shown.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.strip() in want:
            seen.setdefault(key.strip(), []).append(value.strip())
    for key, value in want.items():
        values = seen.get(key, [])
        if len(values) != records or any(v != value for v in values):
            if value == _MASKED:  # never echo what is there instead: it could be a secret
                return f"{key} is not set in every node record of the portal"
            return f"{key} is {', '.join(values) or 'missing'} in the node record, not {value!r}"
    return None
