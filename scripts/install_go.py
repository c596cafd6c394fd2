"""Provide the pinned Go toolchain (scripts/go-toolchain.txt); print the directory holding its ``go``.

    python3 scripts/install_go.py --dest .cache/go     # the bin dir of a go of the pinned version

A ``go`` on PATH of exactly the pinned version is used as it is. Otherwise the toolchain is
fetched the way ``GOTOOLCHAIN`` fetches one: the module ``golang.org/toolchain`` at
``v0.0.1-go<version>.<os>-<arch>`` from the Go module proxy (``$GOPROXY``'s first http(s) or
file URL, default https://proxy.golang.org). That needs no Go at all, which matters on a
fresh Debian 12 whose own golang-go is 1.19, and works where only the module proxy is
reachable (``go install golang.org/dl/goX.Y.Z`` would need an existing Go and dl.google.com).
The zip is checked against the pinned sha256 before anything is unpacked, and is unpacked
into a temporary directory renamed into place, so an interrupted install is never used.
Standard library only: it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

PIN_FILE = Path(__file__).with_name("go-toolchain.txt")
DEFAULT_PROXY = "https://proxy.golang.org"
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class InstallError(Exception):
    pass


@dataclass(frozen=True)
class Pin:
    version: str
    sha256: dict[str, str]  # platform ("linux-amd64") -> sha256 of the module zip

    @property
    def go_version(self) -> str:
        return f"go{self.version}"

    def module_version(self, plat: str) -> str:
        return f"v0.0.1-go{self.version}.{plat}"


def read_pin(path: Path = PIN_FILE) -> Pin:
    version, hashes = "", {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) != 2:
            continue
        if words[0] == "version":
            version = words[1]
        else:
            hashes[words[0]] = words[1].lower()
    if not version or not hashes:
        raise InstallError(f"{path}: needs a 'version' line and at least one '<os>-<arch> <sha256>' line")
    return Pin(version, hashes)


def this_platform() -> str:
    arch = ARCHES.get(platform.machine().lower())
    if sys.platform != "linux" or arch is None:
        raise InstallError(f"no pinned Go toolchain for {sys.platform}/{platform.machine()}")
    return f"linux-{arch}"


def proxy_url(goproxy: str | None) -> str:
    """The first fetchable entry of a GOPROXY list (``off``/``direct`` fetch nothing)."""
    for entry in (goproxy or DEFAULT_PROXY).replace("|", ",").split(","):
        entry = entry.strip()
        if entry.startswith(("https://", "http://", "file://")):
            return entry.rstrip("/")
    raise InstallError(f"GOPROXY={goproxy!r} names no proxy to fetch golang.org/toolchain from")


def go_version_of(go: Path) -> str:
    """``go1.26.8`` for a working go binary, "" when it does not run."""
    try:
        out = subprocess.run(
            [str(go), "env", "GOVERSION"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "GOTOOLCHAIN": "local"},
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip()


def fetch(url: str, dest: Path, want_sha256: str) -> None:
    """Download ``url`` to ``dest``, refusing it unless its sha256 is ``want_sha256``."""
    digest = hashlib.sha256()
    print(f"[install-go] fetching {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, dest.open("wb") as out:  # noqa: S310 - pinned hash
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise InstallError(f"cannot fetch {url}: {exc}") from exc
    if digest.hexdigest() != want_sha256:
        raise InstallError(f"{url}: sha256 {digest.hexdigest()} is not the pinned {want_sha256}; not installing it")


def unpack(archive: Path, prefix: str, dest: Path) -> None:
    """Unpack the entries under ``prefix`` into ``dest``, keeping their modes; nothing may escape ``dest``."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(prefix):
                raise InstallError(f"{archive.name}: unexpected entry {info.filename!r}")
            rel = info.filename[len(prefix) :]
            target = (dest / rel).resolve()
            if target != root and root not in target.parents:
                raise InstallError(f"{archive.name}: entry {info.filename!r} leaves the install directory")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode or 0o644)


def install(pin: Pin, dest: Path, goproxy: str | None, plat: str) -> Path:
    """``dest/go<version>`` holding the pinned toolchain (fetched unless already there); its bin dir."""
    if plat not in pin.sha256:
        raise InstallError(f"no pinned sha256 for {plat} in {PIN_FILE.name}")
    final = dest / pin.go_version
    if go_version_of(final / "bin" / "go") == pin.go_version:
        return final / "bin"
    dest.mkdir(parents=True, exist_ok=True)
    module = pin.module_version(plat)
    url = f"{proxy_url(goproxy)}/golang.org/toolchain/@v/{module}.zip"
    with tempfile.TemporaryDirectory(dir=dest, prefix=".install-") as tmp:
        archive = Path(tmp) / "toolchain.zip"
        fetch(url, archive, pin.sha256[plat])
        staged = Path(tmp) / "go"
        unpack(archive, f"golang.org/toolchain@{module}/", staged)
        if go_version_of(staged / "bin" / "go") != pin.go_version:
            raise InstallError(f"the unpacked toolchain does not run as {pin.go_version}")
        shutil.rmtree(final, ignore_errors=True)
        staged.rename(final)
    print(f"[install-go] installed {pin.go_version} in {final}", file=sys.stderr)
    return final / "bin"


def ensure(pin: Pin, dest: Path, goproxy: str | None, *, use_path: bool = True) -> Path:
    """The bin dir of a go of the pinned version: the one on PATH if it is that version, else ours."""
    if use_path:
        found = shutil.which("go")
        if found and go_version_of(Path(found)) == pin.go_version:
            return Path(found).resolve().parent
    return install(pin, dest, goproxy, this_platform())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dest", type=Path, required=True, help="where toolchains are installed (go<version>/)")
    parser.add_argument("--no-path", action="store_true", help="ignore a go on PATH; always use the pinned install")
    args = parser.parse_args(argv)
    try:
        print(ensure(read_pin(), args.dest.absolute(), os.environ.get("GOPROXY"), use_path=not args.no_path))
    except InstallError as exc:
        print(f"[install-go] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
