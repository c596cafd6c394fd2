#!/usr/bin/python
# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: zbs_initiator
short_description: Grant or revoke one iSCSI initiator's access to ZBS LUNs
version_added: 0.1.0
description:
  - The host-centric view of LUN masking that users know from other arrays - for one initiator IQN, the LUNs it
    may see and its CHAP credentials on their targets. This is how a playbook registers the nodes of a
    Kubernetes cluster or a database host.
  - ZBS stores access per LUN (its C(allowed_initiators)); this module reads every LUN once (all pages) and
    changes only the LUNs whose list must gain or lose the IQN.
  - A LUN whose list admits every initiator (C(*/*)) already admits this one; it is never narrowed by this module
    (that would lock out every other host) - use M(smartx.zbs.zbs_lun) with C(initiators_mode=replace) for that.
    Such LUNs are reported in RV(open_luns).
  - A target's own C(iqn_whitelist) is checked by ZBS before the LUN's list; manage it with M(smartx.zbs.zbs_target).
author:
  - SmartX ZBS team (@smartx-zbs)
options:
  iqn:
    description:
      - The initiator's iSCSI name, for example the content of C(/etc/iscsi/initiatorname.iscsi) that
        M(smartx.zbs.zbs_node_info) reports.
    type: str
    required: true
  state:
    description:
      - V(present) grants the listed LUNs (see O(mode)).
      - V(absent) revokes the initiator everywhere - removes it from every LUN's list and its CHAP credentials
        from every target.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description:
      - V(exact) - afterwards the initiator is listed on exactly the O(luns) (it is removed from every other LUN's
        list) and, when O(chap) is given, has CHAP credentials exactly on their targets.
      - V(append) - the O(luns) are granted and nothing is revoked.
    type: str
    choices: [exact, append]
    default: exact
  luns:
    description:
      - The LUNs, each by target and LUN name or LUN number. Every listed LUN must exist.
    type: list
    elements: dict
    default: []
    suboptions:
      target:
        description: Name of the LUN's target.
        type: str
        required: true
      name:
        description: LUN name. One of O(luns[].name) and O(luns[].lun_id) is required.
        type: str
      lun_id:
        description: LUN number in the target.
        type: int
  chap:
    description:
      - The initiator's CHAP credentials, set on every target of O(luns) (the targets' C(initiator_chaps)).
    type: dict
    suboptions:
      name:
        description: CHAP user name, 1-512 characters of letters, digits, C(.), C(:) and C(-).
        type: str
        required: true
      secret:
        description: CHAP secret, 12-512 letters and digits. Written according to O(update_secrets).
        type: str
        required: true
  update_secrets:
    description:
      - CHAP secrets cannot be compared. V(on_create) writes the secret only where the initiator has no
        credentials yet or its CHAP name changes; V(always) writes it on every run (and reports a change).
    type: str
    choices: [always, on_create]
    default: on_create
extends_documentation_fragment:
  - smartx.zbs.zbs
  - smartx.zbs.zbs.attributes
"""

EXAMPLES = r"""
- name: Register the nodes of a Kubernetes cluster
  module_defaults:
    group/smartx.zbs.zbs:
      host: "{{ zbs_host }}"
      username: "{{ zbs_username }}"
      password: "{{ zbs_password }}"
  block:
    - name: Node 1 sees exactly the two database LUNs
      smartx.zbs.zbs_initiator:
        iqn: iqn.2004-10.com.example:node1
        luns:
          - {target: db, name: data}
          - {target: db, lun_id: 2}
        chap:
          name: node1
          secret: "{{ vault_node1_chap_secret }}"

    - name: Also give it the shared scratch LUN, keeping what it has
      smartx.zbs.zbs_initiator:
        iqn: iqn.2004-10.com.example:node1
        mode: append
        luns:
          - {target: scratch, name: tmp}

    - name: Decommission the node - revoke it everywhere
      smartx.zbs.zbs_initiator:
        iqn: iqn.2004-10.com.example:node1
        state: absent
"""

RETURN = r"""
luns:
  description: The LUNs whose list names the initiator after the run, sorted by target and LUN number.
  returned: always
  type: list
  elements: dict
  sample:
    - {target: db, name: data, lun_id: 1}
    - {target: db, name: logs, lun_id: 2}
open_luns:
  description: LUNs that admit every initiator (C(*/*)), which this initiator therefore also sees.
  returned: always
  type: list
  elements: dict
  sample:
    - {target: scratch, name: tmp, lun_id: 1}
chap_targets:
  description: Targets that hold CHAP credentials for the initiator after the run.
  returned: always
  type: list
  elements: str
  sample: [db]
"""

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    fail_field,
    result,
    run,
    zbs_client,
    zbs_module,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    ALLOW_ALL,
    format_allowed_initiators,
    parse_allowed_initiators,
    validate_chap_name,
    validate_chap_secret,
    validate_iqn,
    validate_lun_id,
    validate_lun_name,
    validate_target_name,
)


def _target_name(lun: Dict[str, Any]) -> str:
    return str((lun.get("iscsi_target") or {}).get("name", ""))


def _ref(lun: Dict[str, Any]) -> Dict[str, Any]:
    return {"target": _target_name(lun), "name": lun.get("name"), "lun_id": lun.get("lun_id")}


def _sorted_refs(luns: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return sorted((_ref(lun) for lun in luns), key=lambda r: (r["target"], r["lun_id"] or 0, r["name"] or ""))


def _resolve(all_luns: List[Dict[str, Any]], wanted: List[Dict[str, Any]], obj: str) -> Dict[str, Dict[str, Any]]:
    """The listed LUNs by id; a LUN that does not exist fails naming its entry."""
    by_name: Dict[Tuple[str, str], Dict[str, Any]] = {}
    by_num: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for lun in all_luns:
        by_name[(_target_name(lun), str(lun.get("name")))] = lun
        if isinstance(lun.get("lun_id"), int):
            by_num[(_target_name(lun), lun["lun_id"])] = lun
    out: Dict[str, Dict[str, Any]] = {}
    for i, ref in enumerate(wanted):
        target = validate_target_name(ref["target"], f"luns[{i}].target")
        if ref["name"] is not None:
            lun = by_name.get((target, validate_lun_name(ref["name"], f"luns[{i}].name")))
            what = f"LUN {ref['name']!r}"
        else:
            lun = by_num.get((target, validate_lun_id(ref["lun_id"], f"luns[{i}].lun_id")))
            what = f"LUN number {ref['lun_id']}"
        if lun is None:
            fail_field(f"luns[{i}]", f"no {what} in target {target!r}", "update-iscsi-lun", obj)
        out[lun["id"]] = lun
    return out


def _plan_luns(iqn: str, all_luns: List[Dict[str, Any]], wanted: Dict[str, Dict[str, Any]], revoke_others: bool):
    """(LUN updates {id: allowed_initiators}, LUNs listing the IQN after, LUNs open to all)."""
    updates: Dict[str, str] = {}
    listed: List[Dict[str, Any]] = []
    open_luns: List[Dict[str, Any]] = []
    for lun in all_luns:
        raw = lun.get("allowed_initiators")
        have = parse_allowed_initiators(raw)
        if have.kind == "all":
            open_luns.append(lun)
            continue
        if lun["id"] in wanted:
            new = have.with_added(iqn)
        elif revoke_others:
            new = have.without(iqn)
        else:
            new = have
        text = format_allowed_initiators(new)
        if text != format_allowed_initiators(have):
            updates[lun["id"]] = text
        if new.allows(iqn):
            listed.append(lun)
    return updates, listed, open_luns


def _chap_entry(entries: List[Dict[str, Any]], iqn: str) -> Optional[Dict[str, Any]]:
    for entry in entries:
        if str(entry.get("initiator_iqn", "")).lower() == iqn:
            return entry
    return None


def whitelist_warnings(iqn: str, luns: Iterable[Dict[str, Any]], targets: List[Dict[str, Any]]) -> List[str]:
    """Granted LUNs the initiator still cannot see because their target's iqn_whitelist keeps it out."""
    by_id = {t["id"]: t for t in targets}
    out = []
    for lun in luns:
        target = by_id.get((lun.get("iscsi_target") or {}).get("id")) or {}
        whitelist = target.get("iqn_whitelist")
        if whitelist is None or whitelist.strip() == ALLOW_ALL:
            continue
        if iqn not in {w.strip().lower() for w in whitelist.split(",")}:
            out.append(
                f"LUN {lun.get('name')!r} is granted, but the iqn_whitelist of target {target.get('name')!r} does not "
                f"admit {iqn}, so the initiator cannot log in to it; add it with smartx.zbs.zbs_target"
            )
    return out


def _keep(entry: Dict[str, Any], target: str) -> Dict[str, Any]:
    """Another initiator's CHAP entry, rewritten as it was (the API takes the target's whole list)."""
    if not entry.get("chap_secret"):
        fail_field(
            "chap",
            f"target {target!r} does not return the CHAP secret of {entry.get('initiator_iqn')}, so its list "
            "cannot be rewritten without losing it; manage the list with smartx.zbs.zbs_target instead",
            "update-iscsi-target",
            f"target {target!r}",
        )
    return {k: entry.get(k) for k in ("initiator_iqn", "chap_name", "chap_secret")}


def _plan_chaps(
    module: Any, iqn: str, targets: List[Dict[str, Any]], chap_target_ids: Set[str], revoke_others: bool
) -> Tuple[Dict[str, List[Dict[str, Any]]], List[str]]:
    """(target updates {id: initiator_chaps}, names of targets holding credentials after)."""
    chap = module.params["chap"]
    always = module.params["update_secrets"] == "always"
    updates: Dict[str, List[Dict[str, Any]]] = {}
    holders: List[str] = []
    for target in targets:
        entries = [dict(e) for e in target.get("initiator_chaps") or []]
        entry = _chap_entry(entries, iqn)
        others = [_keep(e, target["name"]) for e in entries if e is not entry]
        if target["id"] in chap_target_ids and chap is not None:
            holders.append(target["name"])
            if entry is None or entry.get("chap_name") != chap["name"] or always:
                updates[target["id"]] = [
                    *others,
                    {"initiator_iqn": iqn, "chap_name": chap["name"], "chap_secret": chap["secret"]},
                ]
        elif entry is not None:
            if revoke_others:
                updates[target["id"]] = others
            else:
                holders.append(target["name"])
    return updates, sorted(holders)


def main() -> None:
    module = zbs_module(
        {
            "iqn": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "mode": {"type": "str", "choices": ["exact", "append"], "default": "exact"},
            "luns": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "target": {"type": "str", "required": True},
                    "name": {"type": "str"},
                    "lun_id": {"type": "int"},
                },
                "mutually_exclusive": [("name", "lun_id")],
                "required_one_of": [("name", "lun_id")],
            },
            "chap": {
                "type": "dict",
                "options": {
                    "name": {"type": "str", "required": True},
                    "secret": {"type": "str", "required": True, "no_log": True},
                },
            },
            "update_secrets": {"type": "str", "choices": ["always", "on_create"], "default": "on_create"},
        }
    )
    run(module, lambda: apply(module))


def apply(module: Any) -> Dict[str, Any]:
    """Read every LUN (and the targets when CHAP is involved), compute the grants, write them."""
    p = module.params
    iqn = validate_iqn(p["iqn"])
    obj = f"initiator {iqn}"
    absent = p["state"] == "absent"
    revoke_others = absent or p["mode"] == "exact"
    if p["chap"] is not None:
        validate_chap_name(p["chap"]["name"], initiator=True, field="chap.name")
        validate_chap_secret(p["chap"]["secret"], initiator=True, field="chap.secret")
    client = zbs_client(module)

    all_luns = client.luns.list()
    wanted = {} if absent else _resolve(all_luns, p["luns"], obj)
    lun_updates, listed, open_luns = _plan_luns(iqn, all_luns, wanted, revoke_others)
    before_listed = [
        lun
        for lun in all_luns
        if parse_allowed_initiators(lun.get("allowed_initiators")).kind == "set"
        and parse_allowed_initiators(lun.get("allowed_initiators")).allows(iqn)
    ]

    chap_updates: Dict[str, List[Dict[str, Any]]] = {}
    targets = client.targets.list()
    for warning in whitelist_warnings(iqn, wanted.values(), targets):
        module.warn(warning)
    chap_target_ids = {(lun.get("iscsi_target") or {}).get("id") for lun in wanted.values()}
    before_holders = sorted(t["name"] for t in targets if _chap_entry(t.get("initiator_chaps") or [], iqn))
    if p["chap"] is None and not absent:
        # without chap, CHAP credentials are left as they are (absent still removes them)
        holders = before_holders
    else:
        chap_updates, holders = _plan_chaps(module, iqn, targets, {i for i in chap_target_ids if i}, revoke_others)

    changed = bool(lun_updates or chap_updates)
    before = {
        "luns": [f"{r['target']}/{r['name']}" for r in _sorted_refs(before_listed)],
        "chap_targets": before_holders,
    }
    after = {"luns": [f"{r['target']}/{r['name']}" for r in _sorted_refs(listed)], "chap_targets": holders}
    if changed and not module.check_mode:
        for lun_id, allowed in lun_updates.items():
            client.luns.update(lun_id, allowed_initiators=allowed)
        for target_id, chaps in chap_updates.items():
            client.targets.update(target_id, initiator_chaps=chaps)
    return result(
        module,
        changed,
        before,
        after,
        luns=_sorted_refs(listed),
        open_luns=_sorted_refs(open_luns),
        chap_targets=holders,
    )


if __name__ == "__main__":
    main()
