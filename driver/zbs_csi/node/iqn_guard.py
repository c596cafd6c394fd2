"""Is this node's initiator IQN really its own? Two nodes sharing an IQN defeat masking and fencing.

Cloned VM images often carry the same /etc/iscsi/initiatorname.iscsi. When the node plugin
can reach the ZBS API, it refuses to start if ZBS shows a session of its IQN coming from an
address that is not one of this host's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip_addr(text: str) -> list[Network]:
    """``ip -o addr show`` → this host's addresses (all of 127.0.0.0/8 for loopback)."""
    nets: list[Network] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] not in ("inet", "inet6"):
            continue
        iface = parts[1]
        try:
            iface_net = ipaddress.ip_interface(parts[3])
        except ValueError:
            continue
        nets.append(iface_net.network if iface == "lo" else ipaddress.ip_network(iface_net.ip))
    return nets


def foreign_sessions(connections: Iterable[dict[str, Any]], iqn: str, local: list[Network]) -> list[str]:
    """Addresses, not this host's, holding a session as ``iqn``."""
    out = set()
    for conn in connections:
        if str(conn.get("initiator_iqn") or "").lower() != iqn.lower():
            continue
        try:
            ip = ipaddress.ip_address(str(conn.get("initiator_ip") or ""))
        except ValueError:
            continue
        if not any(ip in net for net in local):
            out.add(str(ip))
    return sorted(out)
