"""scripts/install_go.py: the pinned Go toolchain from the Go module proxy, checked and unpacked.

Most tests serve a small stand-in toolchain zip from a file:// GOPROXY (its ``bin/go`` is a
shell script answering ``go env GOVERSION``), so the install logic runs in a second; one test
fetches the real pinned toolchain from the proxy, as setup does on a fresh machine.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import install_go
import pytest

PLAT = install_go.this_platform()


def fake_proxy(tmp: Path, version: str, *, extra: dict[str, str] | None = None) -> tuple[str, str]:
    """A file:// GOPROXY serving a stand-in golang.org/toolchain zip; (proxy URL, zip sha256)."""
    module = f"v0.0.1-go{version}.{PLAT}"
    at = tmp / "proxy" / "golang.org" / "toolchain" / "@v"
    at.mkdir(parents=True)
    archive = at / f"{module}.zip"
    prefix = f"golang.org/toolchain@{module}/"
    with zipfile.ZipFile(archive, "w") as zf:
        go = zipfile.ZipInfo(prefix + "bin/go")
        go.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(go, f"#!/bin/sh\necho go{version}\n")
        zf.writestr(prefix + "VERSION", f"go{version}\n")
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return f"file://{tmp / 'proxy'}", hashlib.sha256(archive.read_bytes()).hexdigest()


def test_installs_checks_and_reuses_the_pinned_toolchain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, digest = fake_proxy(tmp_path, "1.99.1")
    pin = install_go.Pin("1.99.1", {PLAT: digest})
    bin_dir = install_go.install(pin, tmp_path / "dest", proxy, PLAT)
    assert bin_dir == tmp_path / "dest" / "go1.99.1" / "bin"
    assert os.access(bin_dir / "go", os.X_OK), "the unpacked go keeps its mode"
    assert subprocess.run([bin_dir / "go", "env", "GOVERSION"], capture_output=True, text=True).stdout == "go1.99.1\n"
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["go1.99.1"], "no temporary directory is left"

    def no_fetch(*_a: object) -> None:
        raise AssertionError("a second install must not fetch again")

    monkeypatch.setattr(install_go, "fetch", no_fetch)
    assert install_go.install(pin, tmp_path / "dest", proxy, PLAT) == bin_dir


def test_a_zip_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    proxy, _ = fake_proxy(tmp_path, "1.99.1")
    pin = install_go.Pin("1.99.1", {PLAT: "0" * 64})
    with pytest.raises(install_go.InstallError, match="not the pinned"):
        install_go.install(pin, tmp_path / "dest", proxy, PLAT)
    assert list((tmp_path / "dest").iterdir()) == [], "nothing of a refused toolchain stays"


def test_an_entry_escaping_the_install_directory_is_refused(tmp_path: Path) -> None:
    module = f"v0.0.1-go1.99.1.{PLAT}"
    proxy, digest = fake_proxy(tmp_path, "1.99.1", extra={f"golang.org/toolchain@{module}/../../evil": "x"})
    with pytest.raises(install_go.InstallError, match="leaves the install directory"):
        install_go.install(install_go.Pin("1.99.1", {PLAT: digest}), tmp_path / "dest", proxy, PLAT)
    assert not (tmp_path / "evil").exists()


def test_a_go_of_the_pinned_version_on_path_is_used_another_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, digest = fake_proxy(tmp_path, "1.99.1")
    pin = install_go.Pin("1.99.1", {PLAT: digest})
    system = tmp_path / "system-bin"
    system.mkdir()
    (system / "go").write_text("#!/bin/sh\necho go1.99.1\n")
    (system / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{system}:/usr/bin:/bin")
    assert install_go.ensure(pin, tmp_path / "dest", proxy) == system
    assert install_go.ensure(pin, tmp_path / "dest", proxy, use_path=False) == tmp_path / "dest" / "go1.99.1" / "bin"
    (system / "go").write_text("#!/bin/sh\necho go1.19.8\n")
    assert install_go.ensure(pin, tmp_path / "dest2", proxy) == tmp_path / "dest2" / "go1.99.1" / "bin"


def test_goproxy_lists_and_the_pin_file() -> None:
    assert install_go.proxy_url(None) == "https://proxy.golang.org"
    assert install_go.proxy_url("off,https://mirror.example/go/,direct") == "https://mirror.example/go"
    with pytest.raises(install_go.InstallError):
        install_go.proxy_url("direct")
    pin = install_go.read_pin()
    assert pin.version.count(".") == 2 and set(pin.sha256) >= {"linux-amd64", "linux-arm64"}


def test_the_real_pinned_toolchain_installs_from_the_module_proxy(tmp_path: Path) -> None:
    """What setup does on a machine without that Go: fetch, check the pinned sha256, unpack, run."""
    pin = install_go.read_pin()
    bin_dir = install_go.install(pin, tmp_path, os.environ.get("GOPROXY"), PLAT)
    out = subprocess.run([bin_dir / "go", "version"], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith(f"go version go{pin.version} ")
