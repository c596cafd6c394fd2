#!/usr/bin/python
# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: zbs_lun_snapshot
short_description: Manage snapshots of iSCSI LUNs on SmartX ZBS, and roll LUNs back to them
version_added: 0.1.0
description:
  - Create and delete a snapshot of a LUN, or roll the LUN back to one of its snapshots.
  - ZBS snapshots are copy-on-write and metadata-only, so taking one is fast whatever the LUN's size.
  - To make a new LUN from a snapshot, use M(smartx.zbs.zbs_lun) with C(from_snapshot).
author:
  - SmartX ZBS team (@smartx-zbs)
options:
  name:
    description:
      - Snapshot name, unique per LUN; ASCII letters, digits, C(.), C(_), C(:) and C(-).
    type: str
    required: true
  lun:
    description:
      - Name of the LUN.
    type: str
    required: true
  target:
    description:
      - Name of the target that holds the LUN.
    type: str
    required: true
  state:
    description:
      - V(present) takes the snapshot if it does not exist; V(absent) deletes it.
      - V(rolled_back) rolls the LUN back to the snapshot, discarding everything written since.
        This is B(not idempotent) - every run rolls back again and reports a change - so guard it with a
        condition of your own. In check mode it reports the change and does nothing.
      - Roll back only while no host uses the LUN (its file system unmounted, sessions logged out);
        a host that has the LUN mounted sees its data change underneath it.
    type: str
    choices: [present, absent, rolled_back]
    default: present
extends_documentation_fragment:
  - smartx.zbs.zbs
  - smartx.zbs.zbs.attributes
"""

EXAMPLES = r"""
- name: Snapshots around a risky upgrade
  module_defaults:
    group/smartx.zbs.zbs:
      host: "{{ zbs_host }}"
      username: "{{ zbs_username }}"
      password: "{{ zbs_password }}"
  block:
    - name: Snapshot before the upgrade
      smartx.zbs.zbs_lun_snapshot:
        target: app
        lun: data
        name: before-upgrade

    - name: Roll back when the upgrade failed (not idempotent - runs only on failure)
      smartx.zbs.zbs_lun_snapshot:
        target: app
        lun: data
        name: before-upgrade
        state: rolled_back
      when: upgrade is failed

    - name: Drop the snapshot afterwards
      smartx.zbs.zbs_lun_snapshot:
        target: app
        lun: data
        name: before-upgrade
        state: absent
"""

RETURN = r"""
snapshot:
  description:
    - The snapshot as the API shows it. In check mode on create, the fields that would be sent.
  returned: when state is present or rolled_back
  type: dict
  sample:
    id: ckx0n1a2b0007
    local_id: 0c3e2d1f-5b6a-4c7d-8e9f-a0b1c2d3e4f5
    name: before-upgrade
    iscsi_lun: {id: ckx0m3q7d0004, name: data}
    iscsi_target: {id: ckx0lk2v40001, name: app}
    unique_size: 0
    local_created_at: "2026-11-27T14:02:11Z"
"""

from typing import Any, Dict, Optional

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    fail_field,
    result,
    run,
    zbs_client,
    zbs_module,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    validate_lun_name,
    validate_snapshot_name,
    validate_target_name,
)


def _view(snapshot: Optional[Dict[str, Any]], target: str, lun: str) -> Optional[Dict[str, Any]]:
    if snapshot is None:
        return None
    return {"name": snapshot.get("name"), "lun": lun, "target": target}


def main() -> None:
    module = zbs_module(
        {
            "name": {"type": "str", "required": True},
            "lun": {"type": "str", "required": True},
            "target": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent", "rolled_back"], "default": "present"},
        }
    )
    run(module, lambda: apply(module))


def apply(module: Any) -> Dict[str, Any]:
    """Read LUN and snapshot, compute the change, write it unless in check mode."""
    p = module.params
    target = validate_target_name(p["target"], "target")
    lun_name = validate_lun_name(p["lun"], "lun")
    name = validate_snapshot_name(p["name"])
    obj = f"snapshot {name!r} of LUN {lun_name!r} in target {target!r}"
    client = zbs_client(module)
    # One read finds the snapshot through its LUN and target relations; the LUN is read only when it is missing.
    found = client.snapshots.list(
        where={"name": name, "iscsi_lun": {"name": lun_name}, "iscsi_target": {"name": target}}
    )
    snapshot = found[0] if found else None
    view = _view(snapshot, target, lun_name)

    if snapshot is not None:
        if p["state"] == "present":
            return result(module, False, view, view, snapshot=snapshot)
        if p["state"] == "absent":
            if not module.check_mode:
                client.snapshots.delete(snapshot["id"])
            return result(module, True, view, None)
        if not module.check_mode:
            client.luns.rollback(snapshot["iscsi_lun"]["id"], snapshot["id"])
        before = {"lun": lun_name, "target": target, "rolled_back_to": None}
        return result(module, True, before, dict(before, rolled_back_to=name), snapshot=snapshot)

    if p["state"] == "absent":
        return result(module, False, None, None)
    lun = client.luns.get(name=lun_name, target_name=target)
    if lun is None:
        fail_field("lun", f"no LUN {lun_name!r} in target {target!r}", "get-iscsi-luns", obj)
    if p["state"] == "rolled_back":
        fail_field("name", f"LUN {lun_name!r} has no snapshot {name!r}", "rollback-iscsi-lun-from-snapshot", obj)
    planned = {"name": name, "iscsi_lun": {"id": lun["id"], "name": lun_name}, "iscsi_target": lun.get("iscsi_target")}
    if module.check_mode:
        return result(module, True, None, _view(planned, target, lun_name), snapshot=planned)
    target_id = (lun.get("iscsi_target") or {}).get("id")
    if target_id is None:
        target_id = client.targets.get(name=target)["id"]
    created = client.snapshots.create(lun["id"], target_id, name)
    return result(module, True, None, _view(created, target, lun_name), snapshot=created)


if __name__ == "__main__":
    main()
