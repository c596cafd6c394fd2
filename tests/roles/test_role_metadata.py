"""Role metadata a user relies on: every default documented and validated, OS variables complete.

No RHEL-family image can be built from the mirrors reachable here, so the RHEL variables are
checked here (same keys as Debian's, RHEL package names) rather than by a converge.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .helpers import ROOT

ROLES = ["zbs_node", "zbs_csi", "zbs_lite"]


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_cover_every_default_with_the_same_value(role: str) -> None:
    defaults = _yaml(ROOT / "roles" / role / "defaults" / "main.yml")
    options = _yaml(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), "defaults and argument_specs list different variables"
    for name, value in defaults.items():
        assert name.startswith(f"{role}_"), f"{name} lacks the role prefix"
        assert options[name].get("default") == value, f"{name}: argument_specs default differs from defaults/main.yml"
        assert options[name].get("description"), f"{name} is undocumented"


@pytest.mark.parametrize("role", ["zbs_node", "zbs_lite"])
def test_every_os_defines_the_same_variables(role: str) -> None:
    files = {p.stem: _yaml(p) for p in (ROOT / "roles" / role / "vars").glob("*.yml") if p.stem != "main"}
    assert {"Debian", "RedHat"} <= set(files)
    reference = set(files["Debian"])
    for os_name, data in files.items():
        missing = reference - set(data)
        assert not missing, f"vars/{os_name}.yml lacks {sorted(missing)}"
        assert all(k.startswith(f"__{role}_") for k in data), f"vars/{os_name}.yml: internal names need __{role}_"


def test_rhel_node_packages_and_paths_are_the_rhel_ones() -> None:
    rhel = _yaml(ROOT / "roles" / "zbs_node" / "vars" / "RedHat.yml")
    assert {"iscsi-initiator-utils", "device-mapper-multipath", "sg3_utils"} <= set(rhel["__zbs_node_packages"])
    assert rhel["__zbs_node_iscsi_ifaces_dir"] == "/var/lib/iscsi/ifaces"
    assert rhel["__zbs_node_selinux"] is True
    assert "policycoreutils-python-utils" in rhel["__zbs_node_selinux_packages"]
    assert rhel["__zbs_node_iqn_default_prefix"].startswith("iqn.1994-05.com.redhat")
