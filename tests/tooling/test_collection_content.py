"""scripts/collection_content.py: one definition of the collection, and everything agrees with it."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import collection_content as cc
import pytest

ROOT = Path(__file__).resolve().parents[2]


def tarball(tmp: Path, names: list[str]) -> Path:
    path = tmp / "smartx-zbs-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def complete() -> list[str]:
    return [*cc.BUILT, *(c if "." in c.rsplit("/", 1)[-1] or c == "COPYING" else f"{c}/x" for c in cc.CONTENT)]


def test_a_tarball_of_exactly_the_content_passes(tmp_path: Path) -> None:
    assert cc.check_tarball(tarball(tmp_path, complete())) == []


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("smartx_zbs.egg-info/PKG-INFO", "not collection content: smartx_zbs.egg-info/PKG-INFO"),
        ("zbs_lite/api.py", "not collection content: zbs_lite/api.py"),
        ("tests/zbs_lite/test_crash.py", "not collection content: tests/zbs_lite/test_crash.py"),
        ("plugins/module_utils/__pycache__/zbs_client.cpython-311.pyc", "must never be shipped"),
        ("tests/unit/plugins/x.egg-info/PKG-INFO", "must never be shipped"),
    ],
)
def test_anything_else_fails_the_tarball(tmp_path: Path, extra: str, problem: str) -> None:
    problems = cc.check_tarball(tarball(tmp_path, [*complete(), extra]))
    assert any(problem in p for p in problems), problems


def test_missing_content_fails_the_tarball(tmp_path: Path) -> None:
    names = [n for n in complete() if not n.startswith("roles/")]
    assert f"{tmp_path.joinpath('smartx-zbs-0.1.0.tar.gz').name}: missing roles" in cc.check_tarball(
        tarball(tmp_path, names)
    )


def test_galaxy_build_ignore_and_the_image_context_agree_with_the_definition() -> None:
    assert cc.check_galaxy() == []
    assert cc.check_image() == []


def test_the_ansible_test_copy_holds_exactly_the_tracked_content(tmp_path: Path) -> None:
    subprocess.run(["rsync", "-a", *cc.rsync_filter(), f"{ROOT}/", f"{tmp_path}/"], check=True, timeout=120)
    copied = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    tracked = {p for p in cc.tracked_entries() if cc._under(p, cc.CONTENT + cc.METADATA)}
    assert tracked <= copied, sorted(tracked - copied)[:10]
    outside = [p for p in copied if not cc._under(p, cc.CONTENT + cc.METADATA)]
    assert outside == [], outside[:10]
    assert not any(cc._never(p) for p in copied)
