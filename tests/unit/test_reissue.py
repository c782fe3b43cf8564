"""The "needs reissue?" chain: each case id reads as the rule it checks."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from certlocker.lifecycle.policy.reissue import CHECKS, Decision, needs_reissue
from certlocker.models import (
    CertificateInfo,
    CertificateRef,
    CertificateSpec,
    CertificateStatus,
    KeyType,
    RenewalRequest,
    State,
)

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
D = dt.timedelta

SPEC = CertificateSpec(
    ref=CertificateRef("prod", "api", "api"),
    dns_names=("api.example.com", "www.example.com"),
    issuer="letsencrypt",
    key_type=KeyType.EC_P256,
)
CURRENT = CertificateInfo(
    serial="0abc",
    not_before=T0,
    not_after=T0 + D(days=90),
    sha256_fingerprint="ab" * 32,
    issuer="letsencrypt",
    dns_names=("www.example.com", "api.example.com"),
)
FRESH = T0 + D(days=10)
FAILED = CertificateStatus(State.FAILED, CURRENT, "boom", attempts=2,
                           next_attempt_at=FRESH + D(hours=1))
REQUESTED = CertificateStatus(State.VALID, CURRENT,
                              renewal_request=RenewalRequest(FRESH, "alice"))


def spec(**changes: Any) -> CertificateSpec:
    return dataclasses.replace(SPEC, **changes)


def current(**changes: Any) -> CertificateInfo:
    return dataclasses.replace(CURRENT, **changes)


CASES = [
    pytest.param({"current": None}, Decision(True, "missing"),
                 id="a certificate never issued is missing"),
    pytest.param({"current": None, "issued_key_type": KeyType.RSA_2048},
                 Decision(True, "missing"),
                 id="missing wins over every other check"),
    pytest.param({"spec": spec(dns_names=("api.example.com",))},
                 Decision(True, "names-changed"),
                 id="a name removed from the spec means names changed"),
    pytest.param({"spec": spec(dns_names=SPEC.dns_names + ("new.example.com",))},
                 Decision(True, "names-changed"),
                 id="a name added to the spec means names changed"),
    pytest.param({"spec": spec(dns_names=("WWW.example.com.", "api.example.com"))},
                 Decision(False, "up-to-date"),
                 id="names differing only in order, case or a trailing dot are the same"),
    pytest.param({"spec": spec(dns_names=("api.example.com",)),
                  "issued_key_type": KeyType.RSA_2048, "now": T0 + D(days=100)},
                 Decision(True, "names-changed"),
                 id="names changed wins over key type, issuer and expiry"),
    pytest.param({"issued_key_type": KeyType.RSA_2048}, Decision(True, "key-type-changed"),
                 id="a certificate issued with another key type needs reissue"),
    pytest.param({"issued_key_type": KeyType.EC_P256}, Decision(False, "up-to-date"),
                 id="the same key type is up to date"),
    pytest.param({"issued_key_type": None}, Decision(False, "up-to-date"),
                 id="an unknown issued key type is not a reason to reissue"),
    pytest.param({"issued_key_type": KeyType.RSA_2048, "issued_by": "zerossl"},
                 Decision(True, "key-type-changed"),
                 id="key type changed wins over issuer changed"),
    pytest.param({"issued_by": "zerossl"}, Decision(True, "issuer-changed"),
                 id="a certificate from another issuer needs reissue"),
    pytest.param({"current": current(issuer="zerossl")}, Decision(True, "issuer-changed"),
                 id="the issuer defaults to the one recorded on the certificate"),
    pytest.param({"spec": spec(profile="shortlived"), "current": current(profile="")},
                 Decision(True, "profile-changed"),
                 id="a profile asked for since the issuance needs reissue"),
    pytest.param({"current": current(profile="shortlived")},
                 Decision(True, "profile-changed"),
                 id="a profile dropped from the spec needs reissue"),
    pytest.param({"spec": spec(profile="shortlived"),
                  "current": current(profile="shortlived")},
                 Decision(False, "up-to-date"),
                 id="the profile asked for at issuance is up to date"),
    pytest.param({"spec": spec(profile="shortlived")}, Decision(False, "up-to-date"),
                 id="a certificate from before profiles were recorded is not reissued"),
    pytest.param({"spec": spec(profile="shortlived"), "current": current(profile=""),
                  "issued_by": "zerossl"},
                 Decision(True, "issuer-changed"),
                 id="issuer changed wins over profile changed"),
    pytest.param({"now": T0 + D(days=90)}, Decision(True, "expired"),
                 id="at not_after the certificate is expired"),
    pytest.param({"now": T0 + D(days=200)}, Decision(True, "expired"),
                 id="expired wins over renewal due"),
    pytest.param({"now": T0 + D(days=60)}, Decision(True, "renewal-due"),
                 id="with one third of the lifetime left renewal is due"),
    pytest.param({"now": T0 + D(days=60) - D(seconds=1)}, Decision(False, "up-to-date"),
                 id="a second before one third is left it is up to date"),
    pytest.param({"spec": spec(renew_before="45d"), "now": T0 + D(days=46)},
                 Decision(True, "renewal-due"),
                 id="the spec's renew_before moves the renewal time"),
    pytest.param({"renewal_at": T0 + D(days=5)}, Decision(True, "renewal-due"),
                 id="a given renewal time such as an ARI pick is honoured"),
    pytest.param({"renewal_at": T0 + D(days=80), "now": T0 + D(days=70)},
                 Decision(False, "up-to-date"),
                 id="a given later renewal time overrides the default"),
    pytest.param({}, Decision(False, "up-to-date"),
                 id="a fresh certificate matching its spec is up to date"),
    pytest.param({"now": T0 + D(days=70), "status": FAILED.replace(
                     next_attempt_at=T0 + D(days=70, hours=1))},
                 Decision(False, "in-backoff", trigger="renewal-due"),
                 id="a due renewal waits while backing off after a failure"),
    pytest.param({"now": T0 + D(days=95), "status": FAILED.replace(
                     next_attempt_at=T0 + D(days=95, hours=1))},
                 Decision(False, "in-backoff", trigger="expired"),
                 id="even an expired certificate waits out the backoff"),
    pytest.param({"now": T0 + D(days=70), "status": FAILED.replace(
                     next_attempt_at=T0 + D(days=70))},
                 Decision(True, "renewal-due"),
                 id="when the backoff ends the renewal goes ahead"),
    pytest.param({"status": FAILED}, Decision(False, "up-to-date"),
                 id="backoff alone is no reason to reissue"),
    pytest.param({"current": None, "status": CertificateStatus(
                     State.FAILED, None, "boom", 1, next_attempt_at=FRESH + D(minutes=5))},
                 Decision(False, "in-backoff", trigger="missing"),
                 id="a first issuance that failed also waits out the backoff"),
    pytest.param({"status": REQUESTED}, Decision(True, "renewal-requested"),
                 id="a fresh certificate an operator asked to renew needs reissue"),
    pytest.param({"status": REQUESTED, "now": T0 + D(days=60)},
                 Decision(True, "renewal-due"),
                 id="renewal due wins over renewal requested"),
    pytest.param({"status": REQUESTED.replace(renewal_request=None)},
                 Decision(False, "up-to-date"),
                 id="once answered the request is no reason any more"),
    pytest.param({"status": REQUESTED.replace(next_attempt_at=FRESH + D(minutes=5))},
                 Decision(False, "in-backoff", trigger="renewal-requested"),
                 id="a requested renewal that failed waits out the backoff"),
]


@pytest.mark.parametrize(("overrides", "expected"), CASES)
def test_needs_reissue(overrides: dict[str, Any], expected: Decision) -> None:
    args: dict[str, Any] = {"spec": SPEC, "current": CURRENT, "now": FRESH}
    args.update(overrides)
    spec_arg, current_arg = args.pop("spec"), args.pop("current")
    assert needs_reissue(spec_arg, current_arg, **args) == expected


def test_the_checks_run_in_the_documented_order() -> None:
    assert [check.__name__.replace("_", "-") for check in CHECKS] == [
        "missing", "names-changed", "key-type-changed", "issuer-changed", "profile-changed",
        "expired", "renewal-due", "renewal-requested"]


def test_each_check_names_its_reason_and_says_why_and_the_first_hit_wins() -> None:
    """Names, key type and issuer all changed: only the first check's reason is given,
    with a message naming what differs."""
    decision = needs_reissue(spec(dns_names=("new.example.com",), issuer="zerossl",
                                  key_type=KeyType.RSA_2048), CURRENT, now=FRESH,
                             issued_key_type=KeyType.EC_P256)
    assert decision == Decision(True, "names-changed")
    assert "new.example.com" in decision.message and "api.example.com" in decision.message


def test_a_changed_profile_is_named_in_the_message() -> None:
    decision = needs_reissue(spec(profile="shortlived"), current(profile=""), now=FRESH)
    assert decision.message == ("the spec asks for profile 'shortlived'; the certificate "
                                "was issued for no profile")


def test_a_gated_trigger_says_both_the_gate_and_the_trigger() -> None:
    decision = needs_reissue(spec(dns_names=("new.example.com",)), CURRENT, now=FRESH,
                             status=FAILED)
    assert decision == Decision(False, "in-backoff", trigger="names-changed")
    assert decision.message.startswith("retried at ") and "boom" in decision.message
    assert "new.example.com" in decision.message
