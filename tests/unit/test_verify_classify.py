"""Served-certificate classification, chain completeness and address parsing (no servers)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from certlocker.delivery.verify import (
    Served,
    TrustAnchors,
    classify,
    join_address,
    missing_issuer,
    split_address,
)
from certlocker.models import CertificateInfo
from tests.support.nginx_pool import MiniCA

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)
D = dt.timedelta
IN_30_DAYS = NOW + D(days=30)
CURRENT_FP = "aa" * 32
OLD_FP = "bb" * 32
OTHER_FP = "cc" * 32

EXPECTED = CertificateInfo(
    serial="1f", not_before=NOW - D(days=10), not_after=NOW + D(days=80),
    sha256_fingerprint=CURRENT_FP.upper(), issuer="test")
HISTORY = {OLD_FP, "0e:0f"}  # a fingerprint and a serial, as CertificateStatus keeps them


def served(fp: str, *, serial: str = "99", not_after: dt.datetime = IN_30_DAYS,
           missing: str | None = None) -> Served:
    return Served(sha256=fp, serial=serial, not_before=NOW - D(days=60),
                  not_after=not_after, chain=(b"leaf",), missing_issuer=missing)


@pytest.mark.parametrize(
    ("probe", "error", "status"),
    [
        pytest.param(served(CURRENT_FP), None, "ok",
                     id="the current leaf with its chain is ok"),
        pytest.param(served(OLD_FP), None, "stale",
                     id="an older fingerprint of this certificate is stale"),
        pytest.param(served(OTHER_FP, serial="e0f"), None, "stale",
                     id="an older serial of this certificate is stale"),
        pytest.param(served(OTHER_FP), None, "mismatch",
                     id="anything else is a mismatch"),
        pytest.param(None, "connection refused", "unreachable",
                     id="a refused connection is unreachable"),
        pytest.param(None, None, "unreachable",
                     id="no answer at all is unreachable"),
        pytest.param(served(CURRENT_FP, missing="CN=Intermediate"), None, "chain-incomplete",
                     id="the current leaf without its intermediate is chain-incomplete"),
        pytest.param(served(OLD_FP, missing="CN=Intermediate"), None, "stale",
                     id="stale outranks chain-incomplete, redeploying fixes both"),
        pytest.param(served(OTHER_FP, missing="CN=Other"), None, "mismatch",
                     id="mismatch outranks chain-incomplete"),
        pytest.param(served(CURRENT_FP, not_after=NOW - D(seconds=1)), None, "expired",
                     id="the current leaf past not_after is expired"),
        pytest.param(served(OLD_FP, not_after=NOW - D(days=1)), None, "expired",
                     id="expired outranks stale because clients fail now"),
        pytest.param(served(OTHER_FP, not_after=NOW - D(days=1)), None, "expired",
                     id="expired outranks mismatch"),
        pytest.param(served(CURRENT_FP, not_after=NOW), None, "ok",
                     id="at exactly not_after the leaf is still valid"),
    ],
)
def test_classify(probe: Served | None, error: str | None, status: str) -> None:
    result = classify(EXPECTED, HISTORY, probe, error, NOW)
    assert result.status == status
    assert result.checked_at == NOW
    assert result.served_sha256 == (probe.sha256 if probe else None)


def test_classify_details_say_which_certificate_expired_and_what_was_refused() -> None:
    stale_expired = classify(EXPECTED, HISTORY, served(OLD_FP, not_after=NOW - D(days=1)),
                             None, NOW)
    assert stale_expired.detail is not None and stale_expired.detail.startswith("older")
    refused = classify(EXPECTED, HISTORY, None, "connection refused", NOW)
    assert refused.detail == "connection refused"


def test_history_serials_match_regardless_of_leading_zeros_and_colons() -> None:
    assert classify(EXPECTED, ["00:0E:0F"], served(OTHER_FP, serial="e0f"), None,
                    NOW).status == "stale"
    assert classify(EXPECTED, ["0e10"], served(OTHER_FP, serial="e0f"), None,
                    NOW).status == "mismatch"


@pytest.fixture(scope="module")
def ca() -> MiniCA:
    return MiniCA()


def test_a_chain_reaching_a_trusted_root_is_complete(ca: MiniCA) -> None:
    leaf = ca.leaf(["a.example"])
    anchors = TrustAnchors([ca.root.cert])
    assert missing_issuer((leaf.der, ca.intermediate.der), anchors) is None


def test_a_leaf_without_its_intermediate_names_the_missing_issuer(ca: MiniCA) -> None:
    leaf = ca.leaf(["a.example"])
    anchors = TrustAnchors([ca.root.cert])
    assert missing_issuer((leaf.der,), anchors) == "CN=certlocker test intermediate"


def test_an_unknown_root_leaves_the_chain_incomplete(ca: MiniCA) -> None:
    leaf = ca.leaf(["a.example"])
    assert missing_issuer((leaf.der, ca.intermediate.der), TrustAnchors()) == \
        "CN=certlocker test root"


def test_a_served_self_signed_root_completes_the_chain(ca: MiniCA) -> None:
    leaf = ca.leaf(["a.example"])
    assert missing_issuer((leaf.der, ca.root.der, ca.intermediate.der), TrustAnchors()) is None


def test_an_intermediate_from_another_ca_does_not_complete_the_chain(ca: MiniCA) -> None:
    other = MiniCA("other")
    leaf = ca.leaf(["a.example"])
    anchors = TrustAnchors([ca.root.cert, other.root.cert])
    assert missing_issuer((leaf.der, other.intermediate.der), anchors) is not None


def test_an_intermediate_with_the_right_name_but_wrong_key_is_not_the_issuer(
        ca: MiniCA) -> None:
    impostor = MiniCA()  # same subject names, different keys
    leaf = ca.leaf(["a.example"])
    anchors = TrustAnchors([ca.root.cert])
    assert missing_issuer((leaf.der, impostor.intermediate.der), anchors) is not None


def test_anchors_from_pem_add_to_the_system_bundle(ca: MiniCA) -> None:
    anchors = TrustAnchors.from_pem(ca.root.pem)
    assert anchors.issued(ca.intermediate.cert)
    assert not TrustAnchors.system().issued(ca.intermediate.cert)


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        pytest.param("example.com:8443", ("example.com", 8443), id="name and port"),
        pytest.param("example.com", ("example.com", 443), id="a bare name defaults to 443"),
        pytest.param("10.0.0.1:443", ("10.0.0.1", 443), id="IPv4 and port"),
        pytest.param("[2001:db8::1]:8443", ("2001:db8::1", 8443), id="bracketed IPv6"),
        pytest.param("2001:db8::1", ("2001:db8::1", 443), id="bare IPv6"),
    ],
)
def test_split_address(address: str, parsed: tuple[str, int]) -> None:
    assert split_address(address) == parsed
    if ":" not in address or address.startswith("[") or address.count(":") == 1:
        host, port = parsed
        assert split_address(join_address(host, port)) == parsed


@pytest.mark.parametrize("address", [":443", "host:0", "host:70000", "host:https", "[::1"])
def test_split_address_rejects(address: str) -> None:
    with pytest.raises(ValueError):
        split_address(address)


def test_served_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        served(CURRENT_FP).sha256 = "x"  # type: ignore[misc]
