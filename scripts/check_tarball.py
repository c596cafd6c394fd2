"""Check that a built collection tarball holds the collection and nothing else."""

from __future__ import annotations

import sys
import tarfile

FORBIDDEN_PREFIXES = ("driver/", "zbs_lite/", "bench/", "scripts/", ".venv/", ".cache/", ".git/", "tests/output/")
REQUIRED = ("MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml")


def main(path: str) -> int:
    with tarfile.open(path) as tar:
        names = tar.getnames()
    bad = [n for n in names if n.startswith(FORBIDDEN_PREFIXES) or "__pycache__" in n or n.endswith(".pyc")]
    missing = [r for r in REQUIRED if r not in names]
    for n in bad:
        print(f"{path}: must not contain {n}")
    for r in missing:
        print(f"{path}: missing {r}")
    print(f"{path}: {len(names)} entries, {len(bad)} forbidden, {len(missing)} missing")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
