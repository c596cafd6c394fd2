#!/usr/bin/python
# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: zbs_info
short_description: Read clusters, targets, LUNs, snapshots and iSCSI connections from SmartX ZBS
version_added: 0.1.0
description:
  - Gathers what the ZBS management API knows, subset by subset, following every page of results.
  - Filters by name are applied by the API; a JMESPath O(query) can then reshape the result.
  - Access lists are returned as lists - C(allowed_initiators) of LUNs, C(iqn_whitelist) and C(ip_whitelist) of
    targets - with V(["*"]) for everybody and V([]) for nobody (the API's comma-joined string with C(*/*)), so
    JMESPath C(contains()) matches whole names.
  - The V(initiators) subset answers "which LUNs can this host see, and why" for every IQN the cluster knows.
  - CHAP secrets are never returned.
author:
  - SmartX ZBS team (@smartx-zbs)
options:
  gather_subset:
    description:
      - What to read. V(minimal) is the cluster and the number of targets, LUNs and snapshots (one small request each).
      - V(cluster) includes the cluster's capacity as CloudTower reports it (C(total_data_capacity),
        C(used_data_space), C(valid_data_space), C(failure_data_space), bytes) and RV(capacity) derived from it.
      - V(initiators) is, for each initiator IQN the cluster knows (in LUN lists, target whitelists, CHAP entries
        and sessions), the LUNs it can see and why; see RV(initiators).
      - V(all) is every other subset.
      - Prefix a subset with C(!) to leave it out of V(all), for example C([all, "!connections"]).
    type: list
    elements: str
    default: [minimal]
    choices: [minimal, all, cluster, targets, luns, snapshots, connections, initiators,
              "!minimal", "!all", "!cluster", "!targets", "!luns", "!snapshots", "!connections", "!initiators"]
  target:
    description:
      - Only this target, its LUNs, their snapshots and the connections to it. A target that does not exist is an
        error, not an empty result.
    type: str
  initiator:
    description:
      - With the V(initiators) subset, report this initiator IQN only (also when the cluster does not know it yet;
        it then sees the LUNs open to everybody).
    type: str
  fields:
    description:
      - Only these fields of each cluster, target, LUN, snapshot and connection record (for example
        V([name, assigned_size, allowed_initiators])), to keep large inventories small. Unknown names are ignored.
    type: list
    elements: str
  lun:
    description:
      - Only LUNs with this name and their snapshots (usually combined with O(target)).
    type: str
  name_contains:
    description:
      - Only targets, LUNs and snapshots whose name contains this text.
    type: str
  query:
    description:
      - A JMESPath expression applied to the gathered facts (a dict with one key per subset); the answer is
        returned in RV(query_result). Needs the C(jmespath) Python library.
    type: str
extends_documentation_fragment:
  - smartx.zbs.zbs
attributes:
  check_mode:
    description: Only reads, so it runs the same in check mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is no diff.
    support: none
  action_group:
    description: Use C(group/smartx.zbs.zbs) in C(module_defaults) to set the connection options once.
    support: full
    membership:
      - smartx.zbs.zbs
requirements:
  - jmespath (for O(query))
"""

EXAMPLES = r"""
- name: Inventory of a ZBS cluster
  module_defaults:
    group/smartx.zbs.zbs:
      host: "{{ zbs_host }}"
      username: "{{ zbs_username }}"
      password: "{{ zbs_password }}"
  block:
    - name: Cluster and counts
      smartx.zbs.zbs_info:
      register: zbs

    - name: How much space is used
      smartx.zbs.zbs_info:
        gather_subset: [cluster]
      register: space

    - name: Show it
      ansible.builtin.debug:
        msg: "{{ space.capacity.used | human_readable }} of {{ space.capacity.total | human_readable }} used"

    - name: A target with two LUNs, to look at
      smartx.zbs.zbs_target:
        name: db

    - name: Its LUNs, one of them visible to node 1
      smartx.zbs.zbs_lun:
        target: db
        name: "{{ item.name }}"
        size: "{{ item.size }}"
        allowed_initiators: "{{ item.hosts }}"
      loop:
        - {name: data, size: 200GiB, hosts: [iqn.2004-10.com.example:node1]}
        - {name: logs, size: 20GiB, hosts: []}

    - name: Everything about one target, without the connection list
      smartx.zbs.zbs_info:
        gather_subset: [all, "!connections"]
        target: db

    - name: Names and sizes of the LUNs larger than 100 GiB
      smartx.zbs.zbs_info:
        gather_subset: [luns]
        fields: [name, assigned_size]
        query: "luns[?assigned_size > `107374182400`]"
      register: big

    - name: Which LUNs can node 1 see, and why
      smartx.zbs.zbs_info:
        gather_subset: [initiators]
        initiator: iqn.2004-10.com.example:node1
        query: "initiators[0].luns[].{lun: name, because: lun_access}"
      register: node1

    - name: The LUNs whose list names node 1 exactly (not node10)
      smartx.zbs.zbs_info:
        gather_subset: [luns]
        query: "luns[?contains(allowed_initiators, 'iqn.2004-10.com.example:node1')].name"

    - name: Which addresses are logged in to the db target
      smartx.zbs.zbs_info:
        gather_subset: [connections]
        target: db
        query: "connections[].initiator_ip"
"""

RETURN = r"""
gathered_subsets:
  description: The subsets that were gathered, after V(all) and C(!) exclusions were resolved.
  returned: always
  type: list
  elements: str
  sample: [minimal]
cluster:
  description: The cluster the API manages (the first one when there are several).
  returned: when V(cluster) or V(minimal) is gathered
  type: dict
  sample:
    id: ckx0lk2v40000
    local_id: 4a2e6b1c-5d7f-4e8a-9b0c-1d2e3f4a5b6c
    name: zbs-lite
    iscsi_vip: 127.0.0.1
    total_data_capacity: 107374182400
    used_data_space: 5368709120
    valid_data_space: 107374182400
    failure_data_space: 0
capacity:
  description:
    - The cluster's data space in bytes, from the fields above - C(total) (C(total_data_capacity)), C(used)
      (C(used_data_space)), C(free) (C(valid_data_space) minus C(used)) and C(used_percent) - plus C(provisioned),
      the sum of the LUNs' sizes, when the V(luns) subset is gathered too.
    - A LUN's own usage is its C(unique_size) (data only it holds) and C(shared_size) (data shared with snapshots
      and clones).
  returned: when V(cluster) or V(minimal) is gathered and the API reports the cluster's capacity
  type: dict
  sample: {total: 107374182400, used: 5368709120, free: 102005473280, used_percent: 5.0}
counts:
  description: Number of targets, LUNs and snapshots (after the name filters).
  returned: when V(minimal) is gathered
  type: dict
  sample: {targets: 2, luns: 5, snapshots: 1}
targets:
  description:
    - Targets, CHAP secrets replaced by C(********), C(iqn_whitelist) and C(ip_whitelist) as lists (V(["*"]) for
      everybody), QoS limits the API shows as null (no limit) as C(0).
  returned: when V(targets) is gathered
  type: list
  elements: dict
  sample:
    - id: ckx0lk2v40001
      name: db
      iqn_name: "iqn.2016-02.com.smartx:system:db"
      replica_num: 2
      luns: [{id: ckx0m3q7d0004, name: data}]
luns:
  description: LUNs, with C(allowed_initiators) as a list (V(["*"]) for every initiator, V([]) for nobody).
  returned: when V(luns) is gathered
  type: list
  elements: dict
  sample:
    - id: ckx0m3q7d0004
      name: data
      lun_id: 1
      iscsi_target: {id: ckx0lk2v40001, name: db}
      assigned_size: 21474836480
      allowed_initiators: ["iqn.2004-10.com.example:node1"]
      unique_size: 1073741824
snapshots:
  description: LUN snapshots.
  returned: when V(snapshots) is gathered
  type: list
  elements: dict
  sample:
    - id: ckx0n1a2b0007
      name: nightly
      iscsi_lun: {id: ckx0m3q7d0004, name: data}
      iscsi_target: {id: ckx0lk2v40001, name: db}
connections:
  description:
    - iSCSI sessions the cluster sees.
    - C(initiator_iqn) is reported by zbs-lite only; CloudTower identifies a session by C(initiator_ip),
      C(client_port) and C(host).
  returned: when V(connections) is gathered
  type: list
  elements: dict
  sample:
    - id: c1
      initiator_ip: 10.0.0.11
      initiator_iqn: "iqn.2004-10.com.example:node1"
      iscsi_target: {id: ckx0lk2v40001, name: db}
initiators:
  description:
    - For each initiator IQN (or only O(initiator)), sorted by IQN - C(luns) it can see, each with C(lun_access)
      (V(listed) - the LUN's list names it, or V(open) - the LUN admits everybody) and C(target_access) (the same for
      the target's IQN whitelist); C(blocked), LUNs whose list names it but whose target whitelist keeps it out;
      C(chap_targets), targets holding CHAP credentials for it; C(sessions), its live sessions (zbs-lite only,
      CloudTower does not name a session's initiator).
    - The targets' IP whitelists are not taken into account (the initiator's address is not known).
  returned: when V(initiators) is gathered
  type: list
  elements: dict
  sample:
    - iqn: iqn.2004-10.com.example:node1
      luns:
        - {target: db, name: data, lun_id: 1, lun_access: listed, target_access: open}
      blocked: []
      chap_targets: []
      sessions: [{target: db, initiator_ip: 10.0.0.11}]
query_result:
  description: The answer of O(query).
  returned: when O(query) is given
  type: raw
  sample: ["iqn.2004-10.com.example:node1"]
"""

import traceback
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_access import (
    access_list,
    initiator_record,
    known_initiators,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    fail_field,
    qos_zero,
    redact,
    run,
    target_name,
    zbs_client,
    zbs_module,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import validate_iqn, validate_lun_name

try:
    import jmespath

    JMESPATH_IMPORT_ERROR: Optional[str] = None
except ImportError:
    JMESPATH_IMPORT_ERROR = traceback.format_exc()

SUBSETS = ("minimal", "cluster", "targets", "luns", "snapshots", "connections", "initiators")
ALL = ("cluster", "targets", "luns", "snapshots", "connections", "initiators")
#: Capacity fields of the CloudTower cluster record (bytes).
CAPACITY_FIELDS = ("total_data_capacity", "used_data_space", "valid_data_space", "failure_data_space")


def resolve_subsets(requested: List[str]) -> List[str]:
    """The subsets to gather from ``gather_subset`` (``all``, ``!x`` exclusions), in a stable order."""
    include, exclude = set(), set()
    for item in requested:
        if item.startswith("!"):
            exclude.update(ALL if item[1:] == "all" else (item[1:],))
        elif item == "all":
            include.update(ALL)
        else:
            include.add(item)
    if not include and exclude:
        include.update(ALL)
    return [s for s in SUBSETS if s in include and s not in exclude]


def _wheres(target: Optional[str], lun: Optional[str], contains: Optional[str]) -> Dict[str, Optional[Dict[str, Any]]]:
    """The API ``where`` filter of each resource for the name options."""
    t: Dict[str, Any] = {}
    lu: Dict[str, Any] = {}
    s: Dict[str, Any] = {}
    c: Dict[str, Any] = {}
    if target is not None:
        t["name"] = target
        lu["iscsi_target"] = {"name": target}
        s["iscsi_target"] = {"name": target}
        c["iscsi_target"] = {"name": target}
    if lun is not None:
        lu["name"] = lun
        s["iscsi_lun"] = {"name": lun}
    if contains:
        t["name_contains"] = contains
        lu["name_contains"] = contains
        s["name_contains"] = contains
    return {"targets": t or None, "luns": lu or None, "snapshots": s or None, "connections": c or None}


def lun_report(lun: Dict[str, Any]) -> Dict[str, Any]:
    return dict(lun, allowed_initiators=access_list(lun.get("allowed_initiators")))


def target_report(target: Dict[str, Any]) -> Dict[str, Any]:
    out = qos_zero(redact(target)) or {}
    for key in ("iqn_whitelist", "ip_whitelist"):
        if key in out:
            out[key] = access_list(out[key])
    return out


def capacity(cluster: Optional[Dict[str, Any]], luns: Optional[List[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
    """Total/used/free bytes from the cluster record; None when the API does not report them."""
    if not cluster or not all(isinstance(cluster.get(k), int) for k in CAPACITY_FIELDS[:2]):
        return None
    total, used = cluster["total_data_capacity"], cluster["used_data_space"]
    valid = cluster.get("valid_data_space")
    out: Dict[str, Any] = {
        "total": total,
        "used": used,
        "free": max(0, (valid if isinstance(valid, int) else total) - used),
        "used_percent": round(100.0 * used / total, 1) if total else 0.0,
    }
    if luns is not None:
        out["provisioned"] = sum(int(lun.get("assigned_size") or 0) for lun in luns)
    return out


def trim(record: Any, fields: Optional[List[str]]) -> Any:
    if fields is None or not isinstance(record, dict):
        return record
    return {k: v for k, v in record.items() if k in fields}


def main() -> None:
    module = zbs_module(
        {
            "gather_subset": {
                "type": "list",
                "elements": "str",
                "default": ["minimal"],
                "choices": list(SUBSETS) + ["all"] + ["!" + s for s in (*SUBSETS, "all")],
            },
            "target": {"type": "str"},
            "lun": {"type": "str"},
            "name_contains": {"type": "str"},
            "initiator": {"type": "str"},
            "fields": {"type": "list", "elements": "str"},
            "query": {"type": "str"},
        }
    )
    if module.params["query"] is not None and JMESPATH_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("jmespath"), exception=JMESPATH_IMPORT_ERROR)
    run(module, lambda: gather(module))


def gather(module: Any) -> Dict[str, Any]:
    p = module.params
    subsets = resolve_subsets(p["gather_subset"])
    target = target_name(p["target"], "target") if p["target"] is not None else None
    lun = validate_lun_name(p["lun"], "lun") if p["lun"] is not None else None
    initiator = validate_iqn(p["initiator"], "initiator") if p["initiator"] is not None else None
    wheres = _wheres(target, lun, p["name_contains"])
    client = zbs_client(module)
    if target is not None and client.targets.count({"name": target}) == 0:
        fail_field("target", f"no target {target!r}", "get-iscsi-targets", f"target {target!r}")
    facts: Dict[str, Any] = {}
    if "cluster" in subsets or "minimal" in subsets:
        clusters = client.clusters.list()
        facts["cluster"] = clusters[0] if clusters else None
    if "minimal" in subsets:
        facts["counts"] = {
            "targets": client.targets.count(wheres["targets"]),
            "luns": client.luns.count(wheres["luns"]),
            "snapshots": client.snapshots.count(wheres["snapshots"]),
        }
    need = set(subsets)
    if "initiators" in need:
        need.update(("targets", "luns", "connections"))
    targets = client.targets.list(where=wheres["targets"]) if "targets" in need else []
    luns = client.luns.list(where=wheres["luns"]) if "luns" in need else []
    connections = client.connections.list(where=wheres["connections"]) if "connections" in need else []
    if "cluster" in facts:
        space = capacity(facts["cluster"], luns if "luns" in subsets else None)
        if space is not None:
            facts["capacity"] = space
    if "targets" in subsets:
        facts["targets"] = [target_report(t) for t in targets]
    if "luns" in subsets:
        facts["luns"] = [lun_report(x) for x in luns]
    if "snapshots" in subsets:
        facts["snapshots"] = client.snapshots.list(where=wheres["snapshots"])
    if "connections" in subsets:
        facts["connections"] = connections
    if "initiators" in subsets:
        iqns = [initiator] if initiator is not None else known_initiators(luns, targets, connections)
        facts["initiators"] = [initiator_record(iqn, luns, targets, connections) for iqn in iqns]
    if p["fields"] is not None:
        for key in ("targets", "luns", "snapshots", "connections"):
            if key in facts:
                facts[key] = [trim(r, p["fields"]) for r in facts[key]]
        if facts.get("cluster") is not None:
            facts["cluster"] = trim(facts["cluster"], p["fields"])
    out: Dict[str, Any] = {"changed": False, "gathered_subsets": subsets, **facts}
    if p["query"] is not None:
        try:
            out["query_result"] = jmespath.search(p["query"], facts)
        except jmespath.exceptions.JMESPathError as exc:
            fail_field("query", f"invalid JMESPath expression: {exc}", "query", "gathered facts")
    return out


if __name__ == "__main__":
    main()
