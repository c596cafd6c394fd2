# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""zbs_node_info on this machine (real files, real PATH) and its parsers on recorded tool output.

The kernel iSCSI initiator and multipathd cannot run on the CI machines, so session and
multipath parsing is checked against output recorded from open-iscsi 2.1 and multipath-tools 0.9.
"""

from __future__ import annotations

import os

from ansible_collections.smartx.zbs.plugins.modules import zbs_node_info

SESSIONS = """\
tcp: [1] 10.0.0.10:3260,1 iqn.2016-02.com.smartx:system:db (non-flash)
tcp: [3] [fd00::10]:3261,1 iqn.2016-02.com.smartx:system:web (non-flash)
"""

MULTIPATH = """\
mpatha (36f0e8c9a4b3c2d1e) dm-0 ZBS,VOLUME
size=10G features='1 queue_if_no_path' hwhandler='0' wp=rw
`-+- policy='service-time 0' prio=1 status=active
  |- 2:0:0:1 sdb 8:16 active ready running
  `- 3:0:0:1 sdc 8:32 active ready running
36f0e8c9a4b3c2d1f dm-1 ZBS,VOLUME
size=1.0G features='0' hwhandler='0' wp=rw
`-+- policy='service-time 0' prio=1 status=active
  `- 2:0:0:2 sdd 8:48 active ready running
"""


def test_parse_sessions():
    sessions = zbs_node_info.parse_sessions(SESSIONS)
    assert sessions[0] == {
        "transport": "tcp",
        "sid": 1,
        "portal": "10.0.0.10:3260",
        "tpgt": 1,
        "target": "iqn.2016-02.com.smartx:system:db",
    }
    assert sessions[1]["portal"] == "[fd00::10]:3261"


def test_parse_multipath_counts_paths():
    devices = zbs_node_info.parse_multipath(MULTIPATH)
    assert [(d["name"], d["vendor"], d["product"], d["paths"]) for d in devices] == [
        ("mpatha", "ZBS", "VOLUME", 2),
        ("36f0e8c9a4b3c2d1f", "ZBS", "VOLUME", 1),
    ]


def test_runs_here_without_failing(tmp_path, run_module):
    name_file = tmp_path / "initiatorname.iscsi"
    name_file.write_text("## written by open-iscsi\nInitiatorName=iqn.1993-08.org.debian:01:abc\n")
    out = run_module(zbs_node_info, {"initiator_name_path": str(name_file)}, connection=False)
    node = out["zbs_node"]
    assert out["changed"] is False
    assert node["initiator_name"] == "iqn.1993-08.org.debian:01:abc"
    assert set(node["kernel_modules"]) == {"iscsi_tcp", "dm_multipath"}
    assert isinstance(node["sessions"], list)


def test_absent_name_file_is_null(tmp_path, run_module):
    out = run_module(zbs_node_info, {"initiator_name_path": str(tmp_path / "none")}, connection=False)
    assert out["zbs_node"]["initiator_name"] is None


def test_kernel_module_detection_uses_proc_modules():
    assert zbs_node_info.kernel_module_present("iscsi_tcp", "iscsi_tcp 24576 0 - Live 0x0\n") is True
    builtin = os.path.isdir("/sys/module/surely_not_a_module")
    assert zbs_node_info.kernel_module_present("surely_not_a_module", "") is builtin


def test_bad_module_name_is_refused(run_module):
    out = run_module(zbs_node_info, {"kernel_modules": ["../x"]}, connection=False)
    assert out["failed"] and "kernel_modules" in out["msg"]
