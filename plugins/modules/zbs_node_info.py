#!/usr/bin/python
# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: zbs_node_info
short_description: Report a host's iSCSI initiator, sessions, multipath devices and kernel modules
version_added: 0.1.0
description:
  - Runs on a node that uses ZBS storage (a Kubernetes worker, a database host) and reports what matters for
    iSCSI access - its initiator IQN, its iSCSI sessions, its multipath devices and whether the
    C(iscsi_tcp) and C(dm_multipath) kernel modules are loaded.
  - Used by the C(smartx.zbs.zbs_node) role and for troubleshooting. Pair RV(zbs_node.initiator_name) with
    M(smartx.zbs.zbs_initiator) to grant the node its LUNs.
  - Never fails because a tool is missing - an absent C(iscsiadm) or C(multipath) is reported as such.
  - Reading multipath maps and sessions usually needs root (C(become)).
author:
  - SmartX ZBS team (@smartx-zbs)
options:
  initiator_name_path:
    description:
      - The open-iscsi initiator name file.
    type: path
    default: /etc/iscsi/initiatorname.iscsi
  kernel_modules:
    description:
      - Kernel modules whose presence is reported (loaded or built in).
    type: list
    elements: str
    default: [iscsi_tcp, dm_multipath]
attributes:
  check_mode:
    description: Only reads, so it runs the same in check mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is no diff.
    support: none
notes:
  - Not a member of the C(smartx.zbs.zbs) action group - it talks to the node, not to the ZBS API.
"""

EXAMPLES = r"""
- name: Register every node's initiator with ZBS
  hosts: k8s_nodes
  become: true
  module_defaults:
    group/smartx.zbs.zbs:
      host: "{{ zbs_host }}"
      username: "{{ zbs_username }}"
      password: "{{ zbs_password }}"
  tasks:
    - name: Read the node's iSCSI facts
      smartx.zbs.zbs_node_info:
      register: node

    - name: Show why a node cannot attach volumes
      ansible.builtin.debug:
        msg: >-
          {{ inventory_hostname }}: iscsi_tcp loaded={{ node.zbs_node.kernel_modules.iscsi_tcp }},
          sessions={{ node.zbs_node.sessions | length }}

    - name: The shared LUN, made once from the controller
      run_once: true
      delegate_to: localhost
      block:
        - name: Its target
          smartx.zbs.zbs_target:
            name: app

        - name: The LUN, closed until nodes are granted
          smartx.zbs.zbs_lun:
            target: app
            name: shared
            size: 10GiB

    - name: Grant the node the shared LUN (a node without open-iscsi has no initiator name yet)
      smartx.zbs.zbs_initiator:
        iqn: "{{ node.zbs_node.initiator_name }}"
        mode: append
        luns:
          - {target: app, name: shared}
      delegate_to: localhost
      when: node.zbs_node.initiator_name is truthy
"""

RETURN = r"""
zbs_node:
  description: What the node reports.
  returned: always
  type: dict
  contains:
    initiator_name:
      description: The initiator IQN from O(initiator_name_path), or null when the file is absent or has none.
      type: str
      sample: iqn.1993-08.org.debian:01:5c9a1e2f3b4d
    iscsiadm:
      description: Path of C(iscsiadm), or null when open-iscsi is not installed.
      type: str
      sample: /usr/sbin/iscsiadm
    sessions:
      description: iSCSI sessions from C(iscsiadm -m session) (empty when none or when iscsiadm is absent).
      type: list
      elements: dict
      sample:
        - {transport: tcp, sid: 1, portal: "10.0.0.10:3260", tpgt: 1, target: "iqn.2016-02.com.smartx:system:db"}
    multipath:
      description: Multipath state; C(installed) false when C(multipath) is absent.
      type: dict
      sample:
        installed: true
        devices:
          - {name: mpatha, wwid: 36000000000000000e00000000000001, dm: dm-0, vendor: ZBS, product: VOLUME, paths: 2}
    kernel_modules:
      description: For each of O(kernel_modules), whether it is loaded or built in.
      type: dict
      sample: {iscsi_tcp: true, dm_multipath: true}
    errors:
      description: Tools that were present but failed, with their message (the module still succeeds).
      type: list
      elements: str
      sample: []
"""

import os
import re
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule

# iscsiadm -m session: "tcp: [1] 10.0.0.10:3260,1 iqn.2016-02.com.smartx:system:db (non-flash)"
SESSION_RE = re.compile(r"^(?P<transport>\w+): \[(?P<sid>\d+)\] (?P<portal>\S+?),(?P<tpgt>-?\d+) (?P<target>\S+)")
# multipath -ll: "mpatha (36000...) dm-0 ZBS,VOLUME" (the alias part is absent with user_friendly_names no)
MPATH_DEV_RE = re.compile(
    r"^(?P<name>\S+)\s+(?:\((?P<wwid>\S+)\)\s+)?(?P<dm>dm-\d+)\s+(?P<vendor>[^,]+),(?P<product>\S+)"
)
MPATH_PATH_RE = re.compile(r"\d+:\d+:\d+:\d+\s+(sd[a-z]+|nvme\S+)\s")
# iscsiadm exits 21 when there are no sessions: not an error
ISCSI_NO_OBJS_FOUND = 21


def read_initiator_name(path: str) -> Optional[str]:
    """The ``InitiatorName=`` value of an open-iscsi initiator name file."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("InitiatorName="):
                    return line.split("=", 1)[1].strip() or None
    except OSError:
        return None
    return None


def parse_sessions(output: str) -> List[Dict[str, Any]]:
    sessions = []
    for line in output.splitlines():
        m = SESSION_RE.match(line.strip())
        if m:
            sessions.append(
                {
                    "transport": m["transport"],
                    "sid": int(m["sid"]),
                    "portal": m["portal"],
                    "tpgt": int(m["tpgt"]),
                    "target": m["target"],
                }
            )
    return sessions


def parse_multipath(output: str) -> List[Dict[str, Any]]:
    devices: List[Dict[str, Any]] = []
    for line in output.splitlines():
        m = MPATH_DEV_RE.match(line)
        if m:
            wwid = m["wwid"] or m["name"]
            devices.append(
                {
                    "name": m["name"],
                    "wwid": wwid,
                    "dm": m["dm"],
                    "vendor": m["vendor"].strip(),
                    "product": m["product"],
                    "paths": 0,
                }
            )
        elif devices and MPATH_PATH_RE.search(line):
            devices[-1]["paths"] += 1
    return devices


def kernel_module_present(name: str, proc_modules: str) -> bool:
    """Loaded (``/proc/modules``) or built in (``/sys/module/<name>``)."""
    if any(line.split(" ", 1)[0] == name for line in proc_modules.splitlines()):
        return True
    return os.path.isdir(os.path.join("/sys/module", name))


def gather(module: AnsibleModule) -> Dict[str, Any]:
    p = module.params
    errors: List[str] = []
    facts: Dict[str, Any] = {"initiator_name": read_initiator_name(p["initiator_name_path"]), "errors": errors}

    iscsiadm = module.get_bin_path("iscsiadm")
    facts["iscsiadm"] = iscsiadm
    facts["sessions"] = []
    if iscsiadm:
        rc, out, err = module.run_command([iscsiadm, "-m", "session"])
        if rc == 0:
            facts["sessions"] = parse_sessions(out)
        elif rc != ISCSI_NO_OBJS_FOUND:
            errors.append(f"iscsiadm -m session (rc {rc}): {(err or out).strip()}")

    multipath = module.get_bin_path("multipath")
    facts["multipath"] = {"installed": bool(multipath), "devices": []}
    if multipath:
        rc, out, err = module.run_command([multipath, "-ll"])
        if rc == 0:
            facts["multipath"]["devices"] = parse_multipath(out)
        else:
            errors.append(f"multipath -ll (rc {rc}): {(err or out).strip()}")

    try:
        with open("/proc/modules", encoding="utf-8") as f:
            proc_modules = f.read()
    except OSError:
        proc_modules = ""
    facts["kernel_modules"] = {name: kernel_module_present(name, proc_modules) for name in p["kernel_modules"]}
    return facts


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "initiator_name_path": {"type": "path", "default": "/etc/iscsi/initiatorname.iscsi"},
            "kernel_modules": {"type": "list", "elements": "str", "default": ["iscsi_tcp", "dm_multipath"]},
        },
        supports_check_mode=True,
    )
    for name in module.params["kernel_modules"]:
        if not re.match(r"^[A-Za-z0-9_-]+$", name):
            module.fail_json(msg=f"kernel_modules: {name!r} is not a kernel module name")
    module.exit_json(changed=False, zbs_node=gather(module))


if __name__ == "__main__":
    main()
