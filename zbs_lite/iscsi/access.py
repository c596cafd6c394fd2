"""Who may reach what: target whitelists and per-LUN `allowed_initiators` (zbs-api.md).

A client must pass the target's `iqn_whitelist` AND `ip_whitelist` to log in, and a LUN's
`allowed_initiators` to see that LUN. Pure functions, re-evaluated whenever the catalog's
generation changes so a revoke reaches sessions that are already logged in.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging

from zbs_lite.catalog import LunView, TargetView

log = logging.getLogger(__name__)

ALL = "*/*"


def _items(spec: str) -> list[str]:
    return [s.strip() for s in spec.split(",") if s.strip()]


def initiator_allowed(allowed_initiators: str | None, initiator_iqn: str) -> bool:
    """None or `*/*` admit everyone, "" nobody, otherwise a comma list of IQNs (case-insensitive)."""
    if allowed_initiators is None or allowed_initiators.strip() == ALL:
        return True
    iqn = initiator_iqn.lower()
    return any(item == ALL or item.lower() == iqn for item in _items(allowed_initiators))


def iqn_whitelisted(whitelist: str, initiator_iqn: str) -> bool:
    """`*/*` or empty admit everyone; entries are IQNs or shell-style patterns (`iqn.2020-01.*`)."""
    items = _items(whitelist)
    if not items:
        return True
    iqn = initiator_iqn.lower()
    return any(item == ALL or fnmatch.fnmatchcase(iqn, item.lower()) for item in items)


def ip_whitelisted(whitelist: str, ip: str) -> bool:
    """`*/*` or empty admit everyone; entries are addresses or CIDR networks."""
    items = _items(whitelist)
    if not items:
        return True
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for item in items:
        if item == ALL:
            return True
        try:
            if addr in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            log.warning("ignoring malformed ip_whitelist entry %r", item)
    return False


def target_admits(target: TargetView, initiator_iqn: str, ip: str) -> bool:
    return iqn_whitelisted(target.iqn_whitelist, initiator_iqn) and ip_whitelisted(target.ip_whitelist, ip)


def visible_luns(target: TargetView, luns: list[LunView], initiator_iqn: str, ip: str) -> dict[int, LunView]:
    """LUN number -> LUN for the LUNs this initiator may use on this target right now."""
    if not target_admits(target, initiator_iqn, ip):
        return {}
    return {lun.lun_id: lun for lun in luns if initiator_allowed(lun.allowed_initiators, initiator_iqn)}
