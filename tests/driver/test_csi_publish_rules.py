"""Pure logic of the node's publish and teardown paths: the spec's second-publish tables,
reading a process's TCP connections from /proc, naming a FUSE connection."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest
from zbs_csi.errors import CsiError
from zbs_csi.node.connectors.fuse import connection_id
from zbs_csi.node.connectors.tcp import established_inodes, has_established
from zbs_csi.node.mounts import parse_mountinfo
from zbs_csi.node.publish_rules import check_publish
from zbs_csi.proto import csi_pb2 as csi

Mode = csi.VolumeCapability.AccessMode
OK, EXISTS, PRECONDITION = "OK", grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION

# The spec's table for a plugin with SINGLE_NODE_MULTI_WRITER, one row per mode:
# (T1=T2, P1=P2), (T1=T2, P1!=P2), (T1!=T2, P1=P2), (T1!=T2, P1!=P2).
ONE_PATH = (OK, EXISTS, PRECONDITION, PRECONDITION)
SEVERAL_PATHS = (OK, EXISTS, OK, OK)
TABLE = {
    Mode.SINGLE_NODE_SINGLE_WRITER: ONE_PATH,
    Mode.SINGLE_NODE_WRITER: ONE_PATH,
    Mode.SINGLE_NODE_READER_ONLY: ONE_PATH,
    Mode.SINGLE_NODE_MULTI_WRITER: SEVERAL_PATHS,
    Mode.MULTI_NODE_READER_ONLY: SEVERAL_PATHS,
    Mode.MULTI_NODE_SINGLE_WRITER: SEVERAL_PATHS,
    Mode.MULTI_NODE_MULTI_WRITER: SEVERAL_PATHS,
}


def _outcome(target: str, want: dict[str, Any], live: dict[str, dict[str, Any]]) -> Any:
    try:
        check_publish("vol-1", target, want, live)
    except CsiError as exc:
        return exc.code
    return OK


@pytest.mark.parametrize("mode", list(TABLE), ids=lambda m: Mode.Mode.Name(m))
def test_second_publish_follows_the_spec_table(mode: int) -> None:
    first = {"readonly": False, "access_type": "mount", "mode": mode, "flags": []}
    other_args = {**first, "readonly": True}  # P1 != P2: same capability, other arguments
    live = {"/t1": first}
    got = (
        _outcome("/t1", first, live),
        _outcome("/t1", other_args, live),
        _outcome("/t2", first, live),
        _outcome("/t2", other_args, live),
    )
    assert got == TABLE[mode]


def test_publish_rules() -> None:
    multi = {"readonly": False, "access_type": "block", "mode": Mode.MULTI_NODE_MULTI_WRITER, "flags": []}
    # Nothing published yet, or only at paths that are gone (the caller passes live mounts only).
    assert check_publish("v", "/t1", multi, {}) is False
    # Exactly this publish already there: nothing to do.
    assert check_publish("v", "/t1", multi, {"/t1": multi}) is True
    # A second publish with another volume capability is refused even for multi-writer modes.
    for change in ({"mode": Mode.SINGLE_NODE_MULTI_WRITER}, {"access_type": "mount"}, {"flags": ["noatime"]}):
        with pytest.raises(CsiError) as exc:
            check_publish("v", "/t2", {**multi, **change}, {"/t1": multi})
        assert exc.value.code == PRECONDITION and "/t1" in exc.value.message
    # The refusal names the mode and the path already in use.
    single = {**multi, "mode": Mode.SINGLE_NODE_SINGLE_WRITER}
    with pytest.raises(CsiError) as exc:
        check_publish("v", "/t2", single, {"/t1": single})
    assert "SINGLE_NODE_SINGLE_WRITER" in exc.value.message and "/t1" in exc.value.message


TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0CBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0
   1: 0100007F:9C40 0100007F:0CBC 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0
   2: 0100007F:9C41 0100007F:0CBC 02 00000000:00000000 01:00000064 00000000     0        0 1003 1 0
   3: 0100007F:9C42 0100007F:0CBC 06 00000000:00000000 03:00000EAA 00000000     0        0 0 3 0
"""


def test_established_rows_of_a_proc_net_tcp_table() -> None:
    # LISTEN (0A), SYN_SENT (02, a reconnect in progress) and TIME_WAIT (06) are not a session.
    assert established_inodes(TCP_TABLE) == {1002}
    assert established_inodes("") == set()


def _child(*argv: str) -> subprocess.Popen[str]:
    """A process holding one listening socket, and a connection to ``argv`` when given."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "c = socket.create_connection((sys.argv[1], int(sys.argv[2]))) if len(sys.argv) > 1 else None\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_has_established_tells_a_live_session_from_a_lost_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        host, port = server.getsockname()
        idle, connected = _child(), _child(host, str(port))
        try:
            assert has_established(idle.pid) is False  # a listening socket is no session
            peer, _ = server.accept()
            assert has_established(connected.pid) is True
            peer.close()  # the target goes away: the initiator's socket leaves ESTABLISHED
            deadline = time.monotonic() + 10
            while has_established(connected.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert has_established(connected.pid) is False
        finally:
            for proc in (idle, connected):
                proc.kill()
                proc.wait()
    assert has_established(idle.pid) is False  # a process that is gone


def test_fuse_connection_id_from_mountinfo() -> None:
    entries = parse_mountinfo(
        "45 27 0:42 / /state/userspace/v/disk rw,nosuid,nodev,relatime - fuse /dev/fuse rw,user_id=0\n"
        "46 27 7:0 / /stage rw,relatime - xfs /dev/loop0 rw,nouuid\n"
        "47 27 259:3 / /odd rw - fuseblk /dev/x rw\n"
    )
    assert [connection_id(e) for e in entries] == [42, None, (259 << 20) | 3]
