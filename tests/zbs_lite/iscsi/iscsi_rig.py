"""Test helpers: a data plane on random loopback addresses with an in-memory catalog.

Every test gets its own `DataPlane` (VIP + 3 chunks on a random 127.x.y.0/24 and random
ports), so parallel runs never collide and no management plane is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from zbs_lite.catalog import LunView, MemoryCatalog, TargetView
from zbs_lite.iscsi import DataPlane

IQN_A = "iqn.2020-01.io.zbs-test:node-a"
IQN_B = "iqn.2020-01.io.zbs-test:node-b"
MIB = 1 << 20


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def run(argv: list[str], *, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=timeout, env=full_env, check=False
    )


def qemu_io(portal: str, target: str, lun: int, initiator: str, *commands: str) -> str:
    """qemu-io through libiscsi; the output, after checking that every command succeeded."""
    opts = f"driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={portal},file.target={target}"
    opts += f",file.lun={lun},file.initiator-name={initiator}"
    argv = ["qemu-io", "--image-opts"]
    for c in commands:
        argv += ["-c", c]
    r = run([*argv, opts])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Pattern verification failed" not in r.stdout and "failed" not in r.stdout.lower(), r.stdout
    return r.stdout


def target_iqn(name: str) -> str:
    return f"iqn.2016-02.com.smartx:system:{name}"


@dataclass
class Rig:
    catalog: MemoryCatalog
    plane: DataPlane
    dir: Path
    luns: dict[str, LunView] = field(default_factory=dict)

    def add_target(self, name: str, **kw: object) -> TargetView:
        t = TargetView(id=f"tgt-{name}", name=name, iqn=target_iqn(name), **kw)  # type: ignore[arg-type]
        self.catalog.put_target(t)
        return t

    def add_lun(self, target: TargetView, lun_id: int, size: int = 64 * MIB, **kw: object) -> LunView:
        path = self.dir / f"{target.name}-{lun_id}.img"
        with open(path, "wb") as f:
            f.truncate(size)
        lun = LunView(
            id=f"lun-{target.name}-{lun_id}",
            local_id=str(uuid.uuid4()),
            name=f"lun{lun_id}",
            lun_id=lun_id,
            target_id=target.id,
            size=size,
            path=str(path),
            **kw,  # type: ignore[arg-type]
        )
        self.catalog.put_lun(lun)
        self.luns[lun.id] = lun
        return lun

    def update_lun(self, lun: LunView, **changes: object) -> LunView:
        new = replace(lun, **changes)  # type: ignore[arg-type]
        self.catalog.put_lun(new)
        self.luns[new.id] = new
        return new

    @property
    def vip(self) -> str:
        st = self.plane.status()
        return str(st["vip"])

    def chunk(self, n: int) -> str:
        return str(self.plane.status()["chunks"][n - 1]["portal"])

    def hostport(self, portal: str) -> tuple[str, int]:
        host, port = portal.rsplit(":", 1)
        return host, int(port)

    def qemu_io(self, lun: LunView, *commands: str, portal: str | None = None, initiator: str = IQN_A) -> str:
        """Run qemu-io commands on the LUN as `initiator` (qemu takes the IQN only as a block option)."""
        target = next(t for t in self.catalog.snapshot().targets() if t.id == lun.target_id)
        return qemu_io(portal or self.vip, target.iqn, lun.lun_id, initiator, *commands)

    def serving_chunk(self) -> int:
        """The chunk that carries sessions right now (the tests use one initiator at a time)."""
        busy = [c["n"] for c in self.plane.status()["chunks"] if c["sessions"]]
        assert len(busy) == 1, self.plane.status()
        return int(busy[0])


def random_net() -> str:
    return f"127.{random.randint(2, 250)}.{random.randint(2, 250)}"


@contextlib.contextmanager
def make_rig(tmp_path: Path, **plane_options: Any) -> Iterator[Rig]:
    """A data plane (VIP + 3 chunks) on a random loopback network, with `DataPlane` options."""
    logging.getLogger("zbs_lite.iscsi").setLevel(logging.INFO)
    net = random_net()
    catalog = MemoryCatalog()
    plane = DataPlane(catalog, (f"{net}.100", 0), [(f"{net}.{i}", 0) for i in (1, 2, 3)], **plane_options)
    plane.start()
    try:
        yield Rig(catalog, plane, tmp_path)
    finally:
        plane.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path) as r:
        yield r
