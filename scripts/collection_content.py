"""The one definition of what the smartx.zbs collection is, and the checks derived from it.

The repository root is the collection and also holds what is not collection content: the CSI
driver, zbs-lite, benchmarks, scripts and the test roots of those. Four things must agree on
the line between the two, and all four come from the lists below:

* ``galaxy.yml`` ``build_ignore`` (what ``ansible-galaxy collection build`` leaves out),
  checked by ``check-galaxy`` (it prints the list to paste when they differ);
* the built tarball, checked against the allow-list by ``check-tarball``;
* the collection copy ansible-test runs in (scripts/test.sh), made with ``rsync-filter``;
* ``driver/Containerfile.ignore`` (the driver image's build context), checked by ``check-image``.

    python3 scripts/collection_content.py check-galaxy
    python3 scripts/collection_content.py check-tarball smartx-zbs-0.1.0.tar.gz
    python3 scripts/collection_content.py rsync-filter
    python3 scripts/collection_content.py check-image
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The collection, as paths from the repository root (a directory stands for all under it).
CONTENT = (
    "COPYING",
    "README.md",
    "changelogs",
    "docs",
    "extensions",
    "meta",
    "playbooks",
    "plugins",
    "roles",
    "tests/config.yml",
    "tests/integration",
    "tests/unit",
)
#: Source of the collection that the build turns into MANIFEST.json/FILES.json.
METADATA = ("galaxy.yml",)
#: What `ansible-galaxy collection build` adds.
BUILT = ("MANIFEST.json", "FILES.json")
#: Never collection content, wherever they appear: caches, build products, test output.
NEVER = ("__pycache__", "*.pyc", "*.egg-info", "tests/output")
#: Local-only entries at the root that git does not track (venvs, caches, outputs).
LOCAL = (".ansible", ".git", ".cache", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv", "build", "dist",
         "quickstart-out", "*.tar.gz")  # fmt: skip
#: The driver image's build context (driver/Containerfile): the driver and the client it imports.
IMAGE = (
    "galaxy.yml",
    "meta",
    "plugins/module_utils",
    "driver/pyproject.toml",
    "driver/README.md",
    "driver/zbs_csi",
    "scripts/gen-proto.sh",
)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _never(path: str) -> bool:
    parts = path.split("/")
    return _under(path, ("tests/output",)) or any(
        fnmatch.fnmatch(part, pattern) for part in parts for pattern in NEVER if "/" not in pattern
    )


def tracked_entries() -> list[str]:
    """Every path git tracks, relative to the root."""
    git = shutil.which("git")
    if git is None:
        raise SystemExit("collection_content.py: git is needed to list the tracked files")
    out = subprocess.run(
        [git, "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True, check=True, timeout=60
    )
    return [p for p in out.stdout.split("\0") if p]


def build_ignore(tracked: list[str]) -> list[str]:
    """What galaxy.yml must ignore: every tracked entry outside the content (as shallow as
    possible), the local-only entries, and the never-content patterns."""
    ignore: set[str] = set()
    for path in tracked:
        if _under(path, CONTENT + METADATA):
            continue
        parts = path.split("/")
        # the shallowest ancestor that holds no content
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if not any(c == prefix or c.startswith(prefix + "/") for c in CONTENT):
                ignore.add(prefix)
                break
    ignore.update(LOCAL)
    # build_ignore patterns are fnmatch patterns on whole relative paths, where * spans "/".
    ignore.update(p if "/" in p or p.startswith("*") else f"**/{p}" for p in NEVER)
    return sorted(ignore)


def galaxy_build_ignore(galaxy: Path) -> list[str]:
    """The build_ignore list of galaxy.yml (a flat YAML list; read without a YAML library)."""
    lines = galaxy.read_text(encoding="utf-8").splitlines()
    start = lines.index("build_ignore:") + 1
    out = []
    for line in lines[start:]:
        m = re.match(r"^\s+-\s+(.+?)\s*$", line)
        if not m:
            break
        out.append(m[1].strip("'\""))
    return out


def check_galaxy() -> list[str]:
    have = galaxy_build_ignore(ROOT / "galaxy.yml")
    want = build_ignore(tracked_entries())
    if sorted(have) == want:
        return []
    return [
        "galaxy.yml build_ignore does not match scripts/collection_content.py; it should read:",
        "build_ignore:",
        *(f'  - "{p}"' if p[0] in "*." else f"  - {p}" for p in want),
    ]


def check_tarball(path: Path) -> list[str]:
    """Every entry of the built collection is content (or the build's own files); all content is there."""
    with tarfile.open(path) as tar:
        names = [n.removeprefix("./").rstrip("/") for n in tar.getnames()]
    names = [n for n in names if n and n != "."]
    parents = {c.rsplit("/", 1)[0] for c in CONTENT if "/" in c}
    problems = [
        f"{path.name}: not collection content: {n}" for n in names if not (_under(n, CONTENT + BUILT) or n in parents)
    ]
    problems += [f"{path.name}: must never be shipped: {n}" for n in names if _never(n)]
    problems += [f"{path.name}: missing {c}" for c in CONTENT + BUILT if not any(_under(n, (c,)) for n in names)]
    print(f"{path.name}: {len(names)} entries, {len(problems)} problems")
    return problems


def rsync_filter() -> list[str]:
    """rsync rules that copy exactly the content (plus galaxy.yml) of a checkout."""
    never = [f"--exclude={p}" for p in NEVER if "/" not in p] + [f"--exclude=/{p}" for p in NEVER if "/" in p]
    parents: list[str] = []
    content: list[str] = []
    for path in CONTENT + METADATA:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "--include=/" + "/".join(parts[:depth]) + "/"
            if parent not in parents:
                parents.append(parent)
        content += [f"--include=/{path}", f"--include=/{path}/***"]
    return [*never, *parents, *content, "--exclude=*"]


def image_allow_list(ignorefile: Path) -> list[str]:
    lines = [line.strip() for line in ignorefile.read_text(encoding="utf-8").splitlines()]
    return [line[1:] for line in lines if line.startswith("!")]


def check_image() -> list[str]:
    ignorefile = ROOT / "driver" / "Containerfile.ignore"
    problems = []
    if image_allow_list(ignorefile) != list(IMAGE):
        problems.append(f"{ignorefile.relative_to(ROOT)} must admit exactly: {', '.join(IMAGE)}")
    problems += [
        f"image context {p} is neither collection content nor driver/ or scripts/"
        for p in IMAGE
        if not _under(p, CONTENT + METADATA + ("driver", "scripts"))
    ]
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["rsync-filter"]:
        print("\n".join(rsync_filter()))
        return 0
    if argv[:1] == ["check-galaxy"]:
        problems = check_galaxy()
    elif argv[:1] == ["check-tarball"] and len(argv) == 2:
        problems = check_tarball(Path(argv[1]))
    elif argv[:1] == ["check-image"]:
        problems = check_image()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
