#!/usr/bin/python
# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: zbs_luns
short_description: Manage all the LUNs of an iSCSI target on SmartX ZBS in one task
version_added: 0.1.0
description:
  - Declares the LUNs of one target - size, access, QoS - and makes the target match, in one task. Arrays are
    managed in hundreds of LUNs; a loop of M(smartx.zbs.zbs_lun) tasks pays Ansible's per-task cost for each of
    them, this module pays it once.
  - Reads the target's LUNs with one query, computes every change, and only then writes - all new LUNs in one
    C(create-iscsi-lun) call, LUNs that need the same change in one C(update-iscsi-lun) call, and with O(purge)
    the unlisted LUNs in one C(delete-iscsi-lun) call. A run that changes nothing makes the login and one read
    (and a read of the target when it has no LUNs - a missing target is an error, not an empty one).
  - Each LUN follows the rules of M(smartx.zbs.zbs_lun) - a new LUN is B(closed) unless its O(luns[].allowed_initiators)
    opens it (V(["*"]) for everybody), sizes only grow (see O(smaller_size)), C(replica_num) only goes up,
    C(thin_provision) and C(lun_id) cannot change.
  - Every refusal (a bad entry, an immutable field, a LUN in use or with snapshots that O(purge) would delete) is
    found before the first write, so a failed task changes nothing.
author:
  - SmartX ZBS team (@smartx-zbs)
options:
  target:
    description:
      - Name of the target that holds the LUNs (lower-case, as ZBS stores target names). It must exist; in check
        mode a missing target is taken to be created by an earlier task.
    type: str
    required: true
  luns:
    description:
      - The LUNs the target should have. Options not given for an existing LUN leave it as it is.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: LUN name, unique within the target (same rules as M(smartx.zbs.zbs_lun)).
        type: str
        required: true
      size:
        description: Size with a unit (V(10GiB)) or in bytes; required for a LUN that does not exist yet.
        type: str
      allowed_initiators:
        description:
          - The exact list of initiator IQNs that may see the LUN; V(["*"]) admits everybody, V([]) nobody.
          - Without it, a new LUN admits nobody and an existing LUN keeps its list.
        type: list
        elements: str
      qos:
        description: QoS limits (V(0) = unlimited), as in M(smartx.zbs.zbs_lun).
        type: dict
        suboptions:
          iops:
            description: Total IOPS limit.
            type: int
          iops_rd:
            description: Read IOPS limit.
            type: int
          iops_wr:
            description: Write IOPS limit.
            type: int
          bps:
            description: Total bandwidth limit in bytes per second.
            type: int
          bps_rd:
            description: Read bandwidth limit in bytes per second.
            type: int
          bps_wr:
            description: Write bandwidth limit in bytes per second.
            type: int
      replica_num:
        description: Replica count; the target's by default on create; only goes up.
        type: int
        choices: [1, 2, 3]
      thin_provision:
        description: Thin provisioning; the target's by default on create; immutable.
        type: bool
      lun_id:
        description: LUN number (1-255); the smallest free one by default on create; immutable.
        type: int
  purge:
    description:
      - Also delete the target's LUNs that O(luns) does not list. The diff and RV(deleted) name them.
      - A LUN with snapshots is deleted only with O(remove_snapshots), a LUN with live iSCSI sessions only with
        O(force); otherwise the task fails before changing anything.
    type: bool
    default: false
  remove_snapshots:
    description: With O(purge), delete the snapshots of purged LUNs too.
    type: bool
    default: false
  force:
    description: With O(purge), delete LUNs even while initiators have live iSCSI sessions to them (with a warning).
    type: bool
    default: false
  smaller_size:
    description:
      - What to do when a LUN's O(luns[].size) is smaller than its current size, which ZBS cannot shrink - V(warn)
        keeps the current size and warns, V(ignore) keeps it silently, V(fail) fails before changing anything.
    type: str
    choices: [warn, ignore, fail]
    default: warn
extends_documentation_fragment:
  - smartx.zbs.zbs
  - smartx.zbs.zbs.attributes
"""

EXAMPLES = r"""
- name: The LUNs of a database cluster, declared in one task
  module_defaults:
    group/smartx.zbs.zbs:
      host: "{{ zbs_host }}"
      username: "{{ zbs_username }}"
      password: "{{ zbs_password }}"
  block:
    - name: The target
      smartx.zbs.zbs_target:
        name: pg

    - name: Data and WAL LUNs for three database hosts, each visible to its own host only
      smartx.zbs.zbs_luns:
        target: pg
        luns:
          - {name: pg1-data, size: 100GiB, allowed_initiators: [iqn.2004-10.com.example:pg1]}
          - {name: pg1-wal, size: 20GiB, allowed_initiators: [iqn.2004-10.com.example:pg1]}
          - {name: pg2-data, size: 100GiB, allowed_initiators: [iqn.2004-10.com.example:pg2]}
          - {name: pg2-wal, size: 20GiB, allowed_initiators: [iqn.2004-10.com.example:pg2]}
          - {name: pg3-data, size: 100GiB, allowed_initiators: [iqn.2004-10.com.example:pg3]}
          - {name: pg3-wal, size: 20GiB, allowed_initiators: [iqn.2004-10.com.example:pg3]}

    - name: Retire pg3, grow pg2's data, cap pg2's WAL and add a scratch LUN everybody may see
      smartx.zbs.zbs_luns:
        target: pg
        purge: true
        luns:
          - {name: pg1-data, size: 100GiB}
          - {name: pg1-wal, size: 20GiB}
          - {name: pg2-data, size: 200GiB}
          - {name: pg2-wal, size: 20GiB, qos: {iops: 5000}}
          - {name: scratch, size: 10GiB, allowed_initiators: ["*"]}
      register: pg

    - name: What changed
      ansible.builtin.debug:
        msg: "created {{ pg.created }}, updated {{ pg.updated }}, deleted {{ pg.deleted }}"
"""

RETURN = r"""
created:
  description: Names of the LUNs created (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [pg1-data, pg1-wal]
updated:
  description: Names of the existing LUNs changed (or that would be).
  returned: always
  type: list
  elements: str
  sample: [pg2-data]
deleted:
  description: Names of the LUNs purged (or that would be).
  returned: always
  type: list
  elements: str
  sample: [pg3-data, pg3-wal]
luns:
  description:
    - The target's LUNs after the run, as the API shows them, sorted by name. In check mode, the planned fields of
      new and changed LUNs.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: pg1-data, lun_id: 1, assigned_size: 107374182400, allowed_initiators: "iqn.2004-10.com.example:pg1"}
msg:
  description: In check mode, why LUNs are planned although their target does not exist yet.
  returned: when check mode plans past a missing target
  type: str
  sample: "check mode: target 'pg' does not exist yet; taken to be created by an earlier task"
"""

import json
from typing import Any, Dict, List, Tuple

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_access import describe_sessions, sessions_using
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    QOS_FIELDS,
    fail_field,
    qos_argument_spec,
    result,
    run,
    target_name,
    zbs_client,
    zbs_module,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_lun_plan import (
    SMALLER_SIZE_CHOICES,
    access_differs,
    exact_access,
    lun_view,
    settings_update,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    validate_lun_id,
    validate_lun_name,
    validate_lun_size,
)

#: A target holds at most 255 LUNs: one page of 256 is always the last.
PAGE = 256


def desired(module: Any, target: str) -> List[Dict[str, Any]]:
    """Every entry validated and in API fields; duplicates and bad values fail before any call."""
    out: List[Dict[str, Any]] = []
    seen = set()
    for i, entry in enumerate(module.params["luns"]):
        field = f"luns[{i}]"
        name = validate_lun_name(entry["name"], f"{field}.name")
        obj = f"LUN {name!r} in target {target!r}"
        if name in seen:
            fail_field(f"{field}.name", f"{name!r} is listed twice", "update-iscsi-lun", obj)
        seen.add(name)
        qos = entry["qos"] or {}
        want: Dict[str, Any] = {
            "name": name,
            "assigned_size": validate_lun_size(entry["size"], f"{field}.size") if entry["size"] is not None else None,
            "allowed_initiators": exact_access(
                entry["allowed_initiators"], f"{field}.allowed_initiators", "update-iscsi-lun", obj
            ),
            "replica_num": entry["replica_num"],
            "thin_provision": entry["thin_provision"],
            "lun_id": validate_lun_id(entry["lun_id"], f"{field}.lun_id") if entry["lun_id"] is not None else None,
        }
        want.update({q: qos.get(q) for q in QOS_FIELDS})
        out.append(want)
    return out


def plan_update(module: Any, current: Dict[str, Any], want: Dict[str, Any], obj: str) -> Dict[str, Any]:
    """The ``update-iscsi-lun`` data for one existing LUN ({} = no change), by zbs_lun's rules."""
    data = settings_update(module, current, want, obj)
    access = want["allowed_initiators"]
    if access is not None and access_differs(current, access):
        data["allowed_initiators"] = access
    return data


def _purge_checks(module: Any, client: Any, doomed: List[Dict[str, Any]], target: str) -> None:
    """Refuse (before any write) to purge LUNs with snapshots or live sessions unless told to."""
    p = module.params
    with_snaps = sorted(str(x["name"]) for x in doomed if (x.get("snapshot_num") or 0) > 0)
    if with_snaps and not p["remove_snapshots"]:
        fail_field(
            "remove_snapshots",
            f"purge would delete LUN(s) with snapshots: {', '.join(with_snaps)}; set remove_snapshots=true",
            "delete-iscsi-lun",
            f"target {target!r}",
        )
    target_id = (doomed[0].get("iscsi_target") or {}).get("id")
    connections = client.connections.list(where={"iscsi_target": {"id": target_id}})
    in_use = [(x["name"], sessions_using(x, connections)) for x in doomed]
    in_use = [(n, s) for n, s in in_use if s]
    if not in_use:
        return
    what = "; ".join(f"{n}: {describe_sessions(s)}" for n, s in sorted(in_use))
    if not p["force"]:
        fail_field(
            "force",
            f"purge would delete LUN(s) in use - {what}; force=true deletes them anyway",
            "delete-iscsi-lun",
            f"target {target!r}",
        )
    module.warn(f"target {target!r}: purging LUN(s) in use - {what} (force=true)")


def main() -> None:
    module = zbs_module(
        {
            "target": {"type": "str", "required": True},
            "luns": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "size": {"type": "str"},
                    "allowed_initiators": {"type": "list", "elements": "str"},
                    "qos": qos_argument_spec(),
                    "replica_num": {"type": "int", "choices": [1, 2, 3]},
                    "thin_provision": {"type": "bool"},
                    "lun_id": {"type": "int"},
                },
            },
            "purge": {"type": "bool", "default": False},
            "remove_snapshots": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
            "smaller_size": {"type": "str", "choices": SMALLER_SIZE_CHOICES, "default": "warn"},
        }
    )
    run(module, lambda: apply(module))


def apply(module: Any) -> Dict[str, Any]:
    """One read of the target's LUNs, the whole plan, then batched writes (none in check mode)."""
    p = module.params
    target = target_name(p["target"], "target")
    wanted = desired(module, target)
    client = zbs_client(module)
    current = {x["name"]: x for x in client.query("get-iscsi-luns", {"iscsi_target": {"name": target}}, page_size=PAGE)}

    creates: List[Dict[str, Any]] = []
    updates: Dict[str, Tuple[Dict[str, Any], List[str]]] = {}
    before: Dict[str, Any] = {}
    after: Dict[str, Any] = {}
    planned: Dict[str, Dict[str, Any]] = {}
    for want in wanted:
        name = want["name"]
        obj = f"LUN {name!r} in target {target!r}"
        lun = current.get(name)
        if lun is None:
            if want["assigned_size"] is None:
                fail_field("size", f"needed to create {obj}", "create-iscsi-lun", obj)
            fields = {k: v for k, v in want.items() if v is not None}
            fields.setdefault("allowed_initiators", "")
            creates.append(fields)
            after[name] = lun_view(fields)
            planned[name] = fields
            continue
        data = plan_update(module, lun, want, obj)
        if data:
            key = json.dumps(data, sort_keys=True)
            updates.setdefault(key, (data, []))[1].append(lun["id"])
            before[name] = lun_view(lun)
            after[name] = lun_view(dict(lun, **data))
            planned[name] = dict(lun, **data)
    listed = {w["name"] for w in wanted}
    doomed = [x for name, x in sorted(current.items()) if name not in listed] if p["purge"] else []
    if doomed:
        _purge_checks(module, client, doomed, target)
        for lun in doomed:
            before[lun["name"]] = lun_view(lun)

    extra: Dict[str, Any] = {}
    target_obj = None
    if creates or not current:
        # Read when LUNs are to be made in it, or when it shows none: a missing target is not an empty one.
        target_obj = client.targets.get(name=target)
        if target_obj is None:
            if not module.check_mode:
                fail_field(
                    "target",
                    f"target {target!r} does not exist; create it with smartx.zbs.zbs_target",
                    "create-iscsi-lun" if creates else "get-iscsi-luns",
                    f"target {target!r}",
                )
            extra["msg"] = f"check mode: target {target!r} does not exist yet; taken to be created by an earlier task"

    names = {
        "created": sorted(c["name"] for c in creates),
        "updated": sorted(n for n in planned if n in current),
        "deleted": [x["name"] for x in doomed],
    }
    changed = bool(creates or updates or doomed)
    if module.check_mode or not changed:
        final = {**current, **planned}
        for lun in doomed:
            final.pop(lun["name"], None)
        return result(module, changed, before, after, luns=[final[n] for n in sorted(final)], **names, **extra)

    if creates and target_obj is not None:  # found, or the task failed above
        for fields in creates:
            fields.setdefault("replica_num", target_obj.get("replica_num"))
            fields["iscsi_target_id"] = target_obj["id"]
        client.luns.create_many(creates)
    for data, ids in updates.values():
        client.luns.update_many(ids, **data)
    if doomed:
        client.luns.delete_many([x["id"] for x in doomed], remove_snapshot=p["remove_snapshots"])
    final_luns = client.query("get-iscsi-luns", {"iscsi_target": {"name": target}}, page_size=PAGE)
    return result(
        module, True, before, after, luns=sorted(final_luns, key=lambda x: str(x.get("name"))), **names, **extra
    )


if __name__ == "__main__":
    main()
