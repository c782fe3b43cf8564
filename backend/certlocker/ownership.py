"""Name ownership: which DNS names a service may carry, as an administrator granted them.

A grant lives in Vault at ``grants/<env>/<service>`` (plain KV fields, so it is managed
with the Vault CLI: ``bao kv put -mount=certlocker grants/prod/shop @grant.json``) and
names what the service may put in its certificates, in the manner of cert-manager's
approver-policy ``allowed.dnsNames``:

``dns_names``  exact identifiers, wildcard ones included (``*.shop.example`` grants that
               wildcard certificate name, nothing else)
``zones``      a zone and every name under it (``shop.example`` grants
               ``shop.example``, ``www.shop.example``, ``*.api.shop.example`` ...)
``shared``     names this service may carry even while another service holds them

No grant means no names (default deny). A name is *held* by the first service that gets
a certificate for it (``system/names/<name>``, written by certlocker); another service
is refused it unless an administrator listed it under ``shared`` in that service's grant.
Pure: no I/O; ``lifecycle.name_grants`` reads and writes the records.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from . import names
from .errors import InvalidInput

GRANT_FIELDS = ("dns_names", "zones", "shared")
MAX_GRANT_ENTRIES = 1000
NOT_GRANTED = "not-granted"
HELD_ELSEWHERE = "held-by-another-service"


@dataclasses.dataclass(frozen=True)
class Grant:
    dns_names: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()

    def covers(self, name: str) -> bool:
        """Is ``name`` (normalised, as in a spec) granted?"""
        if name in self.dns_names:
            return True
        base = name[2:] if name.startswith("*.") else name
        return any(base == zone or base.endswith("." + zone) for zone in self.zones)

    def with_names(self, extra: Iterable[str]) -> "Grant":
        """This grant with ``extra`` added to ``dns_names`` (an administrator's declaration)."""
        return dataclasses.replace(self, dns_names=tuple(dict.fromkeys(
            (*self.dns_names, *extra))))

    def to_record(self) -> dict[str, Any]:
        return {"dns_names": list(self.dns_names), "zones": list(self.zones),
                "shared": list(self.shared)}


NO_GRANT = Grant()


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One name a service may not carry, and why (``reason`` is a slug, ``detail`` prose)."""

    name: str
    reason: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason, "detail": self.detail}


def parse_grant(data: Mapping[str, Any] | None) -> Grant:
    """A grant record (``None``: no grant).

    :raises InvalidInput: naming the bad field; lists must be JSON lists (with the Vault
        CLI: ``bao kv put -mount=<mount> grants/<env>/<service> @grant.json``).
    """
    if data is None:
        return NO_GRANT
    unknown = sorted(set(data) - set(GRANT_FIELDS))
    if unknown:
        raise InvalidInput(unknown[0], "is not a field of a name grant (dns_names, zones, "
                                       "shared)")
    out: dict[str, tuple[str, ...]] = {}
    for field in GRANT_FIELDS:
        value = data.get(field)
        if value is None:
            value = []
        if not isinstance(value, list) or len(value) > MAX_GRANT_ENTRIES:
            raise InvalidInput(field, f"must be a list of at most {MAX_GRANT_ENTRIES} DNS "
                                      "names (with the Vault CLI write the grant as JSON: "
                                      "bao kv put -mount=<mount> grants/<env>/<service> "
                                      "@grant.json)")
        wildcards = field != "zones"
        out[field] = tuple(dict.fromkeys(
            names.dns_name(f"{field}/{i}", item, allow_wildcard=wildcards)
            for i, item in enumerate(value)))
    return Grant(**out)


def refusals(spec_names: Iterable[str], service: str, grant: Grant,
             holders: Mapping[str, str | None]) -> tuple[Refusal, ...]:
    """The names of a spec that ``service`` may not carry under ``grant``, given who
    holds each name (``holders[name]``: a service, or None when nobody does)."""
    refused = []
    for name in spec_names:
        if not grant.covers(name):
            refused.append(Refusal(name, NOT_GRANTED,
                                   f"{name} is not granted to service {service}"))
            continue
        holder = holders.get(name)
        if holder is not None and holder != service and name not in grant.shared:
            refused.append(Refusal(name, HELD_ELSEWHERE,
                                   f"{name} is held by service {holder} and not shared "
                                   f"with {service}"))
    return tuple(refused)


def summary(refused: Iterable[Refusal]) -> str:
    return "; ".join(r.detail for r in refused)


def claim_key(name: str) -> str:
    """The path component of a held name: the name itself, a wildcard's ``*`` as ``_``
    (never a label character after ``names.dns_name``)."""
    checked = names.dns_name("name", name)
    return "_" + checked[1:] if checked.startswith("*") else checked


def grant_schema() -> dict[str, Any]:
    """The JSON Schema of a grant record, from the limits ``parse_grant`` enforces."""
    listing = {"type": ["array", "null"], "maxItems": MAX_GRANT_ENTRIES,  # null: none
               "items": {"type": "string", "minLength": 1, "maxLength": names.MAX_DNS_NAME}}
    return {"type": "object", "additionalProperties": False, "properties": {
        "dns_names": {**listing, "description": "exact names, wildcard names included"},
        "zones": {**listing, "description": "a zone and every name under it"},
        "shared": {**listing, "description": "names this service may carry while "
                                             "another service holds them"}}}
