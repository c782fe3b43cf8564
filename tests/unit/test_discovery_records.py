"""Discovery records and their classification against the inventory, on an in-memory
store (tests/support/memory_store.py keeps real KV v2 semantics)."""

from __future__ import annotations

import datetime as dt

import pytest

from certlocker.clock import FixedClock
from certlocker.discovery.files import FoundCertificate
from certlocker.discovery.records import MAX_SOURCES, merge
from certlocker.discovery.scan import ScanError
from certlocker.discovery.service import DiscoveryService
from certlocker.errors import Conflict, NotFound
from certlocker.models import CertificateInfo, CertificateRef, CertificateStatus, State
from tests.support.memory_store import MemoryStore
from tests.support.pools import discovery_pools

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def found(fp: str, source: str, days: int = 90, ca: bool = False) -> FoundCertificate:
    return FoundCertificate(sha256_fingerprint=fp * 64 if len(fp) == 1 else fp,
                            subject=f"CN={fp}.test", dns_names=(f"{fp}.test",),
                            issuer="CN=someone", serial="0a", not_before=NOW - dt.timedelta(1),
                            not_after=NOW + dt.timedelta(days=days), source=source, is_ca=ca)


def issued(store: MemoryStore, ref: CertificateRef, current: str, history: tuple[str, ...]) -> None:
    info = CertificateInfo("01", NOW, NOW + dt.timedelta(days=90), current * 64, "CN=ca")
    store.write_status(ref, CertificateStatus(State.VALID, current=info,
                                              history=tuple(h * 64 for h in history)), cas=0)


def test_a_certificate_seen_again_keeps_its_first_sighting_and_gains_sources() -> None:
    first = merge(None, found("a", "tls:10.0.0.1:443"), NOW)
    later = NOW + dt.timedelta(hours=1)
    again = merge(first, found("a", "tls:10.0.0.1:443"), later)
    more = merge(again, found("a", "file://h/etc/a.pem"), later)
    assert [(s.source, s.first_seen, s.last_seen) for s in more.sources] == [
        ("file://h/etc/a.pem", later, later), ("tls:10.0.0.1:443", NOW, later)]
    assert more.first_seen == NOW and more.last_seen == later


def test_sources_are_capped_to_the_most_recently_seen() -> None:
    record = None
    for i in range(MAX_SOURCES + 5):
        record = merge(record, found("a", f"tls:10.0.0.{i}:443"),
                       NOW + dt.timedelta(seconds=i))
    assert record is not None and len(record.sources) == MAX_SOURCES
    assert "tls:10.0.0.0:443" not in {s.source for s in record.sources}


def test_the_expiring_flag_is_computed_when_read() -> None:
    record = merge(None, found("a", "tls:x:1", days=10), NOW)
    assert record.view(NOW, dt.timedelta(days=30))["expiring_soon"] is True
    assert record.view(NOW, dt.timedelta(days=5))["expiring_soon"] is False
    assert record.view(NOW + dt.timedelta(days=11), dt.timedelta(days=5))["expired"] is True


def test_record_stores_only_unmanaged_leaves() -> None:
    store = MemoryStore()
    issued(store, CertificateRef("prod", "web", "www"), "b", ("c",))
    svc = DiscoveryService(store, clock=FixedClock(NOW), pools=discovery_pools())
    result = svc.record([found("a", "tls:h:1"), found("b", "tls:h:2"),
                         found("c", "tls:h:3"), found("d", "file:/x", ca=True),
                         ScanError("h", 4, "refused")])
    assert [(fp[0], cid) for fp, cid, _ in result.managed] == [
        ("b", "prod.web.www"), ("c", "prod.web.www")]
    assert [d.sha256_fingerprint[0] for d in result.unmanaged] == ["a"]
    assert result.ca_certificates == 1 and dict(result.errors) == {"refused": 1}
    assert store.list("discovered/") == ["a" * 64]
    assert [d.sha256_fingerprint for d in svc.entries()] == ["a" * 64]


def test_a_self_signed_ca_certificate_served_on_a_port_is_unmanaged() -> None:
    """``openssl req -x509`` marks its certificate CA:TRUE; served, it is a server's leaf.
    The same CA flag in a file is a chain certificate, counted, not recorded."""
    store = MemoryStore()
    svc = DiscoveryService(store, clock=FixedClock(NOW), pools=discovery_pools())
    result = svc.record([found("e", "tls:h:5", ca=True), found("f", "file:/ca.pem", ca=True)],
                        known={})
    assert [(d.sha256_fingerprint[0], d.is_ca) for d in result.unmanaged] == [("e", True)]
    assert result.unmanaged_sources == (("e" * 64, "tls:h:5"),)
    assert result.ca_certificates == 1
    assert store.list("discovered/") == ["e" * 64]


def test_adoption_happens_once() -> None:
    store = MemoryStore()
    svc = DiscoveryService(store, clock=FixedClock(NOW), pools=discovery_pools())
    svc.record([found("a", "tls:h:1")], known={})
    adopted = svc.mark_adopted("a" * 64, "prod.web.www", "alice")
    assert adopted.state == "adopted" and adopted.adoption is not None
    with pytest.raises(Conflict):
        svc.mark_adopted("a" * 64, "prod.web.other", "bob")
    assert svc.entries() == [] and len(svc.entries(state="adopted")) == 1
    with pytest.raises(NotFound):
        svc.get("nothex")
