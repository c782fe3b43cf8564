"""The one spec parser: declarations and records written with the Vault CLI, and the JSON
Schema rendered from it, which must accept and refuse the same bodies."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from certlocker.errors import InvalidInput
from certlocker.models import CertificateRef, KeyType, Target
from certlocker.specs import SpecRules, declaration_schema, from_record, parse

RULES = SpecRules(environments=("dev", "prod"),
                  issuers={"le": "http-01", "dns": "dns-01"}, default_issuer="le")
REF = CertificateRef("prod", "shop", "www")


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"environment": "prod", "service": "shop", "name": "www",
                            "dns_names": ["www.shop.test"]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()

# (body, the field the parser names) — None: valid
CASES: list[tuple[dict[str, Any], str | None]] = [
    (body(), None),
    (body(issuer="dns", dns_names=["*.shop.test"]), None),
    (body(key_type="rsa-2048", renew_before="30d", owner="team", contact="a@b.test",
          targets=["127.0.0.1:443", {"address": "[::1]:8443", "sni": "www.shop.test",
                                     "ips": ["127.0.0.2"]}]), None),
    (body(environment="staging"), "environment"),
    (body(environment=DROP), "environment"),
    (body(service="Shop"), "service"),
    (body(name="a/b"), "name"),
    (body(dns_names="www.shop.test"), "dns_names"),
    (body(dns_names=[]), "dns_names"),
    (body(dns_names=[f"n{i}.shop.test" for i in range(101)]), "dns_names"),
    (body(dns_names=[7]), "dns_names/0"),
    (body(dns_names=["x" * 254]), "dns_names/0"),
    (body(dns_names=["*.shop.test"]), "dns_names/0"),  # wildcard with an http-01 issuer
    # read as IPv4 addresses by URL parsers (127.0.0.1, 0.0.0.0, 16.0.0.1)
    (body(dns_names=["127.1"]), "dns_names/0"),
    (body(dns_names=["0"]), "dns_names/0"),
    (body(dns_names=["www.0x10"]), "dns_names/0"),
    (body(dns_names=["www.shop.test", "2130706433"]), "dns_names/1"),
    (body(dns_names=["0x.shop.test", "1.www.shop.test", "shop.0test"]), None),
    (body(issuer="nowhere"), "issuer"),
    (body(issuer=""), "issuer"),
    (body(key_type="dsa"), "key_type"),
    (body(renew_before=30), "renew_before"),
    (body(renew_before="x" * 33), "renew_before"),
    (body(renew_before="soon"), "renew_before"),
    (body(targets="127.0.0.1:443"), "targets"),
    (body(targets=[{"address": "127.0.0.1:443", "port": 1}]), "targets/0/port"),
    (body(targets=[{"sni": "x.test"}]), "targets/0/address"),
    (body(targets=["127.0.0.1"]), "targets/0/address"),
    (body(targets=[{"address": "127.0.0.1:443", "ips": "127.0.0.1"}]), "targets/0/ips"),
    (body(owner="x" * 201), "owner"),
    (body(contact=5), "contact"),
    (body(colour="blue"), "colour"),
]


@pytest.mark.parametrize("declaration, field", CASES)
def test_the_parser_names_the_bad_field(declaration: dict[str, Any],
                                        field: str | None) -> None:
    if field is None:
        spec = parse(declaration, RULES)
        assert spec.problem is None and spec.ref == REF
        return
    with pytest.raises(InvalidInput) as err:
        parse(declaration, RULES)
    assert err.value.field == field


# Checks JSON Schema cannot state (an IDNA label, a port's range, a bare number
# of 1 or more in renew_before): the parser refuses them, the schema only describes them.
BEYOND_SCHEMA = {"dns_names/0", "dns_names/1", "targets/0/address"}


@pytest.mark.parametrize("declaration, field", CASES)
def test_the_openapi_schema_accepts_and_refuses_the_same_bodies(
        declaration: dict[str, Any], field: str | None) -> None:
    schema = declaration_schema(RULES)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(declaration))
    if field is None:
        assert errors == []
    elif field not in BEYOND_SCHEMA or declaration.get("dns_names") == [7]:
        assert errors, f"the schema accepts what the parser refuses at {field}"


def test_defaults_come_from_the_rules() -> None:
    spec = parse(body(), RULES)
    assert spec.issuer == "le" and spec.key_type is KeyType.EC_P256
    assert parse(body(targets=["[::1]:443"]), RULES).targets == (Target("[::1]:443"),)


def test_without_a_default_issuer_one_must_be_named() -> None:
    rules = SpecRules(environments=("prod",), issuers={"a": "http-01", "b": "http-01"})
    with pytest.raises(InvalidInput) as err:
        parse(body(), rules)
    assert err.value.field == "issuer" and "is required" in err.value.reason


# -- records written with the Vault CLI -------------------------------------------------


def test_a_record_takes_its_names_from_the_path() -> None:
    spec = from_record({"dns_names": ["www.shop.test"]}, REF, RULES)
    assert spec.problem is None and spec.ref == REF and spec.issuer == "le"


def test_a_string_where_a_list_belongs_is_refused_not_split() -> None:
    spec = from_record({"dns_names": "www.shop.test"}, REF, RULES)
    assert spec.dns_names == ()
    assert spec.problem is not None and "must be a list of DNS names, not a string" in \
        spec.problem and "@spec.json" in spec.problem


@pytest.mark.parametrize("record, words", [
    ({"dns_names": ["a.test"], "service": "other"}, "service: is 'other'"),
    ({}, "dns_names: must be a non-empty list"),
    ({"dns_names": ["a.test"], "issuer": 5}, "issuer: must be one of"),
    ({"dns_names": ["a.test"], "renew_before": "9" * 30 + "d"}, "renew_before"),
])
def test_a_record_that_does_not_parse_carries_the_reason(record: dict[str, Any],
                                                         words: str) -> None:
    spec = from_record(record, REF, RULES)
    assert spec.problem is not None and words in spec.problem
    assert spec.dns_names == () and spec.targets == ()
