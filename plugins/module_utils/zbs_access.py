# Copyright: (c) 2026, SmartX
# Simplified BSD License (see https://opensource.org/licenses/BSD-2-Clause)
"""Who can see a LUN, and who is using it: LUN masking and live sessions read from API records.

ZBS admits an initiator to a LUN when the target's ``iqn_whitelist`` admits it AND the LUN's
``allowed_initiators`` does (``*/*`` = everybody, ``""`` = nobody, else a comma list of
IQNs). Sessions (``get-iscsi-connections``) are per target; zbs-lite names the session's
initiator IQN, CloudTower only its IP and host, so a session without an IQN counts as using
every LUN of its target - the safe reading when the question is "may I delete this?".

Pure functions over the API's dicts (no I/O, no ``ansible`` import), shared by the modules
that refuse to remove LUNs in use, warn about open LUNs and report access per initiator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from .zbs_validate import ALLOW_ALL, parse_allowed_initiators

#: How a list admits an initiator: it names the IQN, or it admits everybody.
LISTED = "listed"
OPEN = "open"


def _target_id(obj: Mapping[str, Any]) -> Optional[str]:
    return (obj.get("iscsi_target") or {}).get("id")


def whitelist_admits(whitelist: Optional[str], iqn: str) -> Optional[str]:
    """LISTED, OPEN or None: how a target's ``iqn_whitelist`` treats ``iqn`` (absent = everybody)."""
    text = (whitelist if whitelist is not None else ALLOW_ALL).strip()
    if text == ALLOW_ALL:
        return OPEN
    names = {item.strip().lower() for item in text.split(",") if item.strip()}
    return LISTED if iqn.strip().lower() in names else None


def lun_admits(lun: Mapping[str, Any], iqn: str) -> Optional[str]:
    """LISTED, OPEN or None: how a LUN's ``allowed_initiators`` treats ``iqn``."""
    allowed = parse_allowed_initiators(lun.get("allowed_initiators"))
    if allowed.kind == "all":
        return OPEN
    return LISTED if allowed.allows(iqn) else None


def access_list(value: Optional[str]) -> List[str]:
    """An API access string as a list: ``["*"]`` for everybody, ``[]`` for nobody, else sorted names.

    The list form the modules take as input, and one a JMESPath ``contains()`` matches exactly
    (a string would match ``node1`` inside ``node10``).
    """
    text = (value if value is not None else ALLOW_ALL).strip()
    if text == ALLOW_ALL:
        return ["*"]
    return sorted({item.strip() for item in text.split(",") if item.strip()})


@dataclass(frozen=True)
class Session:
    """One live iSCSI session as ``get-iscsi-connections`` reports it."""

    target_id: Optional[str]
    initiator_iqn: Optional[str]
    initiator_ip: Optional[str]

    @classmethod
    def from_api(cls, conn: Mapping[str, Any]) -> Session:
        return cls(_target_id(conn), conn.get("initiator_iqn") or None, conn.get("initiator_ip") or None)

    def label(self) -> str:
        """``iqn (ip)``, or the IP alone where the API does not name the initiator."""
        if self.initiator_iqn and self.initiator_ip:
            return f"{self.initiator_iqn} ({self.initiator_ip})"
        return self.initiator_iqn or self.initiator_ip or "an unnamed initiator"


def sessions_using(lun: Mapping[str, Any], connections: Iterable[Mapping[str, Any]]) -> List[Session]:
    """The sessions that can reach ``lun``: on its target, from an initiator its list admits.

    A session whose initiator the API does not name is counted: it may be using the LUN.
    """
    out = []
    for conn in connections:
        session = Session.from_api(conn)
        if session.target_id != _target_id(lun):
            continue
        if session.initiator_iqn is None or lun_admits(lun, session.initiator_iqn) is not None:
            out.append(session)
    return out


def describe_sessions(sessions: Sequence[Session]) -> str:
    """``2 live iSCSI session(s), from a (ip), b`` - unique labels, sorted, for messages."""
    labels = sorted({s.label() for s in sessions})
    return f"{len(sessions)} live iSCSI session(s), from {', '.join(labels)}"


@dataclass(frozen=True)
class Visible:
    """A LUN an initiator can see, and why: how the LUN's list and the target's whitelist admit it."""

    lun: Mapping[str, Any]
    lun_access: str
    target_access: str

    def ref(self) -> Dict[str, Any]:
        return dict(lun_ref(self.lun), lun_access=self.lun_access, target_access=self.target_access)


def lun_ref(lun: Mapping[str, Any]) -> Dict[str, Any]:
    """``{target, name, lun_id}``: how reports name a LUN."""
    return {"target": (lun.get("iscsi_target") or {}).get("name"), "name": lun.get("name"), "lun_id": lun.get("lun_id")}


def _ref_key(ref: Mapping[str, Any]) -> tuple:
    return (str(ref["target"]), ref["lun_id"] or 0, str(ref["name"]))


def visible_luns(iqn: str, luns: Iterable[Mapping[str, Any]], targets: Iterable[Mapping[str, Any]]) -> List[Visible]:
    """Every LUN ``iqn`` can see: both the target's whitelist and the LUN's list admit it.

    A LUN whose target is not among ``targets`` is judged by its own list only. The targets'
    ``ip_whitelist`` is not checked: the initiator's address is not known here.
    """
    whitelists = {t.get("id"): t.get("iqn_whitelist") for t in targets}
    out = []
    for lun in luns:
        by_lun = lun_admits(lun, iqn)
        if by_lun is None:
            continue
        by_target = whitelist_admits(whitelists.get(_target_id(lun)), iqn)
        if by_target is not None:
            out.append(Visible(lun, by_lun, by_target))
    return out


def known_initiators(
    luns: Iterable[Mapping[str, Any]],
    targets: Iterable[Mapping[str, Any]],
    connections: Iterable[Mapping[str, Any]],
) -> List[str]:
    """Every IQN the cluster knows of: in LUN lists, target whitelists, CHAP entries, sessions."""
    names = set()
    for lun in luns:
        allowed = parse_allowed_initiators(lun.get("allowed_initiators"))
        names.update(allowed.iqns)
    for target in targets:
        names.update(i for i in access_list(target.get("iqn_whitelist")) if i != "*")
        names.update(str(c.get("initiator_iqn")) for c in target.get("initiator_chaps") or [] if c.get("initiator_iqn"))
    names.update(str(c["initiator_iqn"]) for c in connections if c.get("initiator_iqn"))
    return sorted(names)


def initiator_record(
    iqn: str,
    luns: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    connections: Iterable[Mapping[str, Any]],
) -> Dict[str, Any]:
    """What one initiator can reach, and why: for "which LUNs can node X see?" without a dry run.

    ``luns`` the LUNs it sees (with how the LUN list and the target whitelist admit it),
    ``blocked`` LUNs whose list names it but whose target whitelist keeps it out,
    ``chap_targets`` targets holding CHAP credentials for it, ``sessions`` its live sessions
    (only where the API names a session's initiator, as zbs-lite does).
    """
    seen = visible_luns(iqn, luns, targets)
    seen_ids = {id(v.lun) for v in seen}
    blocked = [lun_ref(lun) for lun in luns if id(lun) not in seen_ids and lun_admits(lun, iqn) == LISTED]
    return {
        "iqn": iqn,
        "luns": sorted((v.ref() for v in seen), key=_ref_key),
        "blocked": sorted(blocked, key=_ref_key),
        "chap_targets": sorted(
            str(t.get("name"))
            for t in targets
            if any(str(c.get("initiator_iqn", "")).lower() == iqn.lower() for c in t.get("initiator_chaps") or [])
        ),
        "sessions": sorted(
            (
                {"target": (c.get("iscsi_target") or {}).get("name"), "initiator_ip": c.get("initiator_ip")}
                for c in connections
                if c.get("initiator_iqn") == iqn
            ),
            key=lambda s: (str(s["target"]), str(s["initiator_ip"])),
        ),
    }
