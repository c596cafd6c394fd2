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
  - CHAP secrets are never returned.
author:
  - SmartX ZBS team (@smartx-zbs)
options:
  gather_subset:
    description:
      - What to read. V(minimal) is the cluster and the number of targets, LUNs and snapshots (one small request each).
      - V(all) is every other subset.
      - Prefix a subset with C(!) to leave it out of V(all), for example C([all, "!connections"]).
    type: list
    elements: str
    default: [minimal]
    choices: [minimal, all, cluster, targets, luns, snapshots, connections,
              "!minimal", "!all", "!cluster", "!targets", "!luns", "!snapshots", "!connections"]
  target:
    description:
      - Only this target, its LUNs, their snapshots and the connections to it.
    type: str
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

    - name: Everything about one target, without the connection list
      smartx.zbs.zbs_info:
        gather_subset: [all, "!connections"]
        target: db

    - name: Names and sizes of the LUNs larger than 100 GiB
      smartx.zbs.zbs_info:
        gather_subset: [luns]
        query: "luns[?assigned_size > `107374182400`].{name: name, size: assigned_size}"
      register: big

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
  sample: {id: ckx0lk2v40000, local_id: 4a2e6b1c-5d7f-4e8a-9b0c-1d2e3f4a5b6c, name: zbs-lite, iscsi_vip: 127.0.0.1}
counts:
  description: Number of targets, LUNs and snapshots (after the name filters).
  returned: when V(minimal) is gathered
  type: dict
  sample: {targets: 2, luns: 5, snapshots: 1}
targets:
  description: Targets, CHAP secrets replaced by C(********).
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
  description: LUNs.
  returned: when V(luns) is gathered
  type: list
  elements: dict
  sample:
    - id: ckx0m3q7d0004
      name: data
      lun_id: 1
      iscsi_target: {id: ckx0lk2v40001, name: db}
      assigned_size: 21474836480
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
query_result:
  description: The answer of O(query).
  returned: when O(query) is given
  type: raw
  sample: ["iqn.2004-10.com.example:node1"]
"""

import traceback
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_ansible import (
    fail_field,
    redact,
    run,
    zbs_client,
    zbs_module,
)
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import validate_lun_name, validate_target_name

try:
    import jmespath

    JMESPATH_IMPORT_ERROR: Optional[str] = None
except ImportError:
    JMESPATH_IMPORT_ERROR = traceback.format_exc()

SUBSETS = ("minimal", "cluster", "targets", "luns", "snapshots", "connections")
ALL = ("cluster", "targets", "luns", "snapshots", "connections")


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


def _wheres(p: Dict[str, Any]) -> Dict[str, Optional[Dict[str, Any]]]:
    """The API ``where`` filter of each resource for the name options."""
    target = validate_target_name(p["target"], "target") if p["target"] is not None else None
    lun = validate_lun_name(p["lun"], "lun") if p["lun"] is not None else None
    contains = p["name_contains"]
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
            "query": {"type": "str"},
        }
    )
    if module.params["query"] is not None and JMESPATH_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("jmespath"), exception=JMESPATH_IMPORT_ERROR)
    run(module, lambda: gather(module))


def gather(module: Any) -> Dict[str, Any]:
    p = module.params
    subsets = resolve_subsets(p["gather_subset"])
    wheres = _wheres(p)
    client = zbs_client(module)
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
    if "targets" in subsets:
        facts["targets"] = [redact(t) for t in client.targets.list(where=wheres["targets"])]
    if "luns" in subsets:
        facts["luns"] = client.luns.list(where=wheres["luns"])
    if "snapshots" in subsets:
        facts["snapshots"] = client.snapshots.list(where=wheres["snapshots"])
    if "connections" in subsets:
        facts["connections"] = client.connections.list(where=wheres["connections"])
    out: Dict[str, Any] = {"changed": False, "gathered_subsets": subsets, **facts}
    if p["query"] is not None:
        try:
            out["query_result"] = jmespath.search(p["query"], facts)
        except jmespath.exceptions.JMESPathError as exc:
            fail_field("query", f"invalid JMESPath expression: {exc}", "query", "gathered facts")
    return out


if __name__ == "__main__":
    main()
