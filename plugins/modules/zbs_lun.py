#!/usr/bin/python
# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: zbs_lun
short_description: Manage iSCSI LUNs on SmartX ZBS
version_added: 0.1.0
description:
  - Create, resize, rename, re-mask and delete a LUN in an iSCSI target of a ZBS cluster.
  - A new LUN can be empty, cloned from a snapshot (O(from_snapshot)) or a full copy of another LUN (O(copy_from)).
  - The module reads the LUN once, computes what differs and only then writes; in check mode it writes nothing.
  - A LUN this module creates is B(closed) - no initiator may see it - until a task opens it with
    O(allowed_initiators). Opening it to every initiator must be spelled out, as V(["*"]). ZBS itself admits every
    initiator to a LUN created without an access list.
  - Sizes only grow (ZBS cannot shrink a LUN). A smaller O(size) keeps the current size, with a warning by
    default (see O(smaller_size)); a size written differently but meaning the same bytes (V(10GiB), V(10240MiB),
    V(10737418240)) is no change.
  - To manage many LUNs of one target in one task, use M(smartx.zbs.zbs_luns).
author:
  - SmartX ZBS team (@smartx-zbs)
options:
  name:
    description:
      - LUN name, unique within its target; 1-255 printable ASCII characters, without C(/) or C(\), without leading
        or trailing spaces, and not C(.) or C(..).
    type: str
    required: true
  target:
    description:
      - Name of the target that holds the LUN (lower-case, as ZBS stores target names).
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the LUN, V(absent) deletes it.
      - Deleting a LUN that initiators have live iSCSI sessions to fails, naming them, unless O(force=true).
    type: str
    choices: [present, absent]
    default: present
  size:
    description:
      - Size with a unit (V(512MiB), V(10GiB), V(1TiB); V(G) and V(GB) mean the same binary multiples as V(GiB))
        or a number of bytes. At most 64 TiB.
      - Required to create an empty LUN; a clone or copy starts with its source's size and grows to this size.
      - Only grows. A smaller size than the LUN's is handled according to O(smaller_size).
    type: str
  smaller_size:
    description:
      - What to do when O(size) is smaller than the LUN's current size, which ZBS cannot shrink.
      - V(warn) keeps the current size and warns; V(ignore) keeps it silently (O(size) is a minimum, for playbooks
        that create LUNs with an initial size and grow them in a later task); V(fail) fails and changes nothing.
    type: str
    choices: [warn, ignore, fail]
    default: warn
  replica_num:
    description:
      - Replica count. Defaults to the target's on create. May only go up.
    type: int
    choices: [1, 2, 3]
  thin_provision:
    description:
      - Whether the LUN is thin provisioned. Defaults to the target's on create. Immutable.
    type: bool
  lun_id:
    description:
      - LUN number in the target, 1-255. Defaults to the smallest free one on create. Immutable.
    type: int
  allowed_initiators:
    description:
      - Initiator IQNs that may see the LUN (LUN masking), applied according to O(initiators_mode).
      - V(["*"]) (or V(["*/*"])) admits every initiator; an empty list with O(initiators_mode=replace) admits nobody.
      - Without this option a new LUN admits nobody, and an existing LUN keeps its list.
    type: list
    elements: str
  initiators_mode:
    description:
      - V(replace) makes O(allowed_initiators) the exact list.
      - V(add) adds the listed IQNs and keeps the others - the pattern for LUNs whose access
        M(smartx.zbs.zbs_initiator) manages.
      - V(remove) removes the listed IQNs and keeps the others. Removing from a LUN that admits everyone fails,
        because "everyone except these" cannot be expressed; set the list with V(replace) first.
    type: str
    choices: [replace, add, remove]
    default: replace
  qos:
    description:
      - QoS limits of the LUN. A limit of V(0) means unlimited.
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
  from_name:
    description:
      - Rename. When no LUN called O(name) exists in O(target) but one called O(from_name) does, it is renamed
        to O(name) (and then updated like any other). When O(name) exists, O(from_name) is ignored, so the task
        stays idempotent.
    type: str
  from_snapshot:
    description:
      - Create the LUN as a clone of a snapshot. Only used when the LUN does not exist yet.
      - The clone gets the next free LUN number and its source's provisioning, so O(lun_id) cannot be given and
        O(thin_provision) must match the source.
      - ZBS opens a clone to every initiator; the module closes it (or sets O(allowed_initiators)) right after.
    type: dict
    suboptions:
      name:
        description: Snapshot name.
        type: str
        required: true
      lun:
        description: Name of the LUN the snapshot was taken of.
        type: str
        required: true
      target:
        description: Target of that LUN; defaults to O(target).
        type: str
  copy_from:
    description:
      - Create the LUN as a full copy of another LUN. Only used when the LUN does not exist yet.
      - As with O(from_snapshot), O(lun_id) cannot be given, O(thin_provision) must match the source, and the copy is
        closed (or set to O(allowed_initiators)) right after ZBS made it.
    type: dict
    suboptions:
      lun:
        description: Name of the source LUN.
        type: str
        required: true
      target:
        description: Target of the source LUN; defaults to O(target).
        type: str
  remove_snapshots:
    description:
      - With O(state=absent), also delete the LUN's snapshots (the diff lists them). Without it, deleting a LUN that
        has snapshots fails and changes nothing.
    type: bool
    default: false
  force:
    description:
      - With O(state=absent), delete the LUN even while initiators have live iSCSI sessions to it (they lose the
        LUN at once). The task warns, naming them.
      - The sessions are those on the LUN's target from initiators the LUN admits. CloudTower does not report a
        session's initiator name, only its address; there every session to the target counts.
    type: bool
    default: false
notes:
  - In check mode, a target (or clone source) that does not exist yet is taken to be created by an earlier task of
    the same play; the task reports the LUN as created and says so in RV(msg).
extends_documentation_fragment:
  - smartx.zbs.zbs
  - smartx.zbs.zbs.attributes
"""

EXAMPLES = r"""
- name: LUNs for an application
  module_defaults:
    group/smartx.zbs.zbs:
      host: "{{ zbs_host }}"
      username: "{{ zbs_username }}"
      password: "{{ zbs_password }}"
  block:
    - name: The application's target
      smartx.zbs.zbs_target:
        name: app

    - name: A 20 GiB data LUN visible to two hosts
      smartx.zbs.zbs_lun:
        target: app
        name: data
        size: 20GiB
        allowed_initiators:
          - iqn.2004-10.com.example:node1
          - iqn.2004-10.com.example:node2

    - name: Grow it (running the task above again afterwards keeps 40 GiB, with a warning)
      smartx.zbs.zbs_lun:
        target: app
        name: data
        size: 40GiB

    - name: Let a third host see it, keeping the others
      smartx.zbs.zbs_lun:
        target: app
        name: data
        allowed_initiators: [iqn.2004-10.com.example:node3]
        initiators_mode: add

    - name: A scratch LUN that every initiator may see (opening to everyone is spelled out)
      smartx.zbs.zbs_lun:
        target: app
        name: scratch
        size: 1GiB
        allowed_initiators: ["*"]

    - name: Snapshot the data LUN
      smartx.zbs.zbs_lun_snapshot:
        target: app
        lun: data
        name: nightly

    - name: A test copy from that snapshot, visible to one test host
      smartx.zbs.zbs_lun:
        target: app
        name: data-test
        from_snapshot:
          lun: data
          name: nightly
        allowed_initiators: [iqn.2004-10.com.example:test1]

    - name: Rename the copy
      smartx.zbs.zbs_lun:
        target: app
        name: data-restore-check
        from_name: data-test

    - name: Delete the copy with its snapshots, even if a test host is still logged in
      smartx.zbs.zbs_lun:
        target: app
        name: data-restore-check
        state: absent
        remove_snapshots: true
        force: true
"""

RETURN = r"""
lun:
  description:
    - The LUN as the API shows it. In check mode on create, the fields that would be sent.
  returned: when state is present
  type: dict
  sample:
    id: ckx0m3q7d0004
    local_id: 5f0c7a52-8a0e-4a43-b1e4-63f0d7c1e2a9
    name: data
    lun_id: 1
    iscsi_target: {id: ckx0lk2v40001, name: app}
    assigned_size: 21474836480
    replica_num: 2
    thin_provision: true
    allowed_initiators: iqn.2004-10.com.example:node1,iqn.2004-10.com.example:node2
    snapshot_num: 0
size:
  description: The LUN's size in a readable binary unit.
  returned: when state is present
  type: str
  sample: 20GiB
msg:
  description: In check mode, why a LUN is planned although its target or source does not exist yet.
  returned: when check mode plans past a missing parent
  type: str
  sample: "check mode: target 'app' does not exist yet; taken to be created by an earlier task"
"""

from typing import Any, Dict, Optional

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
    split_access,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_units import format_size
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    ALLOW_ALL,
    AllowedInitiators,
    format_allowed_initiators,
    parse_allowed_initiators,
    validate_lun_id,
    validate_lun_name,
    validate_lun_size,
)


def find_lun(client: Any, target: str, name: str) -> Optional[Dict[str, Any]]:
    """One read: the LUN by its name within the named target (None if absent)."""
    return client.luns.get(name=name, target_name=target)


def _view(lun: Optional[Dict[str, Any]], target: str) -> Optional[Dict[str, Any]]:
    return None if lun is None else dict(lun_view(lun), target=target)


def _wanted_initiators(module: Any, current: Optional[str], obj: str) -> Optional[str]:
    """The ``allowed_initiators`` string the LUN should end with (None = leave as is).

    ``current`` None means a new LUN, which starts from nobody whatever the mode.
    """
    p = module.params
    if p["allowed_initiators"] is None:
        return None if current is not None else ""
    mode = p["initiators_mode"]
    if mode == "replace":
        return exact_access(p["allowed_initiators"], "allowed_initiators", "update-iscsi-lun", obj)
    everyone, iqns = split_access(p["allowed_initiators"], "allowed_initiators", "update-iscsi-lun", obj)
    if everyone:
        fail_field(
            "allowed_initiators",
            f"'*' can only be used with initiators_mode=replace, not {mode}",
            "update-iscsi-lun",
            obj,
        )
    have = parse_allowed_initiators(current) if current is not None else AllowedInitiators("none")
    if mode == "add":
        for iqn in sorted(iqns):
            have = have.with_added(iqn)
        return format_allowed_initiators(have)
    if have.kind == "all" and iqns:
        fail_field(
            "allowed_initiators",
            "the LUN admits every initiator (*/*); set the exact list with initiators_mode=replace instead of removing",
            "update-iscsi-lun",
            obj,
        )
    for iqn in iqns:
        have = have.without(iqn)
    return format_allowed_initiators(have)


def _desired(module: Any, obj: str) -> Dict[str, Any]:
    p = module.params
    qos = p["qos"] or {}
    want = {
        "assigned_size": validate_lun_size(p["size"]) if p["size"] is not None else None,
        "replica_num": p["replica_num"],
        "thin_provision": p["thin_provision"],
        "lun_id": validate_lun_id(p["lun_id"]) if p["lun_id"] is not None else None,
    }
    want.update({q: qos.get(q) for q in QOS_FIELDS})
    split_access(p["allowed_initiators"] or [], "allowed_initiators", "update-iscsi-lun", obj)
    return want


def _compute_update(module: Any, current: Dict[str, Any], want: Dict[str, Any], name: str, obj: str) -> Dict[str, Any]:
    """The ``update-iscsi-lun`` data that brings ``current`` to ``want`` ({} = no change)."""
    data = settings_update(module, current, want, obj)
    initiators = _wanted_initiators(module, current.get("allowed_initiators"), obj)
    if initiators is not None and access_differs(current, initiators):
        data["allowed_initiators"] = initiators
    if current.get("name") != name:
        data["name"] = name
    return data


def planned_past_missing(module: Any, what: str, obj: str, after: Dict[str, Any]) -> Dict[str, Any]:
    """Check mode's answer when ``what`` (a target, a source) does not exist yet.

    A play that starts from nothing creates it in an earlier task, which check mode did not
    run; so the LUN would be created, not refused.
    """
    return result(
        module,
        True,
        None,
        after,
        lun=after,
        msg=f"check mode: {what} does not exist yet; taken to be created by an earlier task, then {obj} with it",
    )


def _source_lun(client: Any, target: str, lun: str, field: str) -> Optional[Dict[str, Any]]:
    return find_lun(client, target_name(target, f"{field}.target"), validate_lun_name(lun, f"{field}.lun"))


def _create(module: Any, client: Any, target_name_: str, name: str, want: Dict[str, Any], obj: str) -> Dict[str, Any]:
    p = module.params
    initiators = _wanted_initiators(module, None, obj)
    planned_view = {k: v for k, v in want.items() if v is not None}
    planned_view.update(name=name, allowed_initiators=initiators)
    target = client.targets.get(name=target_name_)
    if target is None:
        if module.check_mode:
            return planned_past_missing(
                module, f"target {target_name_!r}", obj, _view(planned_view, target_name_) or {}
            )
        fail_field(
            "target",
            f"target {target_name_!r} does not exist; create it with smartx.zbs.zbs_target",
            "create-iscsi-lun",
            obj,
        )
    if p["from_snapshot"] is None and p["copy_from"] is None:
        if want["assigned_size"] is None:
            fail_field("size", "required to create a LUN that is not cloned or copied", "create-iscsi-lun", obj)
        fields = {k: v for k, v in want.items() if v is not None}
        fields.setdefault("replica_num", target.get("replica_num"))
        fields.update(name=name, iscsi_target_id=target["id"], allowed_initiators=initiators)
        view = _view(fields, target_name_)
        if module.check_mode:
            return result(module, True, None, view, lun=fields, size=format_size(fields["assigned_size"]))
        created = client.luns.create(**fields)
        return result(
            module, True, None, _view(created, target_name_), lun=created, size=format_size(created["assigned_size"])
        )

    # Clone or copy first (the new LUN takes its source's size and is open to all), then apply the rest.
    source = "from_snapshot" if p["from_snapshot"] is not None else "copy_from"
    spec = p[source]
    src_lun = _source_lun(client, spec["target"] or target_name_, spec["lun"], source)
    snap = None
    if src_lun is not None and source == "from_snapshot":
        snap = client.snapshots.get(name=spec["name"], lun_id=src_lun["id"])
    if src_lun is None or (source == "from_snapshot" and snap is None):
        what = (
            f"LUN {spec['lun']!r} in target {spec['target'] or target_name_!r}"
            if src_lun is None
            else f"snapshot {spec['name']!r} of LUN {spec['lun']!r}"
        )
        if module.check_mode:
            return planned_past_missing(module, what, obj, _view(planned_view, target_name_) or {})
        fail_field(f"{source}.name" if src_lun else f"{source}.lun", f"no {what}", "create-iscsi-lun", obj)
    # A clone or copy gets the next free LUN number and its source's provisioning; asking for others would
    # only fail on the next run as an immutable-field change, so refuse now.
    if want["lun_id"] is not None:
        fail_field("lun_id", f"cannot be chosen for a LUN made with {source}", "create-iscsi-lun", obj)
    if want["thin_provision"] is not None and want["thin_provision"] != src_lun.get("thin_provision"):
        fail_field(
            "thin_provision",
            f"a LUN made with {source} keeps its source's thin_provision ({src_lun.get('thin_provision')})",
            "create-iscsi-lun",
            obj,
        )
    planned: Dict[str, Any] = {
        "name": name,
        "assigned_size": src_lun.get("assigned_size"),
        "replica_num": src_lun.get("replica_num"),
        "thin_provision": src_lun.get("thin_provision"),
        "allowed_initiators": ALLOW_ALL,
    }
    data = _after_clone(module, planned, want, initiators, name, obj)
    after = dict(planned, **data)
    if module.check_mode:
        size = after.get("assigned_size")
        return result(
            module,
            True,
            None,
            _view(after, target_name_),
            lun=after,
            size=format_size(size) if isinstance(size, int) else None,
        )
    if snap is not None:
        created = client.luns.clone_from_snapshot(snap["id"], target["id"], name)
    else:
        created = client.luns.copy(src_lun["id"], name, dest_target_id=target["id"])
    data = _after_clone(module, created, want, initiators, name, obj)
    if data:
        created = client.luns.update(created["id"], **data)
    return result(
        module, True, None, _view(created, target_name_), lun=created, size=format_size(created["assigned_size"])
    )


def _after_clone(
    module: Any, lun: Dict[str, Any], want: Dict[str, Any], initiators: Optional[str], name: str, obj: str
) -> Dict[str, Any]:
    """The update a fresh clone/copy needs; its access list is the one a new LUN would get, whatever the mode."""
    data = _compute_update(module, lun, {**want, "lun_id": None, "thin_provision": None}, name, obj)
    data.pop("allowed_initiators", None)
    if initiators != lun.get("allowed_initiators"):
        data["allowed_initiators"] = initiators
    return data


def _delete(module: Any, client: Any, current: Dict[str, Any], target: str, obj: str) -> Dict[str, Any]:
    """Delete the LUN, refusing while it has snapshots or live sessions unless told otherwise."""
    p = module.params
    before = _view(current, target) or {}
    if (current.get("snapshot_num") or 0) > 0:
        if not p["remove_snapshots"]:
            fail_field(
                "remove_snapshots",
                f"the LUN has {current['snapshot_num']} snapshot(s); set remove_snapshots=true to delete them with it",
                "delete-iscsi-lun",
                obj,
            )
        snapshots = client.snapshots.list(where={"iscsi_lun": {"id": current["id"]}})
        before["snapshots"] = sorted(str(s.get("name")) for s in snapshots)
    connections = client.connections.list(where={"iscsi_target": {"id": (current.get("iscsi_target") or {}).get("id")}})
    sessions = sessions_using(current, connections)
    if sessions:
        in_use = f"the LUN is in use: {describe_sessions(sessions)}"
        if not p["force"]:
            fail_field(
                "force", f"{in_use}; they would lose it at once (force=true deletes it anyway)", "delete-iscsi-lun", obj
            )
        module.warn(f"{obj}: {in_use}; deleting it anyway (force=true)")
        before["sessions"] = sorted({s.label() for s in sessions})
    if not module.check_mode:
        client.luns.delete(current["id"], remove_snapshot=p["remove_snapshots"])
    return result(module, True, before, None)


def main() -> None:
    source_lun = {"lun": {"type": "str", "required": True}, "target": {"type": "str"}}
    module = zbs_module(
        {
            "name": {"type": "str", "required": True},
            "target": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "size": {"type": "str"},
            "smaller_size": {"type": "str", "choices": SMALLER_SIZE_CHOICES, "default": "warn"},
            "replica_num": {"type": "int", "choices": [1, 2, 3]},
            "thin_provision": {"type": "bool"},
            "lun_id": {"type": "int"},
            "allowed_initiators": {"type": "list", "elements": "str"},
            "initiators_mode": {"type": "str", "choices": ["replace", "add", "remove"], "default": "replace"},
            "qos": qos_argument_spec(),
            "from_name": {"type": "str"},
            "from_snapshot": {
                "type": "dict",
                "options": {"name": {"type": "str", "required": True}, **source_lun},
            },
            "copy_from": {"type": "dict", "options": source_lun},
            "remove_snapshots": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
        },
        mutually_exclusive=[("from_snapshot", "copy_from")],
    )
    run(module, lambda: apply(module))


def apply(module: Any) -> Dict[str, Any]:
    """Read the LUN, compute the change, write it unless in check mode."""
    p = module.params
    target = target_name(p["target"], "target")
    name = validate_lun_name(p["name"])
    obj = f"LUN {name!r} in target {target!r}"
    client = zbs_client(module)
    current = find_lun(client, target, name)

    if p["state"] == "absent":
        if current is None:
            return result(module, False, None, None)
        return _delete(module, client, current, target, obj)

    want = _desired(module, obj)
    if current is None and p["from_name"] is not None:
        current = find_lun(client, target, validate_lun_name(p["from_name"], "from_name"))
    if current is None:
        return _create(module, client, target, name, want, obj)

    data = _compute_update(module, current, want, name, obj)
    before = _view(current, target)
    if not data:
        return result(module, False, before, before, lun=current, size=format_size(current["assigned_size"]))
    planned = dict(current, **data)
    after = _view(planned, target)
    if module.check_mode:
        return result(module, True, before, after, lun=planned, size=format_size(planned["assigned_size"]))
    updated = client.luns.update(current["id"], **data)
    return result(module, True, before, _view(updated, target), lun=updated, size=format_size(updated["assigned_size"]))


if __name__ == "__main__":
    main()
