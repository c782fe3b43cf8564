"""Name ownership rules, as sentences: what a grant covers, who holds a name, and what an
in-memory store sees when a declaration or an order is checked."""

from __future__ import annotations

import pytest

from certlocker.errors import InvalidInput, NamesRefused
from certlocker.lifecycle.name_grants import NameOwnership
from certlocker.models import CertificateRef, CertificateSpec
from certlocker.ownership import (HELD_ELSEWHERE, NO_GRANT, NOT_GRANTED, Grant, claim_key,
                                  parse_grant, refusals)
from tests.support.memory_store import MemoryStore, grant

GRANT = Grant(dns_names=("www.shop.test", "*.cdn.shop.test"), zones=("api.shop.test",))


@pytest.mark.parametrize("name, covered", [
    ("www.shop.test", True),                 # listed exactly
    ("shop.test", False),                    # the parent of a listed name is not granted
    ("other.shop.test", False),
    ("*.cdn.shop.test", True),               # a wildcard listed exactly
    ("img.cdn.shop.test", False),            # ... grants that wildcard name only
    ("api.shop.test", True),                 # a zone grants its apex
    ("v1.api.shop.test", True),              # ... every name under it
    ("*.api.shop.test", True),               # ... and wildcards under it
    ("evilapi.shop.test", False),            # a suffix that is not a label boundary
])
def test_what_a_grant_covers(name: str, covered: bool) -> None:
    assert GRANT.covers(name) is covered


def test_no_grant_covers_nothing() -> None:
    assert not NO_GRANT.covers("www.shop.test")
    assert refusals(["www.shop.test"], "shop", NO_GRANT, {})[0].reason == NOT_GRANTED


def test_a_name_held_by_another_service_is_refused_unless_shared() -> None:
    held = {"www.shop.test": "checkout"}
    [refused] = refusals(["www.shop.test"], "shop", GRANT, held)
    assert refused.reason == HELD_ELSEWHERE and "held by service checkout" in refused.detail
    shared = Grant(dns_names=GRANT.dns_names, shared=("www.shop.test",))
    assert refusals(["www.shop.test"], "shop", shared, held) == ()
    assert refusals(["www.shop.test"], "shop", GRANT, {"www.shop.test": "shop"}) == ()


def test_a_grant_record_must_hold_json_lists_of_names() -> None:
    assert parse_grant({"dns_names": ["WWW.Shop.test."]}).dns_names == ("www.shop.test",)
    for bad, field in (({"dns_names": "www.shop.test"}, "dns_names"),
                       ({"zones": ["*.shop.test"]}, "zones/0"),
                       ({"names": []}, "names")):
        with pytest.raises(InvalidInput) as err:
            parse_grant(bad)
        assert err.value.field == field


def test_a_wildcard_claim_key_is_a_path_component() -> None:
    assert claim_key("*.shop.test") == "_.shop.test"
    assert claim_key("www.shop.test") == "www.shop.test"


# -- enforced over a store --------------------------------------------------------------

SPEC = CertificateSpec(CertificateRef("prod", "shop", "www"), ("www.shop.test",), "le")


class Operator(MemoryStore):
    """A team operator's token over the same data: Vault grants it no grant writes."""

    def __init__(self, store: MemoryStore) -> None:
        self.__dict__ = store.__dict__

    def capabilities(self, api_path: str) -> set[str]:
        return {"read"}


def test_an_order_claims_its_names_and_another_service_is_then_refused() -> None:
    store = MemoryStore()
    grant(store, SPEC)
    names = NameOwnership(store)
    assert names.enforce(SPEC) == ()
    holder, _ = store.read_json(store.paths.name_claim("www.shop.test"))
    assert holder is not None and holder["service"] == "shop"
    thief = CertificateSpec(CertificateRef("prod", "thief", "www"), SPEC.dns_names, "le")
    grant(store, thief)  # even granted, the name is held by shop
    [refused] = names.enforce(thief)
    assert refused.reason == HELD_ELSEWHERE


def test_a_team_declaration_of_ungranted_names_is_refused_and_an_admins_grants_them() -> None:
    store = MemoryStore()
    names = NameOwnership(store)
    with pytest.raises(NamesRefused) as err:
        names.admit(Operator(store), SPEC, actor="team")
    assert err.value.refused[0]["reason"] == NOT_GRANTED
    assert err.value.status == 403
    assert names.admit(store, SPEC, actor="admin") == ("www.shop.test",)


def test_a_grant_that_does_not_parse_grants_nothing_and_says_why() -> None:
    store = MemoryStore()
    store.write(store.paths.grant("prod", "shop"), {"dns_names": "www.shop.test"}, cas=None)
    [refused] = NameOwnership(store).refused(SPEC)
    assert refused.reason == NOT_GRANTED and "grants/prod/shop: dns_names" in refused.detail


def test_retiring_lets_go_of_names_no_other_certificate_of_the_service_carries() -> None:
    store = MemoryStore()
    grant(store, SPEC)
    names = NameOwnership(store)
    names.enforce(SPEC)
    names.release(SPEC.ref, SPEC.dns_names, still_used=["www.shop.test"])
    assert store.read_json(store.paths.name_claim("www.shop.test"))[0] is not None
    names.release(SPEC.ref, SPEC.dns_names)
    assert store.read_json(store.paths.name_claim("www.shop.test"))[0] is None
