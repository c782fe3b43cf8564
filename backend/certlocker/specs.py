"""The one parser of a certificate spec, for every path into certlocker.

A spec reaches certlocker two ways: a JSON body sent to ``POST /v1/certificates`` and a
record written straight into Vault (``bao kv put -mount=certlocker
specs/<env>/<service>/<name> @spec.json``), read back by the API, the reconciler and the
dashboard. Both go through ``parse`` with the same rules, so a record written with the
Vault CLI is held to exactly what the API accepts. A stored record that fails is not an
error for whoever reads it: ``from_record`` returns a spec that carries the reason
(``CertificateSpec.problem``), its certificate shows ``invalid`` and is never ordered,
and the rest of the inventory is unaffected.

``declaration_schema`` renders the same rules as the JSON Schema of the OpenAPI
document, from the same constants, so the document cannot drift looser than the parser.
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from . import maintenance, names, x509info
from .errors import InvalidInput
from .models import CertificateRef, CertificateSpec, KeyType, Target
from .renew_before import parse_renew_before

FIELDS = ("environment", "service", "name", "dns_names", "issuer", "key_type",
          "renew_before", "targets", "owner", "contact", "csr", "acme_order",
          "maintenance_window", "profile")
REQUIRED = ("environment", "service", "name", "dns_names")
TARGET_FIELDS = ("address", "sni", "ips")
MAX_TARGETS = 1000
MAX_TARGET_IPS = 256
MAX_RENEW_BEFORE = 32
MAX_TEXT = 200
MAX_PROFILE = 64
PROFILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
VAULT_CLI_HINT = ("with the Vault CLI write the spec as JSON: bao kv put -mount=<mount> "
                  "specs/<env>/<service>/<name> @spec.json")


@dataclasses.dataclass(frozen=True)
class SpecRules:
    """What the deployment's settings allow. ``None`` for environments or issuers means
    not known here (a tool without the settings): those checks are then skipped."""

    environments: tuple[str, ...] | None = None
    issuers: Mapping[str, str] | None = None  # name -> challenge type ("http-01", ...)
    default_issuer: str | None = None
    default_key_type: KeyType = KeyType.EC_P256

    @classmethod
    def from_settings(cls, settings: Any) -> "SpecRules":
        return cls(environments=tuple(settings.environments),
                   issuers={n: i.challenge for n, i in settings.issuers.items()},
                   default_issuer=settings.default_issuer,
                   default_key_type=settings.default_key_type)


PERMISSIVE = SpecRules()


def parse(body: Mapping[str, Any], rules: SpecRules) -> CertificateSpec:
    """A spec from a declaration (every field by name, as the API takes it).

    :raises InvalidInput: naming the first bad field (JSON pointer style) and why.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput("", "a spec must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidInput(unknown[0], "is not a known field")
    env = names.component("environment", body.get("environment"))
    if rules.environments is not None and env not in rules.environments:
        raise InvalidInput("environment", f"must be one of {', '.join(rules.environments)}")
    ref = CertificateRef(env, names.component("service", body.get("service")),
                         names.component("name", body.get("name")))
    issuer = body.get("issuer") if body.get("issuer") is not None else rules.default_issuer
    challenge = _issuer_challenge(issuer, rules)
    dns = _dns_names(body.get("dns_names"), allow_wildcard=challenge in (None, "dns-01"))
    key_type = body.get("key_type")
    if key_type is None:
        key = rules.default_key_type
    else:
        try:
            key = KeyType(key_type)
        except ValueError:
            raise InvalidInput("key_type", "must be one of " + ", ".join(
                k.value for k in KeyType)) from None
    csr = _csr(body.get("csr"), dns, None if key_type is None else key)
    acme_order = _optional_text("acme_order", body.get("acme_order"))
    if acme_order is not None and csr is None:
        raise InvalidInput("acme_order", "is set only with a csr")
    return CertificateSpec(
        ref=ref, dns_names=dns, issuer=issuer or "", key_type=key if csr is None
        else csr[1], renew_before=_renew_before(body.get("renew_before")),
        targets=targets(body.get("targets")),
        owner=_optional_text("owner", body.get("owner")),
        contact=_optional_text("contact", body.get("contact")),
        csr=csr[0] if csr else None, acme_order=acme_order,
        maintenance_window=maintenance.parse("maintenance_window",
                                             body.get("maintenance_window")),
        profile=_profile(body.get("profile")),
    )


def _profile(value: Any) -> str | None:
    """``profile``: an ACME profile name (draft-ietf-acme-profiles): sent only to a CA
    whose directory advertises profiles, refused before any order by one that offers
    others."""
    if value is None:
        return None
    if (not isinstance(value, str) or len(value) > MAX_PROFILE
            or not re.fullmatch(PROFILE_PATTERN, value)):
        raise InvalidInput("profile", f"must be a profile name of at most {MAX_PROFILE} "
                                      "letters, digits, '.', '_' or '-'")
    return value


def _csr(value: Any, dns_names: tuple[str, ...],
         key_type: KeyType | None) -> tuple[str, KeyType] | None:
    """``csr``: a PEM PKCS#10 request for exactly ``dns_names``; the key stays with
    whoever made it, and the spec's key type is the CSR's."""
    if value is None:
        return None
    if not isinstance(value, str) or "BEGIN CERTIFICATE REQUEST" not in value:
        raise InvalidInput("csr", "must be a PEM certificate signing request")
    try:
        facts = x509info.read_csr(value)
    except ValueError as exc:
        raise InvalidInput("csr", str(exc)) from None
    if set(facts.dns_names) != {n.lower().rstrip(".") for n in dns_names}:
        raise InvalidInput("csr", f"names {', '.join(facts.dns_names)}; dns_names must name "
                                  "exactly the same")
    if key_type is not None and key_type is not facts.key_type:
        raise InvalidInput("key_type", f"is {key_type.value} but the CSR's key is "
                                       f"{facts.key_type.value}")
    return value, facts.key_type


def from_record(data: Mapping[str, Any], ref: CertificateRef,
                rules: SpecRules) -> CertificateSpec:
    """The spec stored at ``specs/<env>/<service>/<name>``, parsed as a declaration
    whose environment, service and name come from the path (fields naming them must
    agree). Never raises: a record that does not parse becomes ``CertificateSpec``
    with ``problem`` set (and no names, so nothing can be ordered from it)."""
    try:
        if not isinstance(data, Mapping):
            raise InvalidInput("", "the record is not a set of fields")
        for field, value in (("environment", ref.environment), ("service", ref.service),
                             ("name", ref.name)):
            if field in data and data[field] != value:
                raise InvalidInput(field, f"is {str(data[field])[:64]!r} but the record is "
                                          f"stored under {value!r}")
        merged = {**data, "environment": ref.environment, "service": ref.service,
                  "name": ref.name}
        if isinstance(merged.get("dns_names"), str):
            raise InvalidInput("dns_names", "must be a list of DNS names, not a string; "
                                            + VAULT_CLI_HINT)
        return parse(merged, rules)
    except InvalidInput as exc:
        return CertificateSpec.invalid(ref, f"invalid spec: {exc.detail}")


IMMUTABLE = ("environment", "service", "name")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, ``null`` removes a key, any
    other value (lists included) replaces what was there."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def patched(record: Mapping[str, Any] | None, patch: Any, ref: CertificateRef,
            rules: SpecRules) -> CertificateSpec:
    """The spec a merge ``patch`` of the stored ``record`` gives, held to exactly what a
    declaration is (``parse``). The stored record need not parse (a patch is how an
    ``invalid`` record written with the Vault CLI is fixed through the API). Identity
    fields cannot change: a certificate under another name is another certificate.

    :raises InvalidInput: naming the first bad field."""
    if not isinstance(patch, Mapping):
        raise InvalidInput("", "a patch must be a JSON object (RFC 7396 merge patch)")
    if not patch:
        raise InvalidInput("", "the patch changes nothing: name at least one field")
    for field in IMMUTABLE:
        if field in patch and patch[field] != getattr(ref, field):
            raise InvalidInput(field, "cannot be changed: declare the certificate under "
                                      "its new name and retire this one")
    merged = merge_patch(record if isinstance(record, Mapping) else {}, patch)
    return parse({**merged, "environment": ref.environment, "service": ref.service,
                  "name": ref.name}, rules)


def targets(value: Any) -> tuple[Target, ...]:
    """``targets``: a list of ``host:port`` strings or ``{address, sni, ips}`` objects.

    :raises InvalidInput: naming the bad item."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TARGETS:
        raise InvalidInput("targets", f"must be a list of at most {MAX_TARGETS} targets")
    out = []
    for i, item in enumerate(value):
        field = f"targets/{i}"
        if isinstance(item, str):
            item = {"address": item}
        if not isinstance(item, dict):
            raise InvalidInput(field, "must be host:port or an object with an address")
        unknown = sorted(set(item) - set(TARGET_FIELDS))
        if unknown:
            raise InvalidInput(f"{field}/{unknown[0]}", "is not a known field of a target")
        address = _address(f"{field}/address", item.get("address"))
        sni = item.get("sni")
        if sni is not None:
            sni = names.dns_name(f"{field}/sni", sni, allow_wildcard=False)
        ips = item.get("ips")
        if ips is None:
            ips = []
        if not isinstance(ips, list) or len(ips) > MAX_TARGET_IPS:
            raise InvalidInput(f"{field}/ips",
                               f"must be a list of at most {MAX_TARGET_IPS} addresses")
        out.append(Target(address, sni, tuple(
            names.ip_address(f"{field}/ips/{j}", ip) for j, ip in enumerate(ips))))
    return tuple(out)


def _address(field: str, value: Any) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise InvalidInput(field, "must be host:port")
    host, _, port = value.rpartition(":")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise InvalidInput(field, "must end with a port from 1 to 65535")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        host = names.ip_address(field, host)
    except InvalidInput:
        host = names.dns_name(field, host, allow_wildcard=False)
    return f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"


def _issuer_challenge(issuer: Any, rules: SpecRules) -> str | None:
    """The issuer's challenge type (None when the issuers are not known here)."""
    if rules.issuers is None:
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            raise InvalidInput("issuer", "must be the name of a configured issuer")
        return None
    if not isinstance(issuer, str) or issuer not in rules.issuers:
        if issuer is None:
            raise InvalidInput("issuer", "is required: this deployment has no default "
                                         "issuer; name one of " + ", ".join(sorted(rules.issuers)))
        raise InvalidInput("issuer", f"must be one of {', '.join(sorted(rules.issuers))}")
    return rules.issuers[issuer]


def _dns_names(value: Any, *, allow_wildcard: bool) -> tuple[str, ...]:
    return names.dns_names("dns_names", value, allow_wildcard=allow_wildcard)


def _renew_before(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_RENEW_BEFORE:
        raise InvalidInput("renew_before",
                           f"must be a string of at most {MAX_RENEW_BEFORE} characters")
    try:
        parse_renew_before(value)
    except OverflowError:
        raise InvalidInput("renew_before", "is longer than any certificate lives") from None
    return value


def _optional_text(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise InvalidInput(field, f"must be a printable string of at most {MAX_TEXT} "
                                  "characters")
    return value


# -- the same rules as JSON Schema (OpenAPI 3.1) -------------------------------------------

def declaration_schema(rules: SpecRules) -> dict[str, Any]:
    """The JSON Schema of a declaration under ``rules``: the fields, the required ones,
    types, limits and enumerations that ``parse`` enforces. (Checks no schema keyword
    can state, such as IDNA, are named in the descriptions.)"""
    name = {"type": "string", "pattern": names.COMPONENT_PATTERN, "maxLength": 63}
    environment = dict(name)
    if rules.environments is not None:
        environment = {"type": "string", "enum": list(rules.environments)}
    issuer: dict[str, Any] = {"type": "string", "minLength": 1,
                              "description": "default: the deployment's default issuer"}
    if rules.issuers is not None:
        issuer["enum"] = sorted(rules.issuers)
    text = {"type": "string", "maxLength": MAX_TEXT,
            "description": "printable characters only"}
    ip = {"type": "string", "description": "an IPv4 or IPv6 address"}
    target_object = {
        "type": "object", "additionalProperties": False, "required": ["address"],
        "properties": {
            "address": {"type": "string", "pattern": r"^.+:[0-9]{1,5}$",
                        "description": "host:port (an IPv6 host in brackets); the port "
                                       "from 1 to 65535"},
            "sni": {"type": "string", "maxLength": names.MAX_DNS_NAME},
            "ips": {"type": "array", "items": ip, "maxItems": MAX_TARGET_IPS},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(REQUIRED),
        "properties": {
            "environment": environment,
            "service": name,
            "name": name,
            "dns_names": {"type": "array", "minItems": 1, "maxItems": names.MAX_DNS_NAMES,
                          "items": {"type": "string", "minLength": 1,
                                    "maxLength": names.MAX_DNS_NAME,
                                    "description": "a DNS name; IDNs are stored as "
                                                   "A-labels; a wildcard only as the whole "
                                                   "leftmost label, with a dns-01 issuer"}},
            "issuer": issuer,
            "key_type": {"type": "string", "enum": [k.value for k in KeyType]},
            "renew_before": {"type": "string", "maxLength": MAX_RENEW_BEFORE,
                             "pattern": r"^\s*(([0-9]+(\.[0-9]+)?[dhmsDHMS])+|[0-9]*\.?[0-9]+%?)"
                                        r"\s*$",
                             "description": "a duration (720h, 30d, 1h30m) or a fraction "
                                            "of the lifetime (0.33, 33%)"},
            "targets": {"type": "array", "maxItems": MAX_TARGETS,
                        "items": {"oneOf": [{"type": "string", "pattern": r"^.+:[0-9]{1,5}$"},
                                            target_object]}},
            "owner": text,
            "contact": text,
            "csr": {"type": "string", "maxLength": x509info.MAX_CSR_BYTES,
                    "pattern": "BEGIN CERTIFICATE REQUEST",
                    "description": "a PEM PKCS#10 request for exactly dns_names: the key "
                                   "stays with its holder, certlocker stores the "
                                   "certificate without a key; key_type is the CSR's"},
            "acme_order": {**text, "description": "set by certlocker's ACME server: the "
                                                  "order this CSR came with"},
            "maintenance_window": maintenance.SCHEMA,
            "profile": {"type": "string", "maxLength": MAX_PROFILE,
                        "pattern": PROFILE_PATTERN,
                        "description": "the ACME profile to order (e.g. shortlived); "
                                       "default: the issuer's. Sent only when the CA's "
                                       "directory advertises profiles"},
        },
    }
