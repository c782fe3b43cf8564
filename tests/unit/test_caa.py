"""CAA (RFC 8659) decisions as a table: each case reads as a sentence."""

from __future__ import annotations

import pytest

from certlocker.errors import IssuanceFailed
from certlocker.issuance.caa import CaaRecord, check, refusal, relevant_rrset

US = ("pebble.test", "letsencrypt.org")


def issue(value: str, flags: int = 0) -> CaaRecord:
    return CaaRecord(flags, "issue", value)


def wild(value: str) -> CaaRecord:
    return CaaRecord(0, "issuewild", value)


REFUSAL_CASES = [
    ("an issue record naming us permits", [issue("pebble.test")], False, True),
    ("names compare case-insensitively and ignore a final dot",
     [issue("Pebble.TEST.")], False, True),
    ("an issue record naming only another CA refuses", [issue("other.test")], False, False),
    ("one matching record among several permits",
     [issue("other.test"), issue("letsencrypt.org")], False, True),
    ("an empty issue value permits no CA", [issue(";")], False, False),
    ("a malformed value is no permission", [issue("pebble.test; bad param")], False, False),
    ("only iodef records restrict nothing", [CaaRecord(0, "iodef", "mailto:x@y.test")],
     False, True),
    ("an unknown non-critical tag is ignored", [CaaRecord(0, "future", "x"),
                                               issue("pebble.test")], False, True),
    ("an unknown critical tag refuses", [CaaRecord(128, "future", "x"),
                                         issue("pebble.test")], False, False),
    ("a wildcard obeys issue when there is no issuewild", [issue("pebble.test")], True, True),
    ("a wildcard obeys issuewild over issue",
     [issue("pebble.test"), wild(";")], True, False),
    ("issuewild naming us permits a wildcard even if issue does not",
     [issue("other.test"), wild("pebble.test")], True, True),
    ("issuewild does not apply to a non-wildcard name",
     [issue("pebble.test"), wild(";")], False, True),
    ("validationmethods that include ours permit",
     [issue("pebble.test; validationmethods=dns-01,http-01")], False, True),
    ("validationmethods without ours refuse",
     [issue("pebble.test; validationmethods=tls-alpn-01")], False, False),
    ("an accounturi of another account refuses",
     [issue("pebble.test; accounturi=https://ca.test/acct/2")], False, False),
    ("our accounturi permits",
     [issue("pebble.test; accounturi=https://ca.test/acct/1")], False, True),
]


@pytest.mark.parametrize("records,wildcard,permitted",
                         [c[1:] for c in REFUSAL_CASES], ids=[c[0] for c in REFUSAL_CASES])
def test_refusal(records: list[CaaRecord], wildcard: bool, permitted: bool) -> None:
    reason = refusal(records, US, wildcard=wildcard, account_uri="https://ca.test/acct/1",
                     method="http-01")
    assert (reason is None) is permitted, reason


ZONE = {
    "example.test": [issue("other.test")],
    "open.example.test": [issue("pebble.test")],
}


@pytest.mark.parametrize("name,owner", [
    ("example.test", "example.test"),
    ("www.example.test", "example.test"),
    ("a.b.open.example.test", "open.example.test"),
    ("*.open.example.test", "open.example.test"),
    ("elsewhere.test", None),
], ids=["the name itself", "its parent", "the closest ancestor wins",
        "a wildcard starts at its base name", "no record anywhere"])
def test_relevant_rrset_walks_up_the_tree(name: str, owner: str | None) -> None:
    asked: list[str] = []

    def lookup(n: str) -> list[CaaRecord]:
        asked.append(n)
        return ZONE.get(n, [])

    found = relevant_rrset(name, lookup)
    assert (found[0] if found else None) == owner
    assert "" not in asked and "*" not in "".join(asked)


def test_check_names_the_refused_name_and_record() -> None:
    with pytest.raises(IssuanceFailed) as caught:
        check(["ok.open.example.test", "www.example.test"], US,
              lambda n: ZONE.get(n, []))
    err = caught.value
    assert err.acme_code == "caa" and err.retryable is False
    assert err.detail.startswith("www.example.test:")
    assert 'issue "other.test"' in err.detail and "CAA at example.test" in err.detail


def test_check_permits_names_without_caa_and_skips_when_identities_unknown() -> None:
    check(["elsewhere.test"], US, lambda n: ZONE.get(n, []))
    check(["www.example.test"], (), lambda n: ZONE.get(n, []))
