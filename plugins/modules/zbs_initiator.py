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
    Such LUNs, where the target admits the initiator too, are reported in RV(open_luns); with O(mode=exact) the
    task warns naming each of them (or fails, see O(on_open_luns)), because the initiator sees more than the
    listed LUNs.
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
  on_open_luns:
    description:
      - With O(mode=exact), what to do about LUNs open to every initiator that this one can therefore also see.
      - V(warn) reports them in a warning (and in RV(open_luns)); V(fail) fails before changing anything.
    type: str
    choices: [warn, fail]
    default: warn
  luns:
    description:
      - The LUNs, each by target and LUN name or LUN number. Every listed LUN must exist (in check mode, a missing one
        is taken to be created by an earlier task; RV(msg) says so).
    type: list
    elements: dict
    default: []
    suboptions:
      target:
        description: Name of the LUN's target (lower-case).
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
    - name: The database target
      smartx.zbs.zbs_target:
        name: db

    - name: Its data and logs LUNs (closed until granted)
      smartx.zbs.zbs_lun:
        target: db
        name: "{{ item }}"
        size: 10GiB
      loop: [data, logs]

    - name: Node 1 sees exactly the two database LUNs
      smartx.zbs.zbs_initiator:
        iqn: iqn.2004-10.com.example:node1
        luns:
          - {target: db, name: data}
          - {target: db, lun_id: 2}
        chap:
          name: node1
          secret: "{{ vault_node1_chap_secret }}"

    - name: A shared scratch LUN, granted host by host
      smartx.zbs.zbs_lun:
        target: db
        name: scratch
        size: 1GiB
        allowed_initiators: []
        initiators_mode: add

    - name: Also give node 1 the scratch LUN, keeping what it has
      smartx.zbs.zbs_initiator:
        iqn: iqn.2004-10.com.example:node1
        mode: append
        luns:
          - {target: db, name: scratch}

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
  description:
    - LUNs that admit every initiator (C(*/*)) in targets whose IQN whitelist admits this one, which it therefore
      also sees.
  returned: always
  type: list
  elements: dict
  sample:
    - {target: scratch, name: tmp, lun_id: 1}
msg:
  description: In check mode, which listed LUNs do not exist yet and are taken to be created by an earlier task.
  returned: when check mode plans past missing LUNs
  type: str
  sample: "check mode: LUN 'data' in target 'db' does not exist yet; taken to be created by an earlier task"
chap_targets:
  description: Targets that hold CHAP credentials for the initiator after the run.
  returned: always
  type: list
  elements: str
  sample: [db]
"""

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_access import (
    OPEN,
    lun_ref,
    visible_luns,
    whitelist_admits,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    fail_field,
    result,
    run,
    target_name,
    zbs_client,
    zbs_module,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    format_allowed_initiators,
    parse_allowed_initiators,
    validate_chap_name,
    validate_chap_secret,
    validate_iqn,
    validate_lun_id,
    validate_lun_name,
)


def _target_name(lun: Dict[str, Any]) -> str:
    return str((lun.get("iscsi_target") or {}).get("name", ""))


def _sorted_refs(luns: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return sorted((lun_ref(lun) for lun in luns), key=lambda r: (r["target"], r["lun_id"] or 0, r["name"] or ""))


def _resolve(
    all_luns: List[Dict[str, Any]], wanted: List[Dict[str, Any]], obj: str, check_mode: bool
) -> Tuple[Dict[str, Dict[str, Any]], List[str]]:
    """The listed LUNs by id, and (check mode only) the ones that do not exist yet.

    Outside check mode a LUN that does not exist fails naming its entry.
    """
    by_name: Dict[Tuple[str, str], Dict[str, Any]] = {}
    by_num: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for lun in all_luns:
        by_name[(_target_name(lun), str(lun.get("name")))] = lun
        if isinstance(lun.get("lun_id"), int):
            by_num[(_target_name(lun), lun["lun_id"])] = lun
    out: Dict[str, Dict[str, Any]] = {}
    missing: List[str] = []
    for i, ref in enumerate(wanted):
        target = target_name(ref["target"], f"luns[{i}].target")
        if ref["name"] is not None:
            lun = by_name.get((target, validate_lun_name(ref["name"], f"luns[{i}].name")))
            what = f"LUN {ref['name']!r}"
        else:
            lun = by_num.get((target, validate_lun_id(ref["lun_id"], f"luns[{i}].lun_id")))
            what = f"LUN number {ref['lun_id']}"
        if lun is None:
            if not check_mode:
                fail_field(f"luns[{i}]", f"no {what} in target {target!r}", "update-iscsi-lun", obj)
            missing.append(f"{what} in target {target!r}")
            continue
        out[lun["id"]] = lun
    return out, missing


def _plan_luns(iqn: str, all_luns: List[Dict[str, Any]], wanted: Dict[str, Dict[str, Any]], revoke_others: bool):
    """(LUN updates {id: allowed_initiators}, LUNs listing the IQN after)."""
    updates: Dict[str, str] = {}
    listed: List[Dict[str, Any]] = []
    for lun in all_luns:
        have = parse_allowed_initiators(lun.get("allowed_initiators"))
        if have.kind == "all":
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
    return updates, listed


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
        if whitelist_admits(target.get("iqn_whitelist"), iqn) is None:
            out.append(
                f"LUN {lun.get('name')!r} is granted, but the iqn_whitelist of target {target.get('name')!r} does not "
                f"admit {iqn}, so the initiator cannot log in to it; add it with smartx.zbs.zbs_target"
            )
    return out


def open_lun_refs(iqn: str, all_luns: List[Dict[str, Any]], targets: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The LUNs open to everybody that ``iqn`` can see (their target admits it too)."""
    return _sorted_refs([v.lun for v in visible_luns(iqn, all_luns, targets) if v.lun_access == OPEN])


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
            "on_open_luns": {"type": "str", "choices": ["warn", "fail"], "default": "warn"},
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
    wanted, missing = ({}, []) if absent else _resolve(all_luns, p["luns"], obj, module.check_mode)
    lun_updates, listed = _plan_luns(iqn, all_luns, wanted, revoke_others)
    before_listed = [
        lun
        for lun in all_luns
        if parse_allowed_initiators(lun.get("allowed_initiators")).kind == "set"
        and parse_allowed_initiators(lun.get("allowed_initiators")).allows(iqn)
    ]

    chap_updates: Dict[str, List[Dict[str, Any]]] = {}
    targets = client.targets.list()
    open_luns = open_lun_refs(iqn, all_luns, targets)
    if p["mode"] == "exact" and not absent and open_luns:
        names = ", ".join(f"{r['target']}/{r['name']}" for r in open_luns)
        why = (
            f"{iqn} also sees {len(open_luns)} LUN(s) open to every initiator, which mode=exact does not narrow: "
            f"{names}; close them with smartx.zbs.zbs_lun (allowed_initiators, initiators_mode=replace)"
        )
        if p["on_open_luns"] == "fail":
            fail_field("on_open_luns", why, "update-iscsi-lun", obj)
        module.warn(why)
    for warning in whitelist_warnings(iqn, wanted.values(), targets):
        module.warn(warning)
    chap_target_ids = {(lun.get("iscsi_target") or {}).get("id") for lun in wanted.values()}
    before_holders = sorted(t["name"] for t in targets if _chap_entry(t.get("initiator_chaps") or [], iqn))
    if p["chap"] is None and not absent:
        # without chap, CHAP credentials are left as they are (absent still removes them)
        holders = before_holders
    else:
        chap_updates, holders = _plan_chaps(module, iqn, targets, {i for i in chap_target_ids if i}, revoke_others)

    changed = bool(lun_updates or chap_updates or missing)
    before = {
        "luns": [f"{r['target']}/{r['name']}" for r in _sorted_refs(before_listed)],
        "chap_targets": before_holders,
    }
    after = {"luns": [f"{r['target']}/{r['name']}" for r in _sorted_refs(listed)], "chap_targets": holders}
    extra: Dict[str, Any] = {}
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        extra["msg"] = f"check mode: {'; '.join(missing)} {verb} not exist yet; taken to be created by an earlier task"
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
        open_luns=open_luns,
        chap_targets=holders,
        **extra,
    )


if __name__ == "__main__":
    main()
