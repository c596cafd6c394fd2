"""CHAP through the kernel connector and a real kernel initiator, secrets off every command line.

A volume in a CHAP target (CreateVolume with the StorageClass's provisioner secret; the node's
credentials registered by ControllerPublish) is attached inside the VM by the kernel
connector (tests/vm/chap_node.py, its runner recording every command) while a sampler reads
every process's cmdline and environ in the VM. One-way CHAP on node ``b`` (one session
through the VIP, whose redirector hands the login to a chunk server), mutual CHAP on node
``a`` (one session per chunk server, multipath). Wrong credentials are refused by the real
login first; then the right ones log in, data written to the device reads back, the record
files stay 0600, and detach leaves nothing.

On the connector before the fix (``iscsiadm -o update -v <password>``) the recorded argv
held the password: this test failed there. (The sampler, a Python loop over /proc under TCG,
did not catch that short-lived command: the recorded argv is the proof, the sampler a second
look at everything else that runs on the node.)
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from rig import ROOT, Rig, RigError, Vm
from zbs_csi.chap import PASSWORD_IN_KEY, PASSWORD_KEY, USER_IN_KEY, USER_KEY

HELPER = ROOT / "tests" / "vm" / "chap_node.py"
STOP = "/run/zbs-test-chap-sampler.stop"


def node_call(vm: Vm, op: str, req: dict[str, Any]) -> dict[str, Any]:
    """chap_node.py ``op`` in the VM, the request (secrets included) on its stdin."""
    res = subprocess.run(
        vm.ssh_argv(f"python3 {HELPER} {op}"), input=json.dumps(req), capture_output=True, text=True, timeout=900
    )
    if res.returncode != 0:
        raise RigError(f"chap_node.py {op} exited {res.returncode}: {res.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


class Sampler:
    """chap_node.py sample: the VM's process list, read over and over until stopped."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        vm.sh(f"rm -f {STOP} {STOP}.ready")
        self.proc = subprocess.Popen(
            vm.ssh_argv(f"python3 {HELPER} sample {STOP}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        vm.sh(f"for i in $(seq 1 300); do [ -e {STOP}.ready ] && exit 0; sleep 0.2; done; exit 1", timeout=120)

    def stop(self) -> dict[str, Any]:
        self.vm.sh(f"touch {STOP}")
        out, err = self.proc.communicate(timeout=120)
        self.vm.sh(f"rm -f {STOP} {STOP}.ready")
        if self.proc.returncode != 0:
            raise RigError(f"the sampler exited {self.proc.returncode}: {err[-2000:]}")
        result: dict[str, Any] = json.loads(out)
        return result


def leaks(values: Iterable[str], runs: list[dict[str, Any]], sampled: dict[str, Any] | None = None) -> list[str]:
    """Where any of ``values`` shows: a recorded argv or environment, a sampled cmdline or environ."""
    found = []
    for value in values:
        for run in runs:
            if any(value in arg for arg in run["argv"]):
                found.append(f"argv of {run['argv'][0]}")
            if any(value in v for v in run["env"].values()):
                found.append(f"environment of {run['argv'][0]}")
        for where in ("cmdlines", "environs"):
            found += [f"{where}: {text[:60]}..." for text in (sampled or {}).get(where, []) if value in text]
    return found


def chap_secrets(vm_name: str, mutual: bool) -> dict[str, str]:
    """A StorageClass's CHAP Secret (fresh secrets each run): the node's pair, with mutual the target's."""
    values = {USER_KEY: f"vm-{vm_name}-node", PASSWORD_KEY: f"Np{secrets.token_hex(7)}"}
    if mutual:
        values |= {USER_IN_KEY: f"vm-{vm_name}-target", PASSWORD_IN_KEY: f"Tp{secrets.token_hex(6)}"}
    return values


CASES = [("b", False, False), ("a", True, True)]


@pytest.mark.parametrize(("vm_name", "multipath", "mutual"), CASES, ids=["one-way-vip", "mutual-multipath"])
def test_chap_login_on_a_real_initiator_with_no_secret_on_any_command_line(
    rig: Rig, vm_name: str, multipath: bool, mutual: bool, undo: list[Callable[[], object]]
) -> None:
    vm = next(v for v in rig.vms if v.name == vm_name)
    ctl = rig.controller
    sec = chap_secrets(vm_name, mutual)
    vid = ctl.create(f"chap-{vm_name}", secrets=sec)
    undo.append(lambda: ctl.delete(vid))
    ctx = ctl.publish(vid, vm.iqn, secrets=sec)
    undo.append(lambda: ctl.unpublish(vid, vm.iqn))
    iqn = ctx["targetIqn"]
    req = {"volume_id": vid, "context": ctx, "multipath": multipath}

    # Wrong credentials: the real login refuses them, with a clear error and nothing left.
    # (wrong key, what the error says, what iscsid logs: who refused whom)
    bad = [(PASSWORD_KEY, "the target refused this node's CHAP credentials", "Initiator failed authentication")]
    if mutual:  # the target cannot prove credentials other than its own: the initiator refuses it
        bad.append((PASSWORD_IN_KEY, "the target could not prove", "received incorrect CHAP response from target"))
    for key, says, logged in bad:
        given = {**sec, key: f"Wr{secrets.token_hex(6)}"}
        since = vm.sh("date +%s").stdout.strip()
        res = node_call(vm, "attach", {**req, "secrets": given})
        assert "error" in res, f"a wrong {key} logged in"
        assert says in res["error"], res["error"]
        assert logged in vm.journal("iscsid", since, logged), f"iscsid: not {logged!r}"
        assert vm.leftovers(iqn, vid) == [], f"a refused login (wrong {key}) left something"
        assert leaks([v for k, v in given.items() if k in (PASSWORD_KEY, PASSWORD_IN_KEY)], res["runs"]) == []
        if multipath:  # every chunk server refused: the cluster decided, so the VIP is not tried as well
            assert not [r["argv"] for r in res["runs"] if ctx["portal"] in r["argv"]], "the VIP was tried too"

    # The right ones, while the VM's process list is sampled.
    sampler = Sampler(vm)
    try:
        res = node_call(vm, "attach", {**req, "secrets": sec})
    finally:
        sampled = sampler.stop()
    assert "device" in res, res.get("error")
    data = res["data"]
    undo.append(lambda: node_call(vm, "detach", {**req, "data": data}))
    passwords = [sec[PASSWORD_KEY], *([sec[PASSWORD_IN_KEY]] if mutual else [])]
    assert leaks(passwords, res["runs"], sampled) == []
    assert any(c.startswith("iscsiadm") for c in sampled["cmdlines"]), (
        f"the sampler ({sampled['samples']} passes) never saw the connector's iscsiadm: it proves nothing"
    )
    writes = [r for r in res["runs"] if r["argv"][0] == "dd" and r["stdin"]]
    assert len(writes) == len(data["portals"]) == (3 if multipath else 1), "one auth block per session's record"

    # The record files: still root's alone, each holding the secret (the login used it).
    records = vm.sh(f"find /etc/iscsi/nodes/{shlex.quote(iqn)} -type f -printf '%m %p\\n'").stdout.split("\n")
    records = [r for r in records if r]
    assert len(records) == len(data["portals"]) and all(r.startswith("600 ") for r in records), records
    for record in records:
        lines = vm.sh(f"cat {shlex.quote(record[4:])}").stdout.splitlines()
        assert f"{PASSWORD_KEY} = {sec[PASSWORD_KEY]}" in lines, f"{record}: not the password the login used"

    # Data through the CHAP session(s) reads back.
    device = res["device"]
    assert device.startswith("/dev/mapper/" if multipath else "/dev/sd"), device
    vm.sh(
        f"dd if=/dev/urandom of=/root/chap.src bs=1M count=8 status=none && "
        f"dd if=/root/chap.src of={device} bs=1M oflag=direct conv=fsync,notrunc status=none"
    )
    back = vm.sh(f"dd if={device} bs=1M count=8 iflag=direct status=none | sha256sum").stdout
    assert back == vm.sh("sha256sum < /root/chap.src; rm -f /root/chap.src").stdout, "the data did not read back"

    done = node_call(vm, "detach", {**req, "data": data})
    undo.pop()
    assert leaks(passwords, done["runs"]) == []
    assert vm.leftovers(iqn, vid) == [], "detach left something"
