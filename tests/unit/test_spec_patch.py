"""PATCH of a spec: an RFC 7396 merge patch held to the declaration's rules, and a
changed spec acted on at once (backoff cleared, the issuance it needs queued).

Real CertificateService; the honest in-memory store and issuer from tests/support."""

from __future__ import annotations

import pytest

from certlocker import specs
from certlocker.errors import Conflict, InvalidInput, IssuanceFailed, NotFound
from certlocker.lifecycle.service import CertificateService
from certlocker.models import CertificateRef, CertificateSpec, State
from tests.support.memory_issuer import MemoryIssuer
from tests.support.memory_store import MemoryStore, grant
from tests.support.pools import certificate_pools

REF = CertificateRef("prod", "shop", "www")
RULES = specs.SpecRules(environments=("prod", "dev"), issuers={"test": "http-01"},
                        default_issuer="test")


def record(**extra: object) -> dict:
    return {"environment": "prod", "service": "shop", "name": "www",
            "dns_names": ["www.shop.test"], "issuer": "test", **extra}


def test_merge_patch_follows_rfc_7396() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "list": [3]}
    assert specs.merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "list": [3]}
    assert target["c"] == {"d": "e", "f": "g"}, "the stored record is not modified"


def test_patched_spec_is_parsed_like_a_declaration() -> None:
    spec = specs.patched(record(owner="team-a"), {"targets": ["web1.shop.test:443"],
                                                   "owner": None}, REF, RULES)
    assert [t.address for t in spec.targets] == ["web1.shop.test:443"]
    assert spec.owner is None and spec.dns_names == ("www.shop.test",)

    with pytest.raises(InvalidInput) as bad:
        specs.patched(record(), {"targets": ["no-port"]}, REF, RULES)
    assert bad.value.field == "targets/0/address"
    with pytest.raises(InvalidInput) as bad:
        specs.patched(record(), {"issuer": "elsewhere"}, REF, RULES)
    assert bad.value.field == "issuer"
    with pytest.raises(InvalidInput) as bad:
        specs.patched(record(), {"environment": "dev"}, REF, RULES)
    assert bad.value.field == "environment"
    with pytest.raises(InvalidInput):
        specs.patched(record(), {}, REF, RULES)
    with pytest.raises(InvalidInput) as bad:
        specs.patched(record(), {"dns_names": None}, REF, RULES)
    assert bad.value.field == "dns_names"
    # a record the Vault CLI wrote wrong is fixed by the patch
    fixed = specs.patched(record(dns_names="www.shop.test"), {"dns_names": ["www.shop.test"]},
                          REF, RULES)
    assert fixed.dns_names == ("www.shop.test",)


@pytest.fixture
def world():
    store, issuer = MemoryStore(spec_rules=RULES), MemoryIssuer("test")
    service = CertificateService(store, {"test": issuer}, pools=certificate_pools(1))
    yield store, issuer, service
    service.shutdown()


def test_a_patch_clears_backoff_and_issues_what_the_change_needs(world) -> None:
    store, issuer, service = world
    spec = CertificateSpec(REF, ("www.shop.test",), "test")
    grant(store, spec)
    store.create_spec(spec)
    issuer.fail_with = IssuanceFailed("the CA is down")
    failed = service.issue(REF)
    assert failed.state is State.FAILED and failed.next_attempt_at is not None
    issuer.fail_with = None

    new, changed, queued = service.update_spec(
        store, REF, {"dns_names": ["www.shop.test", "shop.test"],
                     "targets": ["127.0.0.1:8443"]}, RULES, actor="alice")

    assert changed == ["dns_names", "targets"]
    assert queued is not None, "the new name needs a certificate: issued at once"
    done = queued.result(timeout=30)
    assert done.state is State.VALID and done.next_attempt_at is None
    stored, _ = store.read_spec(REF)
    assert stored == new and stored.dns_names == ("www.shop.test", "shop.test")


def test_a_targets_only_patch_clears_backoff_without_an_order(world) -> None:
    store, issuer, service = world
    spec = CertificateSpec(REF, ("www.shop.test",), "test")
    grant(store, spec)
    store.create_spec(spec)
    assert service.issue(REF).state is State.VALID
    issued = len(issuer.issued)

    _, changed, queued = service.update_spec(store, REF, {"targets": ["127.0.0.1:8443"]},
                                             RULES)
    assert changed == ["targets"] and queued is None
    assert len(issuer.issued) == issued
    _, again, _ = service.update_spec(store, REF, {"targets": ["127.0.0.1:8443"]}, RULES)
    assert again == [], "a patch that changes nothing writes nothing"
    assert store.versions(store.paths.spec(REF)) == 2


def test_patch_of_a_missing_certificate_and_a_lost_race(world) -> None:
    store, _, service = world
    with pytest.raises(NotFound):
        service.update_spec(store, REF, {"targets": []}, RULES)

    spec = CertificateSpec(REF, ("www.shop.test",), "test")
    grant(store, spec)
    store.create_spec(spec)

    real_write = store.write

    def write(logical, data, cas):  # another writer changes the spec between our read
        if logical == store.paths.spec(REF):  # and our write
            real_write(logical, {**data, "owner": "someone else"}, cas)
        return real_write(logical, data, cas)

    store.write = write  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        service.update_spec(store, REF, {"owner": "me"}, RULES)
