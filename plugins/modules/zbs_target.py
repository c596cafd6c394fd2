#!/usr/bin/python
# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: zbs_target
short_description: Manage iSCSI targets on SmartX ZBS
version_added: 0.1.0
description:
  - Create, update and delete an iSCSI target of a ZBS cluster through the management API.
  - The target's IQN is C(iqn.2016-02.com.smartx:system:<name>).
  - The module reads the target once, computes what differs and only then writes; in check mode it writes nothing.
  - Fields that ZBS cannot change on an existing target (O(cluster), O(replica_num), O(thin_provision),
    O(stripe_num), O(stripe_size)) fail with a message naming the field when they differ.
author:
  - SmartX ZBS team (@smartx-zbs)
options:
  name:
    description:
      - Target name; lower-case letters, digits, C(-) and C(.), starting with a letter or digit. ZBS stores target
        names in lower case, so an upper-case name is refused (naming the lower-case form) rather than changed.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the target, V(absent) deletes it.
      - ZBS refuses to delete a target that still has LUNs; delete them first with M(smartx.zbs.zbs_lun).
    type: str
    choices: [present, absent]
    default: present
  cluster:
    description:
      - Name or id of the cluster that holds the target. Defaults to the API's only or first cluster.
      - Immutable.
    type: str
  description:
    description:
      - Free text shown in the ZBS UI.
    type: str
  replica_num:
    description:
      - Default replica count of the target's LUNs (2 or 3 on ZBS; 1 only on single-host zbs-lite). Immutable.
    type: int
    choices: [1, 2, 3]
  thin_provision:
    description:
      - Whether the target's LUNs are thin provisioned by default. Immutable.
    type: bool
  stripe_num:
    description:
      - Stripe count of the target's LUNs. Immutable.
    type: int
    choices: [1, 2, 4, 8, 16, 32, 64, 128]
  stripe_size:
    description:
      - Stripe size, a power of two from C(4KiB) to C(256KiB), with a unit (binary multiples). Immutable.
    type: str
  ip_whitelist:
    description:
      - IP addresses and CIDR networks that may reach the target. V(*/*) admits every address.
      - Compared as a set, so the order does not matter.
    type: list
    elements: str
  iqn_whitelist:
    description:
      - Initiator IQNs that may log in to the target. V(*/*) admits every initiator.
      - Compared as a set. A LUN is visible to an initiator only when both this list and the LUN's
        C(allowed_initiators) admit it.
    type: list
    elements: str
  chap:
    description:
      - Target (mutual) CHAP credentials, with which the target authenticates itself to initiators.
    type: dict
    suboptions:
      enabled:
        description: Whether target CHAP is required.
        type: bool
        required: true
      name:
        description: CHAP user name, 1-223 characters of letters, digits, C(.), C(:) and C(-).
        type: str
      secret:
        description:
          - CHAP secret, 12-16 letters and digits. Written according to O(update_secrets); never returned.
        type: str
  initiator_chaps:
    description:
      - Per-initiator CHAP credentials the target expects. The list is the complete set; entries not listed are removed.
      - Compared by O(initiator_chaps[].initiator_iqn) and O(initiator_chaps[].chap_name);
        secrets follow O(update_secrets).
      - To manage one initiator's credentials across targets without owning the whole list,
        use M(smartx.zbs.zbs_initiator).
    type: list
    elements: dict
    suboptions:
      initiator_iqn:
        description: The initiator's IQN.
        type: str
        required: true
      chap_name:
        description: CHAP user name, 1-512 characters of letters, digits, C(.), C(:) and C(-).
        type: str
        required: true
      chap_secret:
        description: CHAP secret, 12-512 letters and digits.
        type: str
        required: true
  qos:
    description:
      - Default QoS limits of the target. A limit of V(0) means unlimited.
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
  update_secrets:
    description:
      - CHAP secrets cannot be read back for comparison, so this decides when they are written.
      - V(on_create) writes secrets when the target is created, and together with a change of the CHAP name or
        enabled flag (target CHAP) or of the initiator list (per-initiator CHAP); otherwise a changed secret is
        not noticed and the module reports no change.
      - V(always) writes the given secrets on every run, so the module always reports a change when secrets are given.
    type: str
    choices: [always, on_create]
    default: on_create
extends_documentation_fragment:
  - smartx.zbs.zbs
  - smartx.zbs.zbs.attributes
"""

EXAMPLES = r"""
- name: Manage targets with the connection set once
  module_defaults:
    group/smartx.zbs.zbs:
      host: "{{ zbs_host }}"
      username: "{{ zbs_username }}"
      password: "{{ zbs_password }}"
  block:
    - name: A target for the database volumes
      smartx.zbs.zbs_target:
        name: db
        description: PostgreSQL volumes
        replica_num: 2
        thin_provision: true
        iqn_whitelist: ["*/*"]

    - name: Require CHAP from one initiator
      smartx.zbs.zbs_target:
        name: db
        initiator_chaps:
          - initiator_iqn: iqn.2004-10.com.example:node1
            chap_name: node1
            chap_secret: "{{ vault_node1_chap_secret }}"

    - name: Rotate the CHAP secret (secrets cannot be compared, so force the write)
      smartx.zbs.zbs_target:
        name: db
        chap:
          enabled: true
          name: db-target
          secret: "{{ vault_db_target_secret }}"
        update_secrets: always

    - name: Delete the target (its LUNs must be gone)
      smartx.zbs.zbs_target:
        name: db
        state: absent
"""

RETURN = r"""
target:
  description:
    - The target as the API shows it, CHAP secrets replaced by C(********), and QoS limits the API shows as null
      (no limit) shown as C(0), as on LUNs.
    - Absent after a delete; in check mode on create, the fields that would be sent.
  returned: when state is present
  type: dict
  sample:
    id: ckx0lk2v40001
    local_id: 7b1d8a9e-3f0e-4d4e-9a43-4b1cbd0c3a10
    name: db
    iqn_name: iqn.2016-02.com.smartx:system:db
    description: PostgreSQL volumes
    cluster: {id: ckx0lk2v40000, name: zbs-lite}
    replica_num: 2
    thin_provision: true
    stripe_num: 8
    stripe_size: 262144
    ip_whitelist: "*/*"
    iqn_whitelist: "*/*"
    chap_enabled: false
    chap_name: ""
    initiator_chaps: []
    luns: []
"""

from typing import Any, Dict, List, Optional

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    QOS_FIELDS,
    REDACTED,
    changed_fields,
    check_immutable,
    fail_field,
    option_list,
    qos_argument_spec,
    qos_zero,
    redact,
    result,
    run,
    target_name,
    zbs_client,
    zbs_module,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    ALLOW_ALL,
    validate_chap_name,
    validate_chap_secret,
    validate_ip_whitelist,
    validate_iqn,
    validate_stripe_size,
)

# What the API's null stands for, so asking for that value is no change.
NULL_MEANS = {"description": "", "chap_name": "", **dict.fromkeys(QOS_FIELDS, 0)}
IMMUTABLE = ("cluster_id", "replica_num", "thin_provision", "stripe_num", "stripe_size")
# What the diff shows: the fields this module manages, as the API names them.
VIEW_FIELDS = (
    "name",
    "description",
    "replica_num",
    "thin_provision",
    "stripe_num",
    "stripe_size",
    "ip_whitelist",
    "iqn_whitelist",
    "chap_enabled",
    "chap_name",
    *QOS_FIELDS,
)


def _as_set(value: Optional[str]) -> frozenset:
    return frozenset(v.strip().lower() for v in (value or "").split(",") if v.strip())


def _norm_list(values: Optional[List[str]], field: str, op: str, obj: str) -> Optional[str]:
    """The API string of a whitelist option: ``*/*`` alone, or a sorted comma list."""
    text = option_list(values)
    if text is None:
        return None
    items = [v for v in text.split(",") if v]
    if ALLOW_ALL in items:
        if len(items) > 1:
            fail_field(field, "'*/*' admits everyone and cannot be combined with other entries", op, obj)
        return ALLOW_ALL
    if field == "iqn_whitelist":
        return ",".join(sorted({validate_iqn(i, field) for i in items}))
    return ",".join(sorted(set(validate_ip_whitelist(text, field).split(","))))


def _chaps_view(chaps: Optional[List[Dict[str, Any]]]) -> List[Dict[str, str]]:
    """Per-initiator CHAP entries without their secrets, sorted, for comparison and diff."""
    out = [
        {"initiator_iqn": str(c.get("initiator_iqn", "")).lower(), "chap_name": str(c.get("chap_name", ""))}
        for c in chaps or []
    ]
    return sorted(out, key=lambda c: (c["initiator_iqn"], c["chap_name"]))


def _view(target: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    target = qos_zero(target)
    if target is None:
        return None
    view = {k: target.get(k) for k in VIEW_FIELDS if k in target}
    cluster = target.get("cluster")
    if isinstance(cluster, dict):
        view["cluster"] = cluster.get("name") or cluster.get("id")
    view["initiator_chaps"] = _chaps_view(target.get("initiator_chaps"))
    return view


def _resolve_cluster(client: Any, cluster: Optional[str]) -> Dict[str, Any]:
    if cluster is None:
        found = client.clusters.default()
    else:
        found = client.clusters.get(name=cluster) or client.clusters.get(id=cluster)
    if not found:
        fail_field("cluster", f"no cluster named or with id {cluster!r}", "create-iscsi-target", "cluster")
    return found


def _desired(module: Any, name: str) -> Dict[str, Any]:
    """The API fields the user asked for (None = not managed), validated."""
    p = module.params
    op, obj = "update-iscsi-target", f"target {name!r}"
    want: Dict[str, Any] = {
        "description": p["description"],
        "replica_num": p["replica_num"],
        "thin_provision": p["thin_provision"],
        "stripe_num": p["stripe_num"],
        "stripe_size": validate_stripe_size(p["stripe_size"]) if p["stripe_size"] is not None else None,
        "ip_whitelist": _norm_list(p["ip_whitelist"], "ip_whitelist", op, obj),
        "iqn_whitelist": _norm_list(p["iqn_whitelist"], "iqn_whitelist", op, obj),
    }
    chap = p["chap"]
    if chap is not None:
        want["chap_enabled"] = chap["enabled"]
        if chap["name"] is not None:
            want["chap_name"] = validate_chap_name(chap["name"], field="chap.name")
        if chap["secret"] is not None:
            validate_chap_secret(chap["secret"], field="chap.secret")
        if chap["enabled"] and (not chap["name"] or not chap["secret"]):
            fail_field("chap", "enabling target CHAP needs both name and secret", op, obj)
    for q in QOS_FIELDS:
        want[q] = (p["qos"] or {}).get(q)
    if p["initiator_chaps"] is not None:
        seen = set()
        for i, c in enumerate(p["initiator_chaps"]):
            iqn = validate_iqn(c["initiator_iqn"], f"initiator_chaps[{i}].initiator_iqn")
            if iqn in seen:
                fail_field(f"initiator_chaps[{i}].initiator_iqn", f"{iqn} is listed twice", op, obj)
            seen.add(iqn)
            validate_chap_name(c["chap_name"], initiator=True, field=f"initiator_chaps[{i}].chap_name")
            validate_chap_secret(c["chap_secret"], initiator=True, field=f"initiator_chaps[{i}].chap_secret")
    return want


def _initiator_chaps(module: Any) -> List[Dict[str, str]]:
    return [
        {
            "initiator_iqn": c["initiator_iqn"].strip().lower(),
            "chap_name": c["chap_name"],
            "chap_secret": c["chap_secret"],
        }
        for c in module.params["initiator_chaps"]
    ]


def _compute_update(module: Any, current: Dict[str, Any], want: Dict[str, Any]) -> Dict[str, Any]:
    """The ``update-iscsi-target`` data that brings ``current`` to ``want`` ({} = no change)."""
    p = module.params
    always = p["update_secrets"] == "always"
    comparable = {k: v for k, v in want.items() if k not in IMMUTABLE and k not in ("ip_whitelist", "iqn_whitelist")}
    data = changed_fields(current, comparable, NULL_MEANS)
    for field in ("ip_whitelist", "iqn_whitelist"):
        if want[field] is not None and _as_set(current.get(field)) != _as_set(want[field]):
            data[field] = want[field]
    chap = p["chap"]
    if chap is not None and ("chap_enabled" in data or "chap_name" in data or (always and chap["secret"])):
        # The API checks CHAP settings as a whole: send all that the user gave together.
        data["chap_enabled"] = chap["enabled"]
        for key, value in (("chap_name", chap["name"]), ("chap_secret", chap["secret"])):
            if value is not None:
                data[key] = value
    if p["initiator_chaps"] is not None:
        wanted = _initiator_chaps(module)
        if always or _chaps_view(current.get("initiator_chaps")) != _chaps_view(wanted):
            data["initiator_chaps"] = wanted
    return data


def main() -> None:
    module = zbs_module(
        {
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "cluster": {"type": "str"},
            "description": {"type": "str"},
            "replica_num": {"type": "int", "choices": [1, 2, 3]},
            "thin_provision": {"type": "bool"},
            "stripe_num": {"type": "int", "choices": [1, 2, 4, 8, 16, 32, 64, 128]},
            "stripe_size": {"type": "str"},
            "ip_whitelist": {"type": "list", "elements": "str"},
            "iqn_whitelist": {"type": "list", "elements": "str"},
            "chap": {
                "type": "dict",
                "options": {
                    "enabled": {"type": "bool", "required": True},
                    "name": {"type": "str"},
                    "secret": {"type": "str", "no_log": True},
                },
            },
            "initiator_chaps": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "initiator_iqn": {"type": "str", "required": True},
                    "chap_name": {"type": "str", "required": True},
                    "chap_secret": {"type": "str", "required": True, "no_log": True},
                },
            },
            "qos": qos_argument_spec(),
            "update_secrets": {"type": "str", "choices": ["always", "on_create"], "default": "on_create"},
        }
    )
    run(module, lambda: apply(module))


def apply(module: Any) -> Dict[str, Any]:
    """Read the target, compute the change, write it unless in check mode."""
    p = module.params
    name = target_name(p["name"], "name")
    client = zbs_client(module)
    current = client.targets.get(name=name)

    if p["state"] == "absent":
        if current is None:
            return result(module, False, None, None)
        if not module.check_mode:
            client.targets.delete(current["id"])
        return result(module, True, _view(redact(current)), None)

    want = _desired(module, name)
    if current is None:
        cluster = _resolve_cluster(client, p["cluster"])
        fields: Dict[str, Any] = {k: v for k, v in want.items() if v is not None}
        fields.update(name=name, cluster_id=cluster["id"])
        if p["chap"] is not None and p["chap"]["secret"] is not None:
            fields["chap_secret"] = p["chap"]["secret"]
        if p["initiator_chaps"] is not None:
            fields["initiator_chaps"] = _initiator_chaps(module)
        after_view = _view(dict(fields, cluster={"name": cluster.get("name")}))
        if module.check_mode:
            return result(module, True, None, after_view, target=redact(fields))
        created = client.targets.create(**fields)
        return result(module, True, None, _view(redact(created)), target=qos_zero(redact(created)))

    if p["cluster"] is not None:
        cur_cluster = current.get("cluster") or {}
        if p["cluster"] not in (cur_cluster.get("name"), cur_cluster.get("id")):
            fail_field(
                "cluster",
                f"cannot be changed on an existing target (is {cur_cluster.get('name')!r}, requested {p['cluster']!r})",
                "update-iscsi-target",
                f"target {name!r}",
            )
    check_immutable(current, want, IMMUTABLE, "update-iscsi-target", f"target {name!r}")
    data = _compute_update(module, current, want)
    before = _view(redact(current))
    if not data:
        return result(module, False, before, before, target=qos_zero(redact(current)))
    planned = dict(current, **data)
    after = _view(redact(planned))
    if "chap_secret" in data and after is not None:
        after["chap_secret"] = REDACTED  # a secret was written: show that something changed
    if module.check_mode:
        return result(module, True, before, after, target=qos_zero(redact(planned)))
    updated = client.targets.update(current["id"], **data)
    return result(module, True, before, after, target=qos_zero(redact(updated)))


if __name__ == "__main__":
    main()
