"""Pure protocol logic (no sockets): framing, digests, negotiation, CHAP, access rules, the ring."""

from __future__ import annotations

import hashlib
import logging

import pytest
from iscsi_rig import IQN_A, IQN_B, Rig, need, run

from zbs_lite.catalog import LunView, TargetView
from zbs_lite.iscsi import access
from zbs_lite.iscsi.chap import ChapAuthenticator, ChapError
from zbs_lite.iscsi.dataplane import HashRing
from zbs_lite.iscsi.negotiation import NegotiationError, SessionParams, negotiate
from zbs_lite.iscsi.pdu import crc32c, decode_lun, encode_lun, parse_text, serial_lt


def _crc32c_bitwise(data: bytes) -> int:
    """An independent, slow CRC32C (reflected polynomial 0x82F63B78) to check the C one against."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_answers() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert _crc32c_bitwise(b"123456789") == 0xE3069283
    blob = bytes(range(256)) * 5
    assert crc32c(blob) == _crc32c_bitwise(blob)
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vector: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43


def test_lun_addressing_and_serials() -> None:
    for n in (0, 1, 255, 256, 16383):
        assert decode_lun(encode_lun(n)) == n
    assert serial_lt(0xFFFFFFFF, 0) and not serial_lt(0, 0xFFFFFFFF)


def test_text_parsing_rejects_items_without_a_value() -> None:
    assert parse_text(b"A=1\0B=x=y\0\0") == [("A", "1"), ("B", "x=y")]
    with pytest.raises(ValueError):
        parse_text(b"novalue\0")


def test_negotiation_follows_the_rfc_rules() -> None:
    p = SessionParams()
    answers = dict(
        negotiate(
            [
                ("HeaderDigest", "CRC32C,None"),
                ("DataDigest", "None"),
                ("InitialR2T", "No"),
                ("ImmediateData", "Yes"),
                ("MaxBurstLength", "16776192"),
                ("FirstBurstLength", "2097152"),
                ("MaxRecvDataSegmentLength", "65536"),
                ("MaxOutstandingR2T", "16"),
                ("ErrorRecoveryLevel", "2"),
                ("X-com.example.private", "1"),
            ],
            p,
        )
    )
    assert answers["HeaderDigest"] == "CRC32C" and p.header_digest  # the initiator's first supported choice
    assert answers["DataDigest"] == "None" and not p.data_digest
    assert answers["InitialR2T"] == "No" and not p.initial_r2t
    assert answers["MaxBurstLength"] == "1048576" and p.max_burst == 1 << 20  # min(ours, theirs)
    assert p.first_burst == 262144 <= p.max_burst
    assert answers["ErrorRecoveryLevel"] == "0"
    assert answers["X-com.example.private"] == "NotUnderstood"
    assert "MaxRecvDataSegmentLength" not in answers and p.initiator_mrdsl == 65536  # declarative
    with pytest.raises(NegotiationError):
        negotiate([("MaxBurstLength", "12")], SessionParams())
    with pytest.raises(NegotiationError):
        negotiate([("ImmediateData", "maybe")], SessionParams())


def _md5(ident: int, secret: str, challenge: bytes) -> str:
    return "0x" + hashlib.md5(bytes([ident]) + secret.encode() + challenge).hexdigest()


def test_chap_one_way_and_mutual() -> None:
    auth = ChapAuthenticator("node-a", "InitiatorSecret1", "tgt", "TargetSecret12")
    offer = dict(auth.offer("7,5"))
    assert offer["CHAP_A"] == "5"
    ident, challenge = int(offer["CHAP_I"]), bytes.fromhex(offer["CHAP_C"][2:])
    assert auth.verify({"CHAP_N": "node-a", "CHAP_R": _md5(ident, "InitiatorSecret1", challenge)}) == []
    with pytest.raises(ChapError):
        auth.verify({"CHAP_N": "node-a", "CHAP_R": _md5(ident, "WrongSecret123", challenge)})
    with pytest.raises(ChapError):
        auth.verify({"CHAP_N": "node-b", "CHAP_R": _md5(ident, "InitiatorSecret1", challenge)})
    mine = b"\x01" * 16
    reply = dict(
        auth.verify(
            {
                "CHAP_N": "node-a",
                "CHAP_R": _md5(ident, "InitiatorSecret1", challenge),
                "CHAP_I": "7",
                "CHAP_C": "0x" + mine.hex(),
            }
        )
    )
    assert reply == {"CHAP_N": "tgt", "CHAP_R": _md5(7, "TargetSecret12", mine)}
    with pytest.raises(ChapError):  # a reflected challenge would let an attacker replay our answer
        auth.verify(
            {
                "CHAP_N": "node-a",
                "CHAP_R": _md5(ident, "InitiatorSecret1", challenge),
                "CHAP_I": "7",
                "CHAP_C": offer["CHAP_C"],
            }
        )
    assert "Secret" not in repr(auth)
    with pytest.raises(ChapError):
        ChapAuthenticator("a", "b").offer("7")


def test_access_rules() -> None:
    assert access.initiator_allowed(None, IQN_A) and access.initiator_allowed("*/*", IQN_A)
    assert not access.initiator_allowed("", IQN_A)
    assert access.initiator_allowed(f"{IQN_B}, {IQN_A.upper()}", IQN_A)
    assert not access.initiator_allowed(IQN_B, IQN_A)
    assert access.ip_whitelisted("10.0.0.0/8,127.0.0.1", "127.0.0.1")
    assert not access.ip_whitelisted("10.0.0.0/8", "127.0.0.1")
    assert access.ip_whitelisted("*/*", "192.0.2.1") and access.ip_whitelisted("", "192.0.2.1")
    assert access.iqn_whitelisted("iqn.2020-01.io.zbs-test:*", IQN_A)
    assert not access.iqn_whitelisted("iqn.2099-01.other:*", IQN_A)
    t = TargetView("t", "t", "iqn.t", iqn_whitelist=IQN_A)
    luns = [
        LunView("a", "u", "a", 1, "t", 512, "/x", allowed_initiators=IQN_A),
        LunView("b", "u", "b", 2, "t", 512, "/y"),
    ]
    assert sorted(access.visible_luns(t, luns, IQN_A, "127.0.0.1")) == [1, 2]
    assert access.visible_luns(t, luns, IQN_B, "127.0.0.1") == {}


def test_ring_is_stable_and_moves_only_the_dead_chunks_share() -> None:
    ring = HashRing([1, 2, 3])
    keys = [f"iqn.node-{i}|iqn.target-{i % 7}" for i in range(600)]
    before = {k: ring.pick(k, {1, 2, 3}) for k in keys}
    assert {1, 2, 3} == set(before.values())
    after = {k: ring.pick(k, {1, 3}) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == 2 for k in moved), "only sessions of the dead chunk move"
    assert all(after[k] in (1, 3) for k in keys)
    assert ring.pick("x", set()) is None


def test_header_digest_with_libiscsi(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """CRC32C header digests on the wire, checked by a real initiator in both directions."""
    need("qemu-io")
    t = rig.add_target("digest")
    rig.add_lun(t, 1)
    opts = (
        f"driver=iscsi,transport=tcp,portal={rig.chunk(1)},target={t.iqn},lun=1,"
        f"initiator-name={IQN_A},header-digest=crc32c"
    )
    with caplog.at_level(logging.INFO, logger="zbs_lite.iscsi"):
        r = run(["qemu-io", "--image-opts", "-c", "write -P 0x42 0 1M", "-c", "read -P 0x42 0 1M", opts])
    assert r.returncode == 0 and "failed" not in r.stdout.lower(), r.stdout + r.stderr
    assert any("digests header=CRC32C" in m for m in caplog.messages), caplog.messages


def test_header_and_data_digests_both_ways(rig: Rig) -> None:
    """libiscsi and qemu cannot negotiate data digests: our own initiator checks both digests
    on every PDU, with R2T/Data-Out (InitialR2T=Yes) in play for the bigger write."""
    from initiator import Initiator

    t = rig.add_target("dd")
    lun = rig.add_lun(t, 1)
    ini = Initiator(*rig.hostport(rig.chunk(2)), IQN_A)
    answers = ini.login(t.iqn, digests=True)
    assert answers["HeaderDigest"] == "CRC32C" and answers["DataDigest"] == "CRC32C" and ini.digests
    payload = bytes(range(256)) * 1024  # 256 KiB: 64 KiB immediate, the rest solicited by R2T
    r = ini.scsi(1, bytes([0x2A, 0, 0, 0, 0, 16, 0, 2, 0, 0]), write=payload, immediate=65536)
    assert r.status == 0
    assert ini.read10(1, 16, 512).data == payload
    ini.logout()
    with open(lun.path, "rb") as f:
        f.seek(16 * 512)
        assert f.read(len(payload)) == payload
