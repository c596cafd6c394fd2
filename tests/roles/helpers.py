"""Run playbooks of this collection with the venv's Ansible, against localhost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def collections_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private collections path with smartx.zbs pointing at this checkout."""
    base = tmp_path_factory.mktemp("collections")
    (base / "ansible_collections" / "smartx").mkdir(parents=True)
    (base / "ansible_collections" / "smartx" / "zbs").symlink_to(ROOT)
    return base


class PlaybookRunner:
    """Runs ansible-playbook against localhost (local connection) and reports the recap."""

    def __init__(self, collections: Path, workdir: Path) -> None:
        self.collections = collections
        self.workdir = workdir

    def run(
        self, playbook: Path, extra_vars: dict | None = None, check: bool = True, args: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        vars_file = self.workdir / f"vars-{os.getpid()}-{id(extra_vars)}.json"
        variables = {"ansible_python_interpreter": sys.executable, **(extra_vars or {})}
        vars_file.write_text(json.dumps(variables))
        env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(self.collections),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(self.workdir / "ansible-tmp"),
        }
        cmd = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-c",
            "local",
            "-i",
            "localhost,",
            str(playbook),
            "-e",
            f"@{vars_file}",
            *args,
        ]
        proc = subprocess.run(cmd, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ansible-playbook failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
            )
        return proc


def recap(stdout: str) -> dict[str, int]:
    """The localhost line of the PLAY RECAP as numbers (ok, changed, failed, ...)."""
    for line in stdout.splitlines():
        if line.startswith("localhost") and "ok=" in line:
            return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}
    raise AssertionError(f"no recap in output:\n{stdout[-2000:]}")


@pytest.fixture(scope="session")
def playbook_runner(collections_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlaybookRunner]:
    yield PlaybookRunner(collections_path, tmp_path_factory.mktemp("playbook"))
