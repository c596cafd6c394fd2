"""What a no-change playbook run costs compared to the run that did the work.

Runs one playbook that manages N LUNs (default 200) in one target with a loop of
smartx.zbs.zbs_lun tasks, twice, against a zbs-lite started here: the first run creates
everything, the second must change nothing. Prints the ratio second/first (side by side, same
machine, same run) and the API calls per task of the no-change run, counted by a small proxy
in front of zbs-lite's plain-HTTP port (goal: the login plus one read per object). A run of as
many ``ansible.builtin.ping`` tasks gives the floor - what Ansible itself costs per module run.

Then the same N LUNs in another target are managed by ONE smartx.zbs.zbs_luns task, twice, and
its no-change run is compared with the loop's no-change run (goal <= 0.05) and with a playbook
of a single ``ansible.builtin.ping`` task (goal <= 3x).

    .venv/bin/python bench/modules.py [--luns 200]
"""

from __future__ import annotations

import argparse
import collections
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Counter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient  # noqa: E402

from zbs_lite.testing import ZbsLiteProcess  # noqa: E402

# The ansible-playbook of the venv running this script, even when the venv is not activated.
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"

PLAYBOOK = """\
- name: Manage {n} LUNs
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/smartx.zbs.zbs:
      host: "{{{{ bench_host }}}}"
      username: "{{{{ bench_username }}}}"
      password: "{{{{ bench_password }}}}"
  tasks:
    - name: The target
      smartx.zbs.zbs_target:
        name: bench
        replica_num: 1
    - name: The LUNs
      smartx.zbs.zbs_lun:
        target: bench
        name: "v{{{{ item }}}}"
        size: 16MiB
        allowed_initiators: [iqn.2004-10.com.example:bench1, iqn.2004-10.com.example:bench2]
      loop: "{{{{ range({n}) | list }}}}"
"""


# The same LUNs managed by one task.
BATCH = """\
- name: Manage {n} LUNs in one task
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The LUNs
      smartx.zbs.zbs_luns:
        host: "{{{{ bench_host }}}}"
        username: "{{{{ bench_username }}}}"
        password: "{{{{ bench_password }}}}"
        target: bench-batch
        luns:
{luns}
"""

BATCH_LUN = "          - {{name: v{i}, size: 16MiB, allowed_initiators: [{a}, {b}]}}"

# One module run doing nothing: what any one-task playbook costs at least.
ONE_PING = """\
- name: Run one no-op module
  hosts: localhost
  gather_facts: false
  tasks:
    - name: One ping
      ansible.builtin.ping:
"""

# The floor: the same number of module runs doing nothing (Ansible's own cost per task).
BASELINE = """\
- name: Run {n} no-op modules
  hosts: localhost
  gather_facts: false
  tasks:
    - name: One ping per LUN
      ansible.builtin.ping:
      loop: "{{{{ range({n} + 1) | list }}}}"
"""


class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards POSTs to zbs-lite's HTTP port and counts them per operation."""

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/")
        self.counts: Counter[str] = collections.Counter()
        self.lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: CountingProxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        op = self.path.rsplit("/", 1)[-1]
        with self.server.lock:
            self.server.counts[op] += 1
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
        req = urllib.request.Request(self.server.upstream + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def run_playbook(playbook: Path, extra_vars: Path) -> tuple[float, str]:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"), ANSIBLE_NOCOLOR="1")
    started = time.perf_counter()
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, str(playbook), "-e", f"@{extra_vars}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"ansible-playbook failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    recap = next((line for line in proc.stdout.splitlines() if line.startswith("localhost")), "")
    return elapsed, recap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--luns", type=int, default=200)
    args = parser.parse_args()
    tasks = args.luns + 1

    with (
        tempfile.TemporaryDirectory(prefix="bench-modules-") as tmp,
        ZbsLiteProcess(Path(tmp) / "zbs", http_port=0) as zbs,
    ):
        if not zbs.http_url:
            sys.exit("zbs-lite did not report a plain-HTTP URL (--http-port)")
        proxy = CountingProxy(zbs.http_url.split("/v2/api")[0])
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        playbook = Path(tmp) / "luns.yml"
        playbook.write_text(PLAYBOOK.format(n=args.luns))
        extra = Path(tmp) / "vars.json"
        extra.write_text(
            json.dumps(
                {
                    "bench_host": f"http://127.0.0.1:{proxy.server_address[1]}",
                    "bench_username": zbs.username,
                    "bench_password": zbs.password,
                }
            )
        )
        extra.chmod(0o600)

        first, recap1 = run_playbook(playbook, extra)
        first_calls = sum(proxy.counts.values())
        proxy.counts.clear()
        second, recap2 = run_playbook(playbook, extra)
        calls = dict(proxy.counts)
        baseline_play = Path(tmp) / "ping.yml"
        baseline_play.write_text(BASELINE.format(n=args.luns))
        baseline, _ = run_playbook(baseline_play, extra)

        with ZbsClient(zbs.http_url, zbs.username, zbs.password) as client:
            client.targets.create("bench-batch", replica_num=1)
        iqns = {"a": "iqn.2004-10.com.example:bench1", "b": "iqn.2004-10.com.example:bench2"}
        batch_play = Path(tmp) / "batch.yml"
        batch_play.write_text(
            BATCH.format(n=args.luns, luns="\n".join(BATCH_LUN.format(i=i, **iqns) for i in range(args.luns)))
        )
        batch_first, batch_recap1 = run_playbook(batch_play, extra)
        proxy.counts.clear()
        batch_second, batch_recap2 = run_playbook(batch_play, extra)
        batch_calls = dict(proxy.counts)
        proxy.shutdown()
        one_ping_play = Path(tmp) / "one-ping.yml"
        one_ping_play.write_text(ONE_PING)
        one_ping, _ = run_playbook(one_ping_play, extra)

    total = sum(calls.values())
    reads = total - calls.get("login", 0)
    recap_first = recap1.split(":", 1)[-1].strip()
    recap_second = recap2.split(":", 1)[-1].strip()
    print(f"LUNs managed:                       {args.luns} ({tasks} module runs per playbook run)")
    print(f"first run (creates):                {first:.1f} s, {first_calls} API calls   [{recap_first}]")
    print(f"second run (no change):             {second:.1f} s, {total} API calls   [{recap_second}]")
    print(f"no-change API calls by operation:   {json.dumps(calls, sort_keys=True)}")
    per_login, per_read = calls.get("login", 0) / tasks, reads / tasks
    print(f"API calls per task, no-change run:  {total / tasks:.2f} (login {per_login:.2f}, reads {per_read:.2f})")
    print(f"same number of ansible.builtin.ping: {baseline:.1f} s (Ansible's own cost per module run)")
    print(f"ratio second/first run time:        {second / first:.2f}")
    print(f"ratio no-change run / ping run:      {second / baseline:.2f}")
    print()
    print(f"one zbs_luns task, first run:       {batch_first:.1f} s   [{batch_recap1.split(':', 1)[-1].strip()}]")
    print(f"one zbs_luns task, no change:       {batch_second:.1f} s   [{batch_recap2.split(':', 1)[-1].strip()}]")
    print(f"its API calls by operation:         {json.dumps(batch_calls, sort_keys=True)}")
    print(f"a playbook of one ansible.builtin.ping: {one_ping:.1f} s")
    print(f"ratio one task / loop, no change:   {batch_second / second:.3f} (goal <= 0.05)")
    print(f"ratio one task / one ping:          {batch_second / one_ping:.2f} (goal <= 3)")


if __name__ == "__main__":
    main()
