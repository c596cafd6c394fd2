"""The client against a real zbs-lite: LUN sizes checked before the API, and errors a user can trace.

Issue #11 finding 6 (a 1-511 byte LUN broke the data plane) is refused by the client before
any request; an API error carries the answer's ``x-tower-request-id``, which zbs-lite's log
line for that request repeats.
"""

from __future__ import annotations

import time
import uuid

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import ZbsApiError, ZbsValidationError
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import validate_lun_size

from zbs_lite.testing import ZbsLiteProcess

MiB = 1 << 20


@pytest.fixture
def client(zbs_lite: ZbsLiteProcess):
    with ZbsClient(zbs_lite.api_url, zbs_lite.username, zbs_lite.password, ca_path=zbs_lite.ca_path) as c:
        yield c


@pytest.mark.parametrize("size", [1, 100, 511, 513, "1000B", "0.25KiB", MiB + 1])
def test_sizes_that_are_not_whole_blocks_never_reach_the_api(client: ZbsClient, size) -> None:
    with pytest.raises(ZbsValidationError, match="whole 512-byte blocks"):
        validate_lun_size(size)
    name = f"t{uuid.uuid4().hex[:8]}"
    target = client.targets.create(name=name, replica_num=2)
    client.stats.by_op.clear()
    with pytest.raises(ZbsValidationError, match="whole 512-byte blocks") as err:
        client.luns.create(name="tiny", iscsi_target_id=target["id"], assigned_size=size, replica_num=2)
    assert err.value.field == "assigned_size"
    assert "create-iscsi-lun" not in client.stats.by_op
    lun = client.luns.create(name="ok", iscsi_target_id=target["id"], assigned_size=MiB, replica_num=2)
    with pytest.raises(ZbsValidationError, match="whole 512-byte blocks"):
        client.luns.update(lun["id"], assigned_size=size if isinstance(size, str) else MiB + size)
    assert "update-iscsi-lun" not in client.stats.by_op
    assert validate_lun_size("0.5KiB") == 512 and validate_lun_size("1.5KiB") == 1536
    client.luns.delete(lun["id"])
    client.targets.delete(target["id"])


def test_an_api_error_names_the_request_the_server_logged(client: ZbsClient, zbs_lite: ZbsLiteProcess) -> None:
    with pytest.raises(ZbsApiError) as err:
        client.request("get-iscsi-luns", {"where": {"no_such_field": 1}})
    request_id = err.value.request_id
    assert request_id and err.value.code == "InvalidInput"
    assert err.value.to_dict()["request_id"] == request_id
    deadline = time.monotonic() + 10
    while request_id not in zbs_lite.log_tail(200_000) and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(x for x in zbs_lite.log_tail(200_000).splitlines() if request_id in x)
    assert "get-iscsi-luns -> 400" in line
