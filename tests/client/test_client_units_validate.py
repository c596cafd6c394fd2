"""Sizes, names, IQNs, CHAP and allowed-initiator rules shared by the modules and the driver."""

from __future__ import annotations

import pytest
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_errors import ZbsValidationError
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_units import format_size, parse_size, round_up
from ansible_collections.smartx.zbs.plugins.module_utils.zbs_validate import (
    AllowedInitiators,
    format_allowed_initiators,
    parse_allowed_initiators,
    target_iqn,
    validate_chap_name,
    validate_chap_secret,
    validate_id,
    validate_ip_whitelist,
    validate_iqn,
    validate_lun_id,
    validate_lun_name,
    validate_lun_size,
    validate_replica_num,
    validate_snapshot_name,
    validate_stripe_num,
    validate_stripe_size,
    validate_target_name,
)

GiB = 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("10GiB", 10 * GiB),
        ("10G", 10 * GiB),
        ("10GB", 10 * GiB),  # ZBS counts GB in binary multiples
        ("10Gi", 10 * GiB),  # Kubernetes spelling
        ("10 gib", 10 * GiB),
        ("512MiB", 512 << 20),
        ("1TB", 1 << 40),
        ("1.5GiB", 3 * (GiB // 2)),
        ("4k", 4096),
        ("0", 0),
        ("7B", 7),
    ],
)
def test_parse_size_reads_what_users_write(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "ten", "-1G", "1.3B", "10XB", "1e9", True, None, 1.5, -5, "10 G B"])
def test_parse_size_refuses_nonsense_naming_the_field(bad):
    with pytest.raises(ZbsValidationError) as err:
        parse_size(bad, "assigned_size")
    assert err.value.field == "assigned_size"
    assert str(err.value).startswith("assigned_size: ")


@pytest.mark.parametrize(
    ("size", "text"),
    [(10 * GiB, "10GiB"), (1536 << 20, "1536MiB"), (1 << 40, "1TiB"), (4096, "4KiB"), (1000, "1000B"), (0, "0B")],
)
def test_format_size_is_exact_and_round_trips(size, text):
    assert format_size(size) == text
    assert parse_size(format_size(size)) == size


def test_round_up_to_granularity():
    assert round_up(1, GiB) == GiB
    assert round_up(GiB, GiB) == GiB
    assert round_up(GiB + 1, GiB) == 2 * GiB
    assert round_up(0, GiB) == 0
    with pytest.raises(ZbsValidationError):
        round_up(5, 0)


def test_target_names_are_lower_cased_and_restricted():
    assert validate_target_name("K8s-Vols.1") == "k8s-vols.1"
    assert target_iqn("Data") == "iqn.2016-02.com.smartx:system:data"
    assert len(target_iqn("a" * 193)) == 223  # the RFC 3720 limit, exactly
    for bad in ["", "-lead", ".lead", "under_score", "sp ace", "../etc", "a/b", "é", "a" * 194, 5]:
        with pytest.raises(ZbsValidationError) as err:
            validate_target_name(bad)  # type: ignore[arg-type]
        assert err.value.field == "name"


def test_lun_and_snapshot_names_refuse_path_like_and_non_ascii():
    assert validate_lun_name("pvc-3f1c_vol:1 copy") == "pvc-3f1c_vol:1 copy"
    assert validate_snapshot_name("snap.2026-11-27") == "snap.2026-11-27"
    for bad in ["", ".", "..", "a/b", "../x", "a\\b", " lead", "trail ", "tab\there", "naïve", "x" * 256]:
        with pytest.raises(ZbsValidationError):
            validate_lun_name(bad)
        with pytest.raises(ZbsValidationError):
            validate_snapshot_name(bad)


@pytest.mark.parametrize(
    "iqn",
    [
        "iqn.2004-10.com.example:host1",
        "iqn.1993-08.org.debian:01:abcdef0123",
        "iqn.2016-02.com.smartx:system:k8s",
        "iqn.2004-10.com.example",
        "eui.02004567A425678D",
        "naa.52004567BA64678D",
        "naa.52004567BA64678D52004567BA64678D",
    ],
)
def test_valid_iqns_are_kept_as_given(iqn):
    assert validate_iqn(iqn) == iqn


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "iqn",
        "iqn.04-10.com.x",
        "iqn.2004-13.com.x",
        "iqn.2004-10.com.x:a,b",
        "eui.123",
        "host1",
        "iqn.2004-10.com.x:sp ace",
    ],
)
def test_invalid_iqns_are_refused(bad):
    with pytest.raises(ZbsValidationError) as err:
        validate_iqn(bad, "initiator_iqn")
    assert err.value.field == "initiator_iqn"


def test_iqn_length_limit():
    head = "iqn.2004-10.com.example:"
    validate_iqn(head + "a" * (223 - len(head)))
    with pytest.raises(ZbsValidationError):
        validate_iqn(head + "a" * (224 - len(head)))


def test_chap_rules_differ_between_target_and_initiator_and_never_echo_secrets():
    assert validate_chap_name("user.name:1-2") == "user.name:1-2"
    validate_chap_name("u" * 223)
    with pytest.raises(ZbsValidationError):
        validate_chap_name("u" * 224)
    validate_chap_name("u" * 512, initiator=True)
    with pytest.raises(ZbsValidationError):
        validate_chap_name("bad name")
    assert validate_chap_secret("abcdefABCDEF12") == "abcdefABCDEF12"
    validate_chap_secret("a" * 100, initiator=True)
    for bad, initiator in [("Short1", False), ("a" * 17, False), ("a" * 513, True), ("has-dash-secret", False)]:
        with pytest.raises(ZbsValidationError) as err:
            validate_chap_secret(bad, initiator=initiator)
        assert bad not in str(err.value) and bad not in repr(err.value)


def test_numeric_rules():
    assert validate_replica_num(3) == 3
    assert validate_stripe_num(16) == 16
    assert validate_stripe_size("256KiB") == 256 << 10
    assert validate_lun_id(255) == 255
    assert validate_lun_size("64TiB") == 64 << 40
    for fn, bad in [
        (validate_replica_num, 4),
        (validate_replica_num, True),
        (validate_stripe_num, 3),
        (validate_stripe_size, "3KiB"),
        (validate_stripe_size, "512KiB"),
        (validate_stripe_size, 12288),
        (validate_lun_id, 0),
        (validate_lun_id, 256),
        (validate_lun_size, 0),
        (validate_lun_size, (64 << 40) + 1),
    ]:
        with pytest.raises(ZbsValidationError):
            fn(bad)


def test_ids_refuse_path_like_values():
    assert validate_id("ckxyz0123abc") == "ckxyz0123abc"
    assert validate_id("3f1c2d4e-aaaa-bbbb-cccc-0123456789ab")
    for bad in ["", "../etc", "a/b", "a b", "x" * 129, "..", None]:
        with pytest.raises(ZbsValidationError):
            validate_id(bad)  # type: ignore[arg-type]


def test_ip_whitelist_is_normalised():
    assert validate_ip_whitelist("*/*") == "*/*"
    assert validate_ip_whitelist(" 10.0.0.1, 192.168.1.7/24 ") == "10.0.0.1,192.168.1.0/24"
    with pytest.raises(ZbsValidationError):
        validate_ip_whitelist("10.0.0.300")


def test_allowed_initiators_all_none_and_sets():
    every = parse_allowed_initiators(None)
    assert every.kind == "all" and every.allows("iqn.2004-10.com.x:any")
    assert parse_allowed_initiators("*/*") == every
    nobody = parse_allowed_initiators("")
    assert nobody.kind == "none" and not nobody.allows("iqn.2004-10.com.x:a")
    some = parse_allowed_initiators("iqn.2004-10.com.x:b, iqn.2004-10.com.x:a")
    assert some.allows("iqn.2004-10.com.x:a") and not some.allows("iqn.2004-10.com.x:c")
    assert format_allowed_initiators(some) == "iqn.2004-10.com.x:a,iqn.2004-10.com.x:b"
    assert format_allowed_initiators(every) == "*/*"
    assert format_allowed_initiators(nobody) == ""
    assert format_allowed_initiators(["iqn.2004-10.com.x:b", "iqn.2004-10.com.x:b"]) == "iqn.2004-10.com.x:b"
    grown = nobody.with_added("iqn.2004-10.com.x:c")
    assert grown == AllowedInitiators("set", frozenset({"iqn.2004-10.com.x:c"}))
    assert grown.without("iqn.2004-10.com.x:c").kind == "none"
    assert every.with_added("iqn.2004-10.com.x:c") is every
    for bad in ["iqn.2004-10.com.x:a,,iqn.2004-10.com.x:b", "not-an-iqn", "*"]:
        with pytest.raises(ZbsValidationError) as err:
            parse_allowed_initiators(bad)
        assert err.value.field == "allowed_initiators"


def test_the_lun_size_limit_is_said_in_a_readable_unit():
    with pytest.raises(ZbsValidationError) as err:
        validate_lun_size("65TiB")
    assert "65TiB" in str(err.value) and "above the 64TiB maximum" in str(err.value)
