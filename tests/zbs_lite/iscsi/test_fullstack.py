"""The data plane inside a real `zbs-lite serve`, driven through the management API."""

from __future__ import annotations

import time
import uuid

from initiator import Initiator
from iscsi_rig import IQN_A, IQN_B, need, qemu_io, run
from zl_helpers import Api

from zbs_lite.testing import ZbsLiteProcess


def _luns(vip: str, iqn: str, target_iqn: str) -> list[int]:
    r = run(["iscsi-ls", "-s", "-i", iqn, f"iscsi://{vip}"])
    assert r.returncode == 0, r.stderr
    out, inside = [], False
    for line in r.stdout.splitlines():
        if line.startswith("Target:"):
            inside = line.split()[0] == f"Target:{target_iqn}"
        elif inside and line.strip().startswith("Lun:"):
            out.append(int(line.split()[0].split(":")[1]))
    return out


def _wait(cond, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_api_to_initiator(zbs_lite: ZbsLiteProcess, api: Api) -> None:
    need("iscsi-ls", "qemu-io", "iscsi-readcapacity16")
    vip = "{}:{}".format(*zbs_lite.vip)
    t = api.target(f"fs-{uuid.uuid4().hex[:8]}")
    lun = api.lun(t["id"], size=32 << 20, allowed_initiators=IQN_A)
    url = f"iscsi://{vip}/{t['iqn_name']}/{lun['lun_id']}"  # libiscsi tools take -i for the IQN

    assert _luns(vip, IQN_A, t["iqn_name"]) == [lun["lun_id"]]
    assert _luns(vip, IQN_B, t["iqn_name"]) == []

    out = qemu_io(vip, t["iqn_name"], lun["lun_id"], IQN_A, "write -P 0x6b 1M 4M")
    assert "wrote 4194304/4194304" in out
    chunk2 = "{}:{}".format(*zbs_lite.chunks[1])
    qemu_io(chunk2, t["iqn_name"], lun["lun_id"], IQN_A, "read -P 0x6b 1M 4M")
    r = run(
        [
            "qemu-io",
            "--image-opts",
            "-c",
            "read 0 4k",
            f"driver=iscsi,transport=tcp,portal={chunk2},"
            f"target={t['iqn_name']},lun={lun['lun_id']},initiator-name={IQN_B}",
        ]
    )
    assert r.returncode != 0 and "LOGICAL_UNIT_NOT_SUPPORTED" in r.stdout + r.stderr, "IQN B was not granted"

    # a live session shows up in get-iscsi-connections with its chunk
    host, port = zbs_lite.chunks[2]
    ini = Initiator(host, port, IQN_A)
    ini.login(t["iqn_name"])

    def mine() -> list[dict]:  # type: ignore[type-arg]
        conns = api.ok("get-iscsi-connections", {"where": {"initiator_iqn": IQN_A}})
        return [c for c in conns if (c.get("iscsi_target") or {}).get("id") == t["id"]]

    _wait(lambda: any(c["host"]["name"] == "chunk3" for c in mine()), "session not reported")
    # revoking through the API fences the live session at its next command
    api.mutate("update-iscsi-lun", {"where": {"id": lun["id"]}, "data": {"allowed_initiators": IQN_B}})
    reply = ini.read10(1, 0, 8)
    assert reply.status == 2 and reply.asc == (0x25, 0x00)
    ini.logout()
    _wait(lambda: not mine(), "closed session still reported")
    assert _luns(vip, IQN_A, t["iqn_name"]) == []
    assert _luns(vip, IQN_B, t["iqn_name"]) == [1]

    # growing the LUN through the API shows at the initiator
    api.mutate("update-iscsi-lun", {"where": {"id": lun["id"]}, "data": {"assigned_size": 48 << 20}})
    r = run(["iscsi-readcapacity16", "-i", IQN_B, f"{url}"])
    assert f"Total size:{48 << 20}" in r.stdout, r.stdout + r.stderr

    # the CLI's chunk stop takes a chunk out; logins through the VIP land elsewhere
    zbs_lite.chunk_stop(1)
    try:
        chunks = zbs_lite.status()["data_plane"]["chunks"]
        assert [c["up"] for c in chunks][:1] == [False]
        for _ in range(3):
            qemu_io(vip, t["iqn_name"], lun["lun_id"], IQN_B, "read -P 0x6b 1M 4M")
    finally:
        zbs_lite.chunk_start(1)
    api.mutate("delete-iscsi-lun", {"where": {"id": lun["id"]}})
    api.mutate("delete-iscsi-target", {"where": {"id": t["id"]}})
