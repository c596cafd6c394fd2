"""The Kubernetes scenarios run against a lab that ``scripts/k8s-lab.sh up`` started (the k8s
stage of scripts/test.sh starts one, runs these tests, and tears it down): K8S_LAB_DIR names it.
Each test works in a namespace of its own and leaves the cluster, ZBS and the host as it
found them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from kube import Lab, namespace


@pytest.fixture(scope="session")
def lab() -> Lab:
    lab_dir = os.environ.get("K8S_LAB_DIR", "")
    if not lab_dir or not os.path.exists(os.path.join(lab_dir, "lab.env")):
        pytest.skip("no running lab: scripts/k8s-lab.sh up, then K8S_LAB_DIR=<its dir> (see docs/development.md)")
    return Lab.from_dir(lab_dir)


@pytest.fixture
def ns(lab: Lab, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted with everything in it afterwards."""
    name = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-")
    lab.apply(namespace(name))
    try:
        yield name
    finally:
        lab.kubectl("delete", "namespace", name, "--ignore-not-found", "--timeout=300s", timeout=330)
