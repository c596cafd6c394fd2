# Copyright: (c) 2026, SmartX
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Ansible glue's pure helpers: change computation, immutability, secret redaction, the connection table."""

from __future__ import annotations

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils import zbs_ansible
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import ZbsValidationError


def test_changed_fields_ignores_unset_and_equal_values():
    current = {"description": "a", "iops": 100, "bps": None}
    assert zbs_ansible.changed_fields(current, {"description": "a", "iops": None}) == {}
    assert zbs_ansible.changed_fields(current, {"description": "b", "iops": 100}) == {"description": "b"}


def test_changed_fields_null_means():
    current = {"iops": None, "description": None}
    nulls = {"iops": 0, "description": ""}
    assert zbs_ansible.changed_fields(current, {"iops": 0, "description": ""}, nulls) == {}
    assert zbs_ansible.changed_fields(current, {"iops": 5}, nulls) == {"iops": 5}


def test_check_immutable_names_the_field():
    with pytest.raises(ZbsValidationError) as exc:
        zbs_ansible.check_immutable({"stripe_num": 8}, {"stripe_num": 4}, ("stripe_num",), "update-iscsi-target", "t")
    assert exc.value.field == "stripe_num"
    assert str(exc.value).startswith("update-iscsi-target t: stripe_num: cannot be changed")
    zbs_ansible.check_immutable({"stripe_num": 8}, {"stripe_num": None}, ("stripe_num",), "op", "t")


def test_redact_hides_every_chap_secret_and_keeps_the_rest():
    target = {
        "name": "db",
        "chap_secret": "TargetSecret1",
        "initiator_chaps": [
            {"initiator_iqn": "iqn.2004-10.com.example:a", "chap_name": "a", "chap_secret": "S3cret0000001"}
        ],
    }
    out = zbs_ansible.redact(target)
    assert "TargetSecret1" not in str(out) and "S3cret0000001" not in str(out)
    assert out["initiator_chaps"][0]["chap_name"] == "a"
    assert target["chap_secret"] == "TargetSecret1", "the original is not modified"
    assert zbs_ansible.redact(None) is None


def test_connection_spec_has_env_fallbacks_and_no_log_password():
    spec = zbs_ansible.connection_argument_spec()
    assert spec["password"]["no_log"] is True
    assert spec["validate_certs"]["default"] is True
    assert {opt.env for opt in zbs_ansible.CONNECTION_OPTIONS} == {
        "ZBS_HOST",
        "ZBS_USERNAME",
        "ZBS_PASSWORD",
        "ZBS_VALIDATE_CERTS",
        "ZBS_CA_PATH",
        "ZBS_TIMEOUT",
        "ZBS_CONNECT_TIMEOUT",
    }
    assert spec["wait_timeout"]["default"] == 300.0
