"""Domain state as types: the in-flight journal record and the stored/shown enums keep
exactly the strings and shapes earlier releases wrote."""

from __future__ import annotations

import datetime as dt

from certlocker.issuance.base import Inflight
from certlocker.lifecycle import reconciler, retirement, revocation


def test_an_acme_journal_reads_and_writes_the_same_record() -> None:
    stored = {"private_key": "PEM", "order_url": "https://ca/order/1",
              "dns_names": ["b.test", "a.test"], "issuer": "pebble", "key_type": "ec-p256"}
    state = Inflight.from_json(stored)
    assert state is not None and state.to_json() == stored
    assert state.for_names(("a.test", "b.test")) and not state.for_names(("a.test",))


def test_a_pki_journal_keeps_its_shape_without_order_or_key_type() -> None:
    stored = {"private_key": "PEM", "dns_names": ["a.test"], "issuer": "internal"}
    state = Inflight.from_json(stored)
    assert state is not None and state.order_url is None and state.key_type is None
    assert state.to_json() == stored


def test_a_foreign_record_reads_as_nothing_to_resume() -> None:
    assert Inflight.from_json(None) is None
    assert Inflight.from_json([1]) is None  # type: ignore[arg-type]
    odd = Inflight.from_json({"private_key": 7, "dns_names": "a.test", "order_url": ""})
    assert odd == Inflight()


def test_the_key_is_never_in_a_repr() -> None:
    assert "SECRET" not in repr(Inflight(private_key="SECRET", dns_names=("a.test",)))


def test_outcomes_and_phases_keep_their_stored_strings() -> None:
    assert [str(o) for o in reconciler.Outcome] == [
        "issued", "failed", "busy", "gone", "up-to-date", "error", "stopped"]
    assert [str(p) for p in revocation.Phase] == [
        "replacing", "removing", "destroying", "verifying", "done", "verify-timeout"]
    assert [str(p) for p in retirement.Phase] == [
        "requested", "revoking", "credentials", "destroying", "verifying", "done"]
    assert revocation.FINAL == ("done", "verify-timeout")
    assert {reconciler.ISSUED: 1} == {"issued": 1}  # reports compare as before


def test_a_retirement_record_stores_its_phase_as_a_plain_string() -> None:
    record = retirement.Retirement(phase=retirement.VERIFYING, requested_by="alice",
                                   requested_at=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
                                   revoke=True, spec=None)
    data = record.to_json()
    assert type(data["phase"]) is str and data["phase"] == "verifying"
    assert retirement.Retirement.from_json(data).phase is retirement.Phase.VERIFYING
    assert retirement.Retirement.from_json({**data, "phase": "bogus"}).phase is \
        retirement.Phase.REVOKING
