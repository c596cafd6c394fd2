"""Issue #11 finding 10: the zbs-lite password never appears in a process's arguments.

The quickstart's "Start zbs-csi" task is run for real (the zbs_lite role as the quickstart
runs it, then ``playbooks/quickstart_tasks/driver.yml``) with ``-vvv``, while a watcher reads
every ``/proc/*/cmdline``. Ansible writes a task's ``environment`` onto the module's
``/bin/sh -c`` line, so a password passed that way shows up both there and in the output.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zbs_lite.testing import free_port, random_loopback_base

from .helpers import ROOT, PlaybookRunner

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/start-stop-daemon").exists() and not Path("/sbin/start-stop-daemon").exists(),
    reason="the quickstart starts the driver with start-stop-daemon (dpkg)",
)


class CmdlineWatcher(threading.Thread):
    """Reads every process's argv until stopped; remembers those holding the needle."""

    def __init__(self, needle: str) -> None:
        super().__init__(daemon=True)
        self.needle = needle.encode()
        self.hits: list[str] = []
        self.seen_modules = 0  # argv of Ansible module runs seen: proof the watcher looks where it matters
        self.seen_driver = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self._stop_event.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        argv = fh.read()
                except OSError:
                    continue
                if self.needle in argv:
                    self.hits.append(
                        argv.replace(self.needle, b"<PASSWORD>").replace(b"\0", b" ").decode(errors="replace")
                    )
                if b"AnsiballZ_" in argv:
                    self.seen_modules += 1
                if b"zbs-csi\0--mode=all" in argv:
                    self.seen_driver = True
            time.sleep(0.002)  # a module's /bin/sh lives for its Python's start-up: far longer than this

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def test_the_quickstart_driver_start_keeps_the_password_off_argv(
    playbook_runner: PlaybookRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "Qs" + secrets.token_hex(12)
    # A shell that once ran `eval "$(zbs-lite env ...)"` for another instance: its password must not win.
    monkeypatch.setenv("ZBS_PASSWORD", "stale-password-of-another-zbs-lite")
    qs_dir = tmp_path / "qs"
    base = random_loopback_base()
    playbook = tmp_path / "driver-start.yml"
    playbook.write_text(
        f"""
- hosts: localhost
  gather_facts: true
  vars:
    qs_dir: "{qs_dir}"
    qs_bin: "{Path(sys.executable).parent}"
    qs_node_iqn: iqn.2016-02.com.smartx.quickstart:argv-test
    qs_csi_sock: "{qs_dir}/csi/csi.sock"
    qs_csc: ["{sys.executable}", -m, zbs_csi.tools.csc, --endpoint, "unix://{qs_dir}/csi/csi.sock", --timeout, "120"]
    qs_kubelet: "{qs_dir}/kubelet"
  tasks:
    - ansible.builtin.include_role:
        name: smartx.zbs.zbs_lite
      vars:
        zbs_lite_install: none
        zbs_lite_command: "{Path(sys.executable).parent}/zbs-lite"
        zbs_lite_manage_packages: false
        zbs_lite_service_manager: process
        zbs_lite_data_dir: "{qs_dir}/zbs-lite"
        zbs_lite_api_port: 0
        zbs_lite_vip: 127.0.0.1:0
        zbs_lite_chunk_ip_base: "{base}"
        zbs_lite_chunk_port: {free_port(base)}
        zbs_lite_pool: dir
    - ansible.builtin.include_tasks: "{ROOT}/playbooks/quickstart_tasks/driver.yml"
"""
    )
    watcher = CmdlineWatcher(password)
    watcher.start()
    try:
        run = playbook_runner.run(playbook, {"zbs_lite_password": password}, check=False, args=["-vvv"])
    finally:
        watcher.stop()
    try:
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert watcher.seen_modules and watcher.seen_driver, "the watcher must have seen the module runs and the driver"
        assert watcher.hits == [], f"the password was in argv: {watcher.hits[:3]}"
        assert password not in run.stdout and password not in run.stderr, "-vvv printed the password"
        # The driver really authenticates with the password from the file: a volume comes and goes.
        csc = [sys.executable, "-m", "zbs_csi.tools.csc", "--endpoint", f"unix://{qs_dir}/csi/csi.sock"]
        made = subprocess.run([*csc, "create-volume", "argv-test", "--size", str(1 << 20)], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert made.returncode == 0, made.stderr
        volume_id = json.loads(made.stdout)["volume"]["volume_id"]
        gone = subprocess.run([*csc, "delete-volume", volume_id], capture_output=True, text=True, timeout=120)
        assert gone.returncode == 0, gone.stderr
    finally:
        pidfile = qs_dir / "csi" / "zbs-csi.pid"
        if pidfile.exists():
            subprocess.run(["start-stop-daemon", "--stop", "--pidfile", str(pidfile), "--retry", "10"], timeout=60)
        subprocess.run(
            [str(Path(sys.executable).parent / "zbs-lite"), "stop", "--data-dir", str(qs_dir / "zbs-lite")], timeout=120
        )
        deadline = time.monotonic() + 5
        while (qs_dir / "csi" / "csi.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
