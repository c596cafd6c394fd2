"""The client against a real zbs-lite over HTTPS with its generated CA.

The session's zbs-lite (tests/conftest.py) is shared with other test modules, so every test
works under its own random name prefix and never assumes an empty server.
"""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_client import ZbsClient
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import (
    ZbsApiError,
    ZbsAuthError,
    ZbsConnectionError,
    ZbsNotFound,
    ZbsTaskFailed,
    ZbsTaskTimeout,
    ZbsValidationError,
)

from zbs_lite.testing import ZbsLiteProcess
from zbs_lite.tls import ensure_tls

GiB = 1 << 30
MiB = 1 << 20
NODE_A = "iqn.2004-10.com.example:node-a"
NODE_B = "iqn.2004-10.com.example:node-b"
TARGET_CHAP = "TgtSecret12345"
INIT_CHAP = "InitiatorSecret987654"


def make_client(zl: ZbsLiteProcess, **kw) -> ZbsClient:
    kw.setdefault("ca_path", zl.ca_path)
    kw.setdefault("poll_interval", 0.2)
    return ZbsClient(zl.api_url, zl.username, zl.password, **kw)


@pytest.fixture
def client(zbs_lite):
    with make_client(zbs_lite) as c:
        yield c


@pytest.fixture
def prefix():
    return f"c{uuid.uuid4().hex[:8]}"


def test_every_resource_operation_round_trips(client, prefix):
    cluster = client.clusters.default()
    assert client.clusters.get(id=cluster["id"])["name"] == cluster["name"]
    assert client.clusters.get(name=cluster["name"])["id"] == cluster["id"]

    target = client.targets.create(
        f"{prefix}-T1",
        description="client test",
        iqn_whitelist=[NODE_B, NODE_A],
        chap_enabled=True,
        chap_name="tgtuser",
        chap_secret=TARGET_CHAP,
        initiator_chaps=[{"initiator_iqn": NODE_A, "chap_name": "node-a", "chap_secret": INIT_CHAP}],
    )
    assert target["name"] == f"{prefix}-t1"  # names are stored lower-case
    assert target["iqn_name"] == f"iqn.2016-02.com.smartx:system:{prefix}-t1"
    assert target["entityAsyncStatus"] is None  # returned after its task succeeded
    assert target["iqn_whitelist"] == f"{NODE_A},{NODE_B}"
    assert (target["replica_num"], target["stripe_num"], target["stripe_size"]) == (2, 8, 256 << 10)
    for key in ("id", "local_id"):
        assert client.targets.get(**{key: target[key]})["id"] == target["id"]
    assert client.targets.get(name=f"{prefix}-T1")["id"] == target["id"]
    assert client.targets.get(name=f"{prefix}-T1", cluster_id=cluster["id"])["id"] == target["id"]
    assert client.targets.get(name=f"{prefix}-none") is None
    updated = client.targets.update(target["id"], description="changed", ip_whitelist="127.0.0.0/8")
    assert (updated["description"], updated["ip_whitelist"]) == ("changed", "127.0.0.0/8")
    assert client.targets.update(target["id"], chap_enabled=False)["chap_enabled"] is False
    assert client.targets.update(target["id"], chap_enabled=True)["chap_enabled"] is True  # keeps its credentials
    other = client.targets.create(f"{prefix}-t2", replica_num=3, stripe_num=4, stripe_size="64KiB")
    assert (other["replica_num"], other["stripe_num"], other["stripe_size"]) == (3, 4, 64 << 10)
    assert client.targets.count({"name_starts_with": prefix}) == 2
    assert {t["id"] for t in client.targets.list({"name_starts_with": prefix})} == {target["id"], other["id"]}

    lun = client.luns.create("vol1", target["id"], "1GiB", allowed_initiators=[NODE_A])
    assert (lun["assigned_size"], lun["lun_id"], lun["allowed_initiators"]) == (GiB, 1, NODE_A)
    assert lun["replica_num"] == 2  # inherited from the target
    assert lun["iscsi_target"] == {"id": target["id"], "name": target["name"]}
    assert client.luns.get(id=lun["id"])["name"] == "vol1"
    assert client.luns.get(local_id=lun["local_id"])["id"] == lun["id"]
    assert client.luns.get(name="vol1", target_id=target["id"])["id"] == lun["id"]
    assert client.luns.get(lun_id=1, target_id=target["id"])["id"] == lun["id"]
    assert client.luns.get(name="vol1", target_id=other["id"]) is None
    assert client.luns.get(name="vol1", target_name=target["name"].upper())["id"] == lun["id"]  # names are lower-case
    assert client.luns.get(lun_id=1, target_name=target["name"])["id"] == lun["id"]
    assert client.luns.get(name="vol1", target_name=other["name"]) is None
    with pytest.raises(ZbsValidationError):
        client.luns.get(name="vol1", target_id=target["id"], target_name=target["name"])
    lun2 = client.luns.create("vol2", target["id"], 64 * MiB, lun_id=7, replica_num=3)
    assert (lun2["lun_id"], lun2["replica_num"], lun2["allowed_initiators"]) == (7, 3, "*/*")

    grown = client.luns.update(lun["id"], assigned_size="2GiB", allowed_initiators=[NODE_A, NODE_B])
    assert grown["assigned_size"] == 2 * GiB
    assert grown["allowed_initiators"] == f"{NODE_A},{NODE_B}"
    with pytest.raises(ZbsApiError) as shrink:
        client.luns.update(lun["id"], assigned_size="1GiB")
    assert shrink.value.status == 400 and "grow" in shrink.value.message
    assert client.luns.update(lun["id"], allowed_initiators="")["allowed_initiators"] == ""

    snap = client.snapshots.create(lun["id"], target["id"], "snap1")
    assert snap["iscsi_lun"] == {"id": lun["id"], "name": "vol1"}
    assert client.snapshots.get(name="snap1", lun_id=lun["id"])["id"] == snap["id"]
    assert client.snapshots.get(local_id=snap["local_id"])["id"] == snap["id"]
    assert client.snapshots.count({"iscsi_lun": {"id": lun["id"]}}) == 1
    assert client.luns.get(id=lun["id"])["snapshot_num"] == 1

    clone = client.luns.clone_from_snapshot(snap["id"], other["id"], "from-snap")
    assert (clone["assigned_size"], clone["iscsi_target"]["id"]) == (2 * GiB, other["id"])
    copy_same = client.luns.copy(lun2["id"], "vol2-copy")
    assert (copy_same["iscsi_target"]["id"], copy_same["assigned_size"]) == (target["id"], 64 * MiB)
    copy_other = client.luns.copy(lun2["id"], "vol2-copy", dest_target_id=other["id"])
    assert copy_other["iscsi_target"]["id"] == other["id"]
    rolled = client.luns.rollback(lun2["id"], snap["id"])  # a snapshot of another LUN
    assert rolled["id"] == lun2["id"]
    assert client.luns.count({"iscsi_target": {"id": target["id"]}}) == 3
    assert client.connections.list({"iscsi_target": {"id": target["id"]}}) == []

    with pytest.raises(ZbsApiError) as has_snap:
        client.luns.delete(lun["id"])
    assert has_snap.value.status == 400 and "snapshot" in has_snap.value.message
    with pytest.raises(ZbsApiError) as has_luns:
        client.targets.delete(target["id"])
    assert has_luns.value.status == 400 and str(has_luns.value).startswith("delete-iscsi-target target id=")

    client.snapshots.delete(snap["id"])
    assert client.snapshots.get(id=snap["id"]) is None
    assert client.luns.get(id=clone["id"]) is not None  # a clone outlives its snapshot
    client.luns.delete(lun["id"])
    for obj in (lun2, copy_same, copy_other, clone):
        client.luns.delete(obj["id"], remove_snapshot=True)
    client.targets.delete(target["id"])
    client.targets.delete(other["id"])
    assert client.targets.count({"name_starts_with": prefix}) == 0
    assert client.luns.get(id=lun["id"]) is None


def test_paging_reads_more_than_one_page(client, prefix):
    target = client.targets.create(prefix)
    bodies = [
        {"name": f"p{i:02d}", "iscsi_target_id": target["id"], "assigned_size": MiB, "replica_num": 2}
        for i in range(25)
    ]
    created = client.mutate("create-iscsi-lun", bodies, what="25 LUNs")  # one call, 25 tasks
    assert len(created) == 25
    client.stats.reset()
    where = {"iscsi_target": {"id": target["id"]}}
    listed = client.query("get-iscsi-luns", where, order_by="name_ASC", page_size=10)
    assert [x["name"] for x in listed] == [f"p{i:02d}" for i in range(25)]
    assert client.stats["get-iscsi-luns"] == 3  # 10 + 10 + 5
    assert len(client.query("iscsi-luns", where, page_size=5)) == 25  # exact pages end on an empty one
    assert client.luns.count(where) == 25
    ids = [x["id"] for x in listed]
    assert len(set(ids)) == 25
    client.mutate("delete-iscsi-lun", {"where": {"id_in": ids}, "data": {"remove_snapshot": False}}, what="LUNs")
    assert client.luns.count(where) == 0
    client.targets.delete(target["id"])


def test_mutation_without_wait_then_wait_tasks(client, prefix):
    item = client.request(
        "create-iscsi-target",
        [
            {
                "name": prefix,
                "cluster_id": client.clusters.default()["id"],
                "replica_num": 2,
                "thin_provision": True,
                "stripe_num": 1,
                "stripe_size": 4096,
            }
        ],
    )[0]
    assert item["task_id"] and item["data"]["id"]
    tasks = client.wait_tasks([item["task_id"]], what=f"target {prefix!r}")
    assert [t["status"] for t in tasks] == ["SUCCESSED"]
    assert client.targets.get(id=item["data"]["id"])["entityAsyncStatus"] is None
    not_waited = client.targets.update(item["data"]["id"], wait=False, description="x")
    assert not_waited["id"] == item["data"]["id"]
    client.targets.delete(item["data"]["id"])


def test_failed_task_raises_with_the_task_error(client, prefix):
    """A thick LUN bigger than the pool makes zbs-lite's fallocate fail: a real FAILED task."""
    target = client.targets.create(prefix, thin_provision=False)
    with pytest.raises(ZbsTaskFailed) as err:
        client.luns.create("too-big", target["id"], "60TiB")
    failed = err.value
    assert failed.task_id and failed.error_code and failed.error_code.startswith("ZBS_E")
    assert str(failed).startswith(f"create-iscsi-lun lun 'too-big': task {failed.task_id} failed: ")
    assert client.luns.get(name="too-big", target_id=target["id"]) is None  # nothing half-created
    client.targets.delete(target["id"])


def test_bad_input_is_refused_before_any_call(client):
    client.stats.reset()
    bad_calls = [
        lambda: client.targets.create("bad_name"),
        lambda: client.targets.create("ok", replica_num=5, cluster_id="c1"),
        lambda: client.targets.create("ok", chap_secret="short", chap_name="u", cluster_id="c1"),
        lambda: client.targets.create("ok", chap_enabled=True, cluster_id="c1"),
        lambda: client.targets.get(name="a", id="b"),
        lambda: client.luns.create("../etc/passwd", "tid", "1GiB"),
        lambda: client.luns.create("v", "tid", "-1G"),
        lambda: client.luns.create("v", "tid", "65TiB", replica_num=2),
        lambda: client.luns.create("v", "tid", "1GiB", replica_num=2, allowed_initiators=["not an iqn"]),
        lambda: client.luns.get(id="../../x"),
        lambda: client.luns.get(lun_id=1),
        lambda: client.snapshots.create("lun", "tgt", "a/b"),
        lambda: client.luns.update("x", assigned_size="1GiB", assigned_size_unit="XB"),
        lambda: client.targets.update("x"),
    ]
    for call in bad_calls:
        with pytest.raises(ZbsValidationError):
            call()
    assert client.stats.total == 0


def test_server_side_rules_come_back_as_typed_errors(client, prefix):
    target = client.targets.create(prefix)
    client.luns.create("dup", target["id"], MiB, replica_num=2, lun_id=3)
    with pytest.raises(ZbsApiError) as dup:
        client.luns.create("dup", target["id"], MiB, replica_num=2)
    assert dup.value.status == 400 and "already exists" in dup.value.message
    with pytest.raises(ZbsApiError) as taken:
        client.luns.create("other", target["id"], MiB, replica_num=2, lun_id=3)
    assert taken.value.status == 400 and "lun_id" in str(taken.value)
    with pytest.raises(ZbsApiError) as unknown:
        client.luns.list({"no_such_field": 1})
    assert unknown.value.status == 400 and unknown.value.path.endswith("/get-iscsi-luns")
    with pytest.raises(ZbsApiError):
        client.luns.create("v", "c0nosuchtarget000000000000", MiB, replica_num=2)
    client.luns.delete(client.luns.get(name="dup", target_id=target["id"])["id"])
    client.targets.delete(target["id"])


def test_concurrent_same_name_creates_one_wins(zbs_lite, prefix):
    results: list[object] = []
    lock = threading.Lock()

    def create():
        with make_client(zbs_lite) as c:
            try:
                out: object = c.targets.create(prefix)
            except ZbsApiError as exc:
                out = exc
            with lock:
                results.append(out)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if isinstance(r, ZbsApiError)]
    assert len(winners) == 1 and len(losers) == 5
    assert all(e.status == 400 and "already exists" in e.message for e in losers)
    with make_client(zbs_lite) as c:
        assert c.targets.count({"name": prefix}) == 1
        c.targets.delete(winners[0]["id"])  # type: ignore[index]


def test_one_client_serves_many_threads_at_once(zbs_lite, prefix, caplog):
    """The driver calls one client from all its gRPC worker threads at once: every call lands,
    one login serves them all, and no thread waits on or discards another's connection
    (requests.Session is not thread-safe, so the client keeps one per thread)."""
    threads_n, calls = 16, 8
    caplog.set_level(logging.WARNING, logger="urllib3")
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)
    with make_client(zbs_lite) as client:
        target = client.targets.create(prefix)

        def work(i: int) -> None:
            try:
                start.wait()
                for j in range(calls):
                    assert client.targets.get(id=target["id"])["name"] == prefix
                    client.luns.list({"name": f"{prefix}-{i}-{j}"})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.targets.delete(target["id"])
    assert errors == []
    assert client.stats["login"] == 1
    assert client.stats["get-iscsi-targets"] == threads_n * calls + 1  # + the create's re-read
    pool_warnings = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert pool_warnings == [], pool_warnings[:3]


def test_wrong_password_is_refused(zbs_lite):
    c = ZbsClient(zbs_lite.api_url, zbs_lite.username, "not-the-password", ca_path=zbs_lite.ca_path)
    with c, pytest.raises(ZbsAuthError) as err:
        c.clusters.list()
    assert err.value.status == 401
    assert "not-the-password" not in str(err.value) + repr(err.value)


def test_tls_is_verified_with_the_generated_ca_and_refused_without(zbs_lite, monkeypatch):
    # requests would let REQUESTS_CA_BUNDLE override a session-level CA; ca_path must still win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    with make_client(zbs_lite) as verified:
        assert verified.clusters.default()["id"]
    unverified = ZbsClient(zbs_lite.api_url, zbs_lite.username, zbs_lite.password, retries=0)
    with unverified, pytest.raises(ZbsConnectionError) as err:
        unverified.clusters.list()
    assert "TLS" in str(err.value) and "ca_path" in str(err.value)
    with make_client(zbs_lite, ca_path=None, validate_certs=False) as lab:
        assert lab.clusters.default()["id"]


def test_tls_errors_say_which_ca_failed_and_why(zbs_lite, tmp_path):
    """A wrong CA, no CA and a key file given as the CA each get their own, actionable message."""
    no_ca = ZbsClient(zbs_lite.api_url, zbs_lite.username, zbs_lite.password, retries=0)
    with no_ca, pytest.raises(ZbsConnectionError) as err:
        no_ca.clusters.list()
    assert "not signed by a CA this system trusts" in str(err.value) and "give ca_path" in str(err.value)

    other = ensure_tls(tmp_path / "other-ca", "127.0.0.1")
    wrong = make_client(zbs_lite, ca_path=str(other.ca_cert), retries=0)
    with wrong, pytest.raises(ZbsConnectionError) as err:
        wrong.clusters.list()
    assert f"not signed by the CA in {other.ca_cert}" in str(err.value)
    assert wrong.stats["login"] == 1  # a TLS failure is never retried

    with pytest.raises(ZbsValidationError) as err:
        make_client(zbs_lite, ca_path=str(other.ca_key))
    assert err.value.field == "ca_path" and f"{other.ca_key} holds no certificate" in str(err.value)


def test_from_env_uses_the_zbs_lite_environment(zbs_env):
    with ZbsClient.from_env() as c:
        assert c.clusters.default()["name"] == zbs_env["ZBS_CLUSTER"]


def test_secrets_stay_out_of_errors_reprs_and_logs(zbs_lite, prefix, caplog):
    caplog.set_level(logging.DEBUG)
    with make_client(zbs_lite) as c:
        target = c.targets.create(prefix, chap_enabled=True, chap_name="u1", chap_secret=TARGET_CHAP)
        token = c._token.value
        assert token not in repr(vars(c))
        errors = []
        for call in (
            lambda: c.targets.create(prefix, chap_enabled=True, chap_name="u1", chap_secret=TARGET_CHAP),
            lambda: c.request("update-iscsi-target", {"where": {"id": target["id"]}, "data": {"chap_secret": "x!"}}),
            lambda: c.request("create-iscsi-target", [{"name": prefix, "chap_secret": INIT_CHAP, "bogus": 1}]),
        ):
            with pytest.raises(ZbsApiError) as err:
                call()
            errors.append(err.value)
        c.targets.delete(target["id"])
        texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(e.to_dict()) for e in errors]
        texts += [repr(c), caplog.text]
        for secret in (zbs_lite.password, token, TARGET_CHAP, INIT_CHAP):
            assert secret
            for text in texts:
                assert secret not in text


@pytest.fixture(scope="module")
def slow_short_lived(tmp_path_factory):
    """A zbs-lite whose tokens live 1 s and whose tasks take 1.5 s."""
    proc = ZbsLiteProcess(tmp_path_factory.mktemp("zbs-lite-ttl"), token_ttl=1, task_delay=1.5, chunks=1)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_expired_token_is_renewed_once(slow_short_lived):
    import time

    with make_client(slow_short_lived) as c:
        c.clusters.list()
        time.sleep(1.5)  # let the token expire (TTL 1 s)
        assert c.clusters.default()["id"]
        assert c.stats["login"] == 2
        assert c.stats["get-clusters"] == 3  # the refused call, its retry, and the first one


def test_task_timeout_names_task_and_operation_and_the_task_still_finishes(slow_short_lived, prefix):
    with make_client(slow_short_lived, wait_timeout=0.3, poll_interval=0.1) as c:
        with pytest.raises(ZbsTaskTimeout) as err:
            c.targets.create(prefix)
        timeout = err.value
        assert timeout.task_id
        assert str(timeout).startswith(f"create-iscsi-target target '{prefix}': task {timeout.task_id} did not finish")
        done = c.wait_tasks([timeout.task_id], what="the same create", timeout=30)
        assert done[0]["status"] == "SUCCESSED"
        target = c.targets.get(name=prefix)
        assert target is not None
        c.mutate("delete-iscsi-target", {"where": {"id": target["id"]}}, what="cleanup", timeout=30)


def test_round_trips_per_operation(client, prefix):
    """What each helper costs in API calls (task polls vary with timing; the rest must not)."""
    client.login()
    client.stats.reset()
    first = client.targets.create(f"{prefix}-a")
    assert _calls(client) == {"get-clusters": 1, "create-iscsi-target": 1, "get-iscsi-targets": 1}
    client.stats.reset()
    second = client.targets.create(f"{prefix}-b")  # the default cluster is known by now
    assert _calls(client) == {"create-iscsi-target": 1, "get-iscsi-targets": 1}
    client.stats.reset()
    lun = client.luns.create("v", first["id"], MiB, replica_num=2)
    assert _calls(client) == {"create-iscsi-lun": 1, "get-iscsi-luns": 1}
    client.stats.reset()
    assert client.luns.get(name="v", target_id=first["id"])["id"] == lun["id"]
    assert client.stats.by_op == {"get-iscsi-luns": 1}
    client.luns.delete(lun["id"])
    client.targets.delete(first["id"])
    client.targets.delete(second["id"])


def _calls(client: ZbsClient) -> dict[str, int]:
    calls = client.stats.by_op
    assert calls.pop("get-tasks", 0) >= 1
    return calls


def test_missing_objects_are_not_found_errors(client):
    gone = "c0doesnotexist0000000000000"
    with pytest.raises(ZbsNotFound) as no_target:
        client.luns.create("v", gone, MiB)  # replica_num comes from the target, which is missing
    assert no_target.value.status == 404 and str(no_target.value).startswith("create-iscsi-lun lun 'v': target ")
    with pytest.raises(ZbsNotFound):
        client.luns.update(gone, assigned_size="2GiB")
    with pytest.raises(ZbsNotFound):
        client.targets.update(gone, description="x")


def test_batched_create_update_delete_are_one_call_each(client, prefix):
    """The API takes arrays and id_in: many LUNs cost one mutation (plus task polls), not one per LUN."""
    target = client.targets.create(prefix, replica_num=1)
    client.stats.reset()
    made = client.luns.create_many(
        [
            {"name": f"v{i}", "iscsi_target_id": target["id"], "assigned_size": "4MiB", "replica_num": 1}
            for i in range(5)
        ]
    )
    assert client.stats["create-iscsi-lun"] == 1 and len(made) == 5
    luns = client.luns.list({"iscsi_target": {"id": target["id"]}})
    assert sorted(x["name"] for x in luns) == [f"v{i}" for i in range(5)]
    assert {x["lun_id"] for x in luns} == {1, 2, 3, 4, 5}
    ids = [x["id"] for x in luns if x["name"] in ("v1", "v2")]
    client.luns.update_many(ids, assigned_size=8 * MiB, allowed_initiators=[NODE_A])
    assert client.stats["update-iscsi-lun"] == 1
    grown = {x["name"]: x for x in client.luns.list({"iscsi_target": {"id": target["id"]}})}
    assert grown["v1"]["assigned_size"] == grown["v2"]["assigned_size"] == 8 * MiB
    assert grown["v1"]["allowed_initiators"] == NODE_A and grown["v0"]["assigned_size"] == 4 * MiB
    with pytest.raises(ZbsValidationError):
        client.luns.update_many(ids, name="same")
    with pytest.raises(ZbsValidationError):
        client.luns.create_many([{"name": "ok", "iscsi_target_id": target["id"], "assigned_size": "1MiB"}])
    client.luns.delete_many([x["id"] for x in luns])
    assert client.stats["delete-iscsi-lun"] == 1
    assert client.luns.count({"iscsi_target": {"id": target["id"]}}) == 0
    client.targets.delete(target["id"])
