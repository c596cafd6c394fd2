"""Run plays with the venv's ansible-playbook against a zbs-lite, as a user's playbook would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from zbs_lite.testing import ZbsLiteProcess

ROOT = Path(__file__).resolve().parents[2]

#: Values for the variables the examples take from a vault.
SECRETS = {
    "vault_node1_chap_secret": "Node1ChapSecret01",
    "vault_db_target_secret": "DbTargetSecret01",
}

#: Hosts the examples loop over (groups['k8s_nodes']), as the zbs_node role leaves them.
INVENTORY = """\
localhost ansible_connection=local
[k8s_nodes]
node-a ansible_connection=local zbs_node_initiator_iqn=iqn.2004-10.com.example:node-a
node-b ansible_connection=local zbs_node_initiator_iqn=iqn.2004-10.com.example:node-b
"""


class Playbooks:
    """Writes plays to a file and runs them; the connection comes in as variables and ZBS_* variables."""

    def __init__(self, zbs: ZbsLiteProcess, workdir: Path) -> None:
        self.zbs = zbs
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        collections = workdir / "collections" / "ansible_collections" / "smartx"
        collections.mkdir(parents=True)
        (collections / "zbs").symlink_to(ROOT)
        self.inventory = workdir / "hosts"
        self.inventory.write_text(INVENTORY)

    def connection_vars(self) -> dict[str, str]:
        return {
            "zbs_host": self.zbs.api_url,
            "zbs_username": self.zbs.username,
            "zbs_password": self.zbs.password,
            "zbs_ca_path": self.zbs.ca_path,
        }

    def run(self, plays: list[dict[str, Any]], name: str, *, check: bool = False) -> subprocess.CompletedProcess[str]:
        playbook = self.workdir / f"{name}.yml"
        playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
        variables = self.workdir / f"{name}-vars.json"
        variables.write_text(json.dumps({**self.connection_vars(), **SECRETS}))
        variables.chmod(0o600)
        env = {
            **os.environ,
            **self.zbs.env,
            "ANSIBLE_COLLECTIONS_PATH": str(self.workdir / "collections"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(self.workdir / "tmp"),
            "ANSIBLE_LOCALHOST_WARNING": "false",
        }
        cmd = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(self.inventory),
            str(playbook),
            "-e",
            f"@{variables}",
        ]
        if check:
            cmd.append("--check")
        proc = subprocess.run(cmd, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise AssertionError(
                f"ansible-playbook {name} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def wrap(self, tasks: list[dict[str, Any]], name: str) -> dict[str, Any]:
        """A play on localhost running ``tasks`` with the connection set once, as docs/modules.md says."""
        return {
            "name": name,
            "hosts": "localhost",
            "gather_facts": False,
            "module_defaults": {
                "group/smartx.zbs.zbs": {
                    "host": "{{ zbs_host }}",
                    "username": "{{ zbs_username }}",
                    "password": "{{ zbs_password }}",
                    "ca_path": "{{ zbs_ca_path }}",
                }
            },
            "tasks": tasks,
        }
