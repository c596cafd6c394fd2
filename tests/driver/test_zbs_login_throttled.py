"""A node whose logins back off (zbs-lite answers 429) gets UNAVAILABLE, which the sidecars retry.

Against a real zbs-lite: six wrong passwords from this host, then the right one is refused
unchecked for a while; the driver must not report that as INTERNAL (a bug) or as
UNAUTHENTICATED (wrong credentials).
"""

from __future__ import annotations

import grpc
import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import ZbsApiError, ZbsAuthError
from zbs_csi.zbs import map_error

from zbs_lite.testing import ZbsLiteProcess


def test_a_throttled_login_is_unavailable(tmp_path) -> None:
    with ZbsLiteProcess(tmp_path) as zl:
        wrong = ZbsClient(zl.api_url, zl.username, "not-the-password", ca_path=zl.ca_path)
        for _ in range(6):
            with pytest.raises(ZbsAuthError):
                wrong.login()
        right = ZbsClient(zl.api_url, zl.username, zl.password, ca_path=zl.ca_path)
        with pytest.raises(ZbsApiError) as err:
            right.luns.list()
        assert err.value.status == 429 and err.value.code == "LoginThrottled"
        mapped = map_error(err.value, "CreateVolume pvc-1")
        assert mapped.code == grpc.StatusCode.UNAVAILABLE and "try again in" in mapped.message
