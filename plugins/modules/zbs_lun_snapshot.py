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
      - Snapshot name, unique per LUN; 1-255 printable ASCII characters, without C(/) or C(\), without leading or
        trailing spaces, and not C(.) or C(..).
    type: str
    required: true
  lun:
    description:
      - Name of the LUN.
    type: str
    required: true
  target:
    description:
      - Name of the target that holds the LUN (lower-case, as ZBS stores target names).
    type: str
    required: true
  state:
    description:
      - V(present) takes the snapshot if it does not exist; V(absent) deletes it.
      - V(rolled_back) rolls the LUN back to the snapshot, discarding everything written since.
        This is B(not idempotent) - every run rolls back again and reports a change - so guard it with a
        condition of your own. In check mode it reports the change and does nothing.
      - A rollback also gives the LUN the size it had when the snapshot was taken, so a LUN grown since
        B(shrinks back); the diff and RV(size_before)/RV(size) show it and the task warns. The API does not show
        a snapshot's size, so in check mode the size after the rollback is not known.
      - Roll back only while no host uses the LUN (its file system unmounted, sessions logged out); a rollback
        of a LUN that initiators have live iSCSI sessions to fails, naming them, unless O(force=true).
    type: str
    choices: [present, absent, rolled_back]
    default: present
  force:
    description:
      - With O(state=rolled_back), roll back even while initiators have live iSCSI sessions to the LUN; a host
        that has it mounted sees its data change underneath it. The task warns, naming them.
      - As for M(smartx.zbs.zbs_lun), CloudTower names a session by its address only; there every session to the
        LUN's target counts.
    type: bool
    default: false
notes:
  - In check mode, a LUN or snapshot that does not exist yet is taken to be created by an earlier task of the same
    play; the task reports the change and says so in RV(msg).
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
    - name: The application's target
      smartx.zbs.zbs_target:
        name: app

    - name: The data LUN
      smartx.zbs.zbs_lun:
        target: app
        name: data
        size: 10GiB

    - name: Snapshot before the upgrade
      smartx.zbs.zbs_lun_snapshot:
        target: app
        lun: data
        name: before-upgrade

    - name: The upgrade (here a command that fails)
      ansible.builtin.command: /bin/false
      register: upgrade
      changed_when: false
      failed_when: false

    - name: Roll back when the upgrade failed (not idempotent - runs only on failure)
      smartx.zbs.zbs_lun_snapshot:
        target: app
        lun: data
        name: before-upgrade
        state: rolled_back
      when: upgrade.rc != 0

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
lun:
  description: With O(state=rolled_back), the LUN as the API shows it after the rollback.
  returned: when state is rolled_back and not in check mode
  type: dict
  sample: {id: ckx0m3q7d0004, name: data, assigned_size: 10737418240}
size_before:
  description: With O(state=rolled_back), the LUN's size before the rollback.
  returned: when state is rolled_back
  type: str
  sample: 20GiB
size:
  description: With O(state=rolled_back), the LUN's size after the rollback - the size it had when the snapshot
    was taken.
  returned: when state is rolled_back and not in check mode
  type: str
  sample: 10GiB
msg:
  description: In check mode, why a change is planned although the LUN or snapshot does not exist yet.
  returned: when check mode plans past a missing LUN or snapshot
  type: str
  sample: "check mode: LUN 'data' in target 'app' does not exist yet; taken to be created by an earlier task"
"""

from typing import Any, Dict, Optional

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_access import describe_sessions, sessions_using
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    fail_field,
    result,
    run,
    target_name,
    zbs_client,
    zbs_module,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_units import format_size
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    validate_lun_name,
    validate_snapshot_name,
)

#: What check mode can say of the size a rollback leaves: the API does not show a snapshot's size.
UNKNOWN_SIZE = "the snapshot's size (not shown by the API before the rollback)"


def _view(snapshot: Optional[Dict[str, Any]], target: str, lun: str) -> Optional[Dict[str, Any]]:
    if snapshot is None:
        return None
    return {"name": snapshot.get("name"), "lun": lun, "target": target}


def _size(lun: Dict[str, Any]) -> Optional[str]:
    size = lun.get("assigned_size")
    return format_size(size) if isinstance(size, int) else None


def main() -> None:
    module = zbs_module(
        {
            "name": {"type": "str", "required": True},
            "lun": {"type": "str", "required": True},
            "target": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent", "rolled_back"], "default": "present"},
            "force": {"type": "bool", "default": False},
        }
    )
    run(module, lambda: apply(module))


def rollback(
    module: Any, client: Any, snapshot: Dict[str, Any], target: str, lun_name: str, obj: str
) -> Dict[str, Any]:
    """Roll the LUN back, refusing while it is in use unless forced; show what it does to the size."""
    lun = client.luns.get(id=snapshot["iscsi_lun"]["id"]) or {}
    connections = client.connections.list(where={"iscsi_target": {"id": (lun.get("iscsi_target") or {}).get("id")}})
    sessions = sessions_using(lun, connections)
    if sessions:
        in_use = f"LUN {lun_name!r} is in use: {describe_sessions(sessions)}"
        if not module.params["force"]:
            fail_field(
                "force",
                f"{in_use}; a rollback changes the data under them (force=true rolls back anyway)",
                "rollback-iscsi-lun-from-snapshot",
                obj,
            )
        module.warn(f"{obj}: {in_use}; rolling back anyway (force=true)")
    before = {"lun": lun_name, "target": target, "rolled_back_to": None, "size": _size(lun)}
    if module.check_mode:
        return result(
            module,
            True,
            before,
            dict(before, rolled_back_to=snapshot["name"], size=UNKNOWN_SIZE),
            snapshot=snapshot,
            size_before=before["size"],
        )
    client.luns.rollback(snapshot["iscsi_lun"]["id"], snapshot["id"])
    after_lun = client.luns.get(id=snapshot["iscsi_lun"]["id"]) or {}
    after = dict(before, rolled_back_to=snapshot["name"], size=_size(after_lun))
    if after["size"] != before["size"]:
        module.warn(
            f"{obj}: the rollback changed the LUN's size from {before['size']} to {after['size']} (its size when the "
            "snapshot was taken); grow it again with smartx.zbs.zbs_lun if needed"
        )
    return result(
        module, True, before, after, snapshot=snapshot, lun=after_lun, size_before=before["size"], size=after["size"]
    )


def missing(module: Any, client: Any, target: str, lun_name: str, name: str, obj: str) -> Dict[str, Any]:
    """No such snapshot: create it, or explain which parent is missing (check mode plans past it)."""
    p = module.params
    lun = client.luns.get(name=lun_name, target_name=target)
    if lun is None:
        what = f"LUN {lun_name!r} in target {target!r}"
        if client.targets.get(name=target) is None:
            what = f"target {target!r}"
        if module.check_mode:
            return result(
                module,
                True,
                None,
                {"name": name, "lun": lun_name, "target": target},
                msg=f"check mode: {what} does not exist yet; taken to be created by an earlier task",
            )
        fail_field("target" if what.startswith("target") else "lun", f"no {what}", "get-iscsi-luns", obj)
    if p["state"] == "rolled_back":
        if module.check_mode:
            return result(
                module,
                True,
                None,
                None,
                msg=f"check mode: snapshot {name!r} does not exist yet; taken to be created by an earlier task",
            )
        fail_field("name", f"LUN {lun_name!r} has no snapshot {name!r}", "rollback-iscsi-lun-from-snapshot", obj)
    planned = {"name": name, "iscsi_lun": {"id": lun["id"], "name": lun_name}, "iscsi_target": lun.get("iscsi_target")}
    if module.check_mode:
        return result(module, True, None, _view(planned, target, lun_name), snapshot=planned)
    target_id = (lun.get("iscsi_target") or {}).get("id")
    if target_id is None:
        target_id = client.targets.get(name=target)["id"]
    created = client.snapshots.create(lun["id"], target_id, name)
    return result(module, True, None, _view(created, target, lun_name), snapshot=created)


def apply(module: Any) -> Dict[str, Any]:
    """Read LUN and snapshot, compute the change, write it unless in check mode."""
    p = module.params
    target = target_name(p["target"], "target")
    lun_name = validate_lun_name(p["lun"], "lun")
    name = validate_snapshot_name(p["name"])
    obj = f"snapshot {name!r} of LUN {lun_name!r} in target {target!r}"
    client = zbs_client(module)
    # One read finds the snapshot through its LUN and target relations; the LUN is read only when it is missing.
    found = client.snapshots.list(
        where={"name": name, "iscsi_lun": {"name": lun_name}, "iscsi_target": {"name": target}}
    )
    snapshot = found[0] if found else None
    if snapshot is None:
        if p["state"] == "absent":
            return result(module, False, None, None)
        return missing(module, client, target, lun_name, name, obj)
    view = _view(snapshot, target, lun_name)
    if p["state"] == "present":
        return result(module, False, view, view, snapshot=snapshot)
    if p["state"] == "absent":
        if not module.check_mode:
            client.snapshots.delete(snapshot["id"])
        return result(module, True, view, None)
    return rollback(module, client, snapshot, target, lun_name, obj)


if __name__ == "__main__":
    main()
