"""The session zbs-lite answers with the contract's environment and a working CRUD round trip."""

from __future__ import annotations

from zl_helpers import Api


def test_env_points_at_a_live_https_api(zbs_env: dict[str, str], api: Api) -> None:
    assert zbs_env["ZBS_HOST"].startswith("https://127.0.0.1:")
    assert zbs_env["ZBS_USERNAME"] == "admin" and len(zbs_env["ZBS_PASSWORD"]) >= 16
    host, _, port = zbs_env["ZBS_ISCSI_PORTAL"].rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    clusters = api.ok("get-clusters", {})
    assert [c["name"] for c in clusters] == [zbs_env["ZBS_CLUSTER"]]


def test_target_lun_snapshot_round_trip(api: Api) -> None:
    t = api.target()
    lun = api.lun(t["id"], size=4 << 20)
    assert lun["entityAsyncStatus"] is None and lun["lun_id"] == 1
    snap = api.snapshot(lun)
    assert snap["iscsi_lun"] == {"id": lun["id"], "name": lun["name"]}
    api.mutate("delete-iscsi-lun", {"where": {"id": lun["id"]}, "data": {"remove_snapshot": True}})
    api.mutate("delete-iscsi-target", {"where": {"id": t["id"]}})
    assert api.ok("get-iscsi-targets", {"where": {"id": t["id"]}}) == []
    assert api.ok("get-iscsi-lun-snapshots", {"where": {"id": snap["id"]}}) == []
