"""Fidelity: what the client sends and what zbs-lite answers match SmartX's own OpenAPI schemas.

Every request body the client sends and every answer it gets (200s and ErrorBodies alike)
while driving every endpoint of the reference spec is validated against the CloudTower 4.6.0
schemas, strictly: a field that is missing, misnamed, mistyped or unknown fails the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections import defaultdict

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import Secret, ZbsClient
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import ZbsApiError
from client_openapi import Exchange, Spec, record_exchanges

from zbs_lite.errors import ErrorCode

MiB = 1 << 20
#: Fields zbs-api.md documents as our additions to the CloudTower schema (marked "(ours)");
#: a real CloudTower does not send them, so no consumer may depend on them.
DOCUMENTED_EXTENSIONS = {
    "get-iscsi-connections 200[0]: Additional properties are not allowed ('initiator_iqn' was unexpected)",
    "get-iscsi-connections 200[0].initiator_iqn: field not in the schema",
}
NODE = "iqn.2004-10.com.example:fidelity"
#: ErrorBody.code: CloudTower's ErrorCode enum has only ResourceLocked; zbs-lite returns a stable
#: code for every kind of error (docs/zbs-lite.md), which clients must treat as opaque strings.
_CODE_PROBLEM = re.compile(r"^\S+ \d{3}\.code: '(\w+)' is not one of \['ResourceLocked'\]$")


def _our_error_code(problem: str) -> bool:
    m = _CODE_PROBLEM.match(problem)
    return bool(m) and m[1] in {c.value for c in ErrorCode}


@pytest.fixture(scope="module")
def spec():
    return Spec()


def test_the_validator_catches_missing_misnamed_and_mistyped_fields(spec):
    """The check below is only worth something if it can fail."""
    schema = spec.request_schema("create-iscsi-lun")
    good = [{"name": "v", "iscsi_target_id": "t", "assigned_size": 1, "replica_num": 2}]
    assert spec.problems(good, schema, "req") == []
    missing = [{"name": "v", "iscsi_target_id": "t", "assigned_size": 1}]
    assert any("replica_num" in p for p in spec.problems(missing, schema, "req"))
    misnamed = [{"name": "v", "target_id": "t", "assigned_size": 1, "replica_num": 2}]
    assert "req[0].target_id: field not in the schema" in spec.problems(misnamed, schema, "req")
    mistyped = [{"name": "v", "iscsi_target_id": "t", "assigned_size": "1GiB", "replica_num": 2}]
    assert any("assigned_size" in p for p in spec.problems(mistyped, schema, "req"))
    lun = spec.response_schema("get-iscsi-luns", 200)
    assert any("io_size" in p for p in spec.problems([{"id": "x"}], lun, "resp"))
    assert spec.problems({"message": "m", "status": 400, "path": "/p"}, spec.response_schema("login", 400), "e") == []
    target = spec.response_schema("get-iscsi-targets", 200)
    ok_target = {
        "chap_enabled": False, "cluster": {"id": "c", "name": "n"}, "description": "", "external_use": False,
        "id": "t", "internal": False, "ip_whitelist": "*/*", "iqn_name": "iqn.2016-02.com.smartx:system:t",
        "iqn_whitelist": "*/*", "local_id": "u", "name": "t", "replica_num": 2, "stripe_num": 8,
        "stripe_size": 262144, "thin_provision": True, "entityAsyncStatus": None,
    }  # fmt: skip
    assert spec.problems([ok_target], target, "resp") == []  # null where the spec allows it
    assert spec.problems([dict(ok_target, entityAsyncStatus="BUSY")], target, "resp")  # a wrong enum is caught
    assert spec.problems([dict(ok_target, replica_num=1 << 40)], target, "resp")  # int32 overflow is caught


def _open_iscsi_session(zl, target_iqn: str) -> subprocess.Popen[bytes]:
    """A real initiator session (qemu-io over libiscsi) so get-iscsi-connections has rows."""
    host, port = zl.vip
    opts = f"driver=iscsi,transport=tcp,portal={host}:{port},target={target_iqn},lun=1,initiator-name={NODE}"
    return subprocess.Popen(
        ["qemu-io", "-r", "--image-opts", opts, "-c", "sleep 20000"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _drive_every_endpoint(client: ZbsClient, zl) -> None:
    prefix = f"f{uuid.uuid4().hex[:8]}"
    cluster = client.clusters.default()
    client.clusters.get(id=cluster["id"])
    client.mutate(
        "update-cluster-enable-iscsi-setting",
        {"where": {"id": cluster["id"]}, "enable_iscsi": True},  # already on: a no-op for other tests
        what="cluster iSCSI setting",
    )
    target = client.targets.create(
        prefix,
        description="fidelity",
        iqn_whitelist="*/*",
        ip_whitelist="*/*",
        chap_enabled=False,
        initiator_chaps=[{"initiator_iqn": NODE, "chap_name": "fidelity", "chap_secret": "FidelitySecret01"}],
        iops=1000,
        bps=100 * MiB,
    )
    other = client.targets.create(f"{prefix}-b", replica_num=3, stripe_num=4, stripe_size=64 << 10)
    client.targets.update(target["id"], description="fidelity 2", initiator_chaps=[], iqn_whitelist="*/*")
    client.targets.count({"name_starts_with": prefix})
    client.targets.list({"name_starts_with": prefix}, order_by="name_ASC")
    lun = client.luns.create("vol", target["id"], 16 * MiB, allowed_initiators="*/*", lun_id=1)
    lun2 = client.luns.create("vol2", target["id"], "8MiB", replica_num=2)
    client.luns.update(lun["id"], assigned_size=32 * MiB, name="vol")
    client.luns.get(name="vol", target_id=target["id"])
    client.luns.count({"iscsi_target": {"id": target["id"]}})
    snap = client.snapshots.create(lun["id"], target["id"], "snap")
    client.snapshots.get(name="snap", lun_id=lun["id"])
    client.snapshots.list({"iscsi_target": {"id": target["id"]}})
    client.snapshots.count({"iscsi_lun": {"id": lun["id"]}})
    clone = client.luns.clone_from_snapshot(snap["id"], other["id"], "clone")
    copy = client.luns.copy(lun2["id"], "copy", dest_target_id=other["id"])
    client.luns.rollback(lun2["id"], snap["id"])
    initiator = _open_iscsi_session(zl, target["iqn_name"])
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and initiator.poll() is None:
            if client.connections.list({"iscsi_target": {"id": target["id"]}}):
                break
            time.sleep(0.2)
        client.count("iscsi-connections", {"iscsi_target": {"id": target["id"]}})
    finally:
        initiator.kill()
        initiator.wait(10)
    client.count("tasks")
    client.query("get-tasks", {"id_in": ["no-such-task"]})
    with pytest.raises(ZbsApiError):  # an ErrorBody: the target still has LUNs
        client.targets.delete(target["id"])
    client._token = Secret("expired-token-value")  # a 401 ErrorBody, then a re-login
    client.luns.list({"id": lun["id"]})
    client.snapshots.delete(snap["id"])
    for obj in (lun, lun2, clone, copy):
        client.luns.delete(obj["id"])
    client.targets.delete(target["id"])
    client.targets.delete(other["id"])


def test_every_request_and_response_matches_the_cloudtower_schemas(spec, zbs_lite, capsys):
    if shutil.which("qemu-io") is None:
        pytest.skip("needs qemu-io (Debian qemu-utils) for a real iSCSI session")
    assert zbs_lite.status()["data_plane"].get("present"), "zbs-lite serves no iSCSI data plane to log in to"
    client = ZbsClient(zbs_lite.api_url, zbs_lite.username, zbs_lite.password, ca_path=zbs_lite.ca_path)
    exchanges: list[Exchange] = record_exchanges(client)
    _drive_every_endpoint(client, zbs_lite)

    problems: dict[str, list[str]] = defaultdict(list)
    statuses: dict[str, set[int]] = defaultdict(set)
    nonempty: set[str] = set()
    for ex in exchanges:
        assert ex.op in spec.operations, f"client used {ex.op}, which is not in the reference spec"
        statuses[ex.op].add(ex.status)
        problems[ex.op] += spec.problems(ex.request, spec.request_schema(ex.op), f"{ex.op} request")
        problems[ex.op] += spec.problems(ex.response, spec.response_schema(ex.op, ex.status), f"{ex.op} {ex.status}")
        if ex.status == 200 and ex.response not in ([], {}, None):
            nonempty.add(ex.op)

    with capsys.disabled():
        print("\nOpenAPI fidelity (CloudTower 4.6.0): endpoint, HTTP statuses seen, problems")
        for op in spec.operations:
            seen = ",".join(map(str, sorted(statuses.get(op, ())))) or "NOT COVERED"
            print(f"  {op:40s} {seen:12s} {len(problems.get(op, []))}")

    uncovered = [op for op in spec.operations if op not in statuses]
    assert uncovered == [], f"endpoints never exercised: {uncovered}"
    assert {400, 401} <= set().union(*statuses.values()), "error bodies were not exercised"
    empty = [op for op in spec.operations if op not in nonempty]
    assert empty == [], f"endpoints only seen with empty answers (fields unchecked): {empty}"
    flat = [p for op in sorted(problems) for p in problems[op]]
    extensions = {p for p in flat if p in DOCUMENTED_EXTENSIONS}
    flat = [p for p in flat if p not in DOCUMENTED_EXTENSIONS and not _our_error_code(p)]
    assert flat == [], "schema problems:\n" + "\n".join(dict.fromkeys(flat))
    assert extensions == DOCUMENTED_EXTENSIONS, "an extension is gone: drop it from DOCUMENTED_EXTENSIONS"
