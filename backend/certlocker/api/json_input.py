"""Reading and validating JSON request bodies into domain records."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from .. import names
from ..errors import InvalidInput, MalformedRequest, PayloadTooLarge, UnsupportedMediaType
from ..models import CertificateRef, CertificateSpec, KeyType, Target
from ..settings import Settings

SPEC_FIELDS = {"environment", "service", "name", "dns_names", "issuer", "key_type",
               "renew_before", "targets", "owner", "contact"}


def json_body(max_bytes: int) -> dict[str, Any]:
    """:raises UnsupportedMediaType, PayloadTooLarge, MalformedRequest:"""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send Content-Type: application/json")
    if (request.content_length or 0) > max_bytes:
        raise PayloadTooLarge(f"the body must be at most {max_bytes} bytes")
    raw = request.get_data(cache=False)
    # A body without Content-Length (chunked) is cut at MAX_CONTENT_LENGTH by werkzeug
    # without an error: reaching the limit means there was more.
    if len(raw) > max_bytes or (request.content_length is None and len(raw) >= max_bytes):
        raise PayloadTooLarge(f"the body must be at most {max_bytes} bytes")
    try:
        body = json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as dup:
        raise InvalidInput(dup.key, "appears more than once in the body") from None
    except (ValueError, RecursionError):
        raise MalformedRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object")
    return body


class _DuplicateKey(Exception):
    """A JSON object names a key twice: parsers disagree on which one counts (the
    last for Python, the first for others), so a check and a use could see different
    values. Not a ValueError, so it is not mistaken for malformed JSON."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key[:64]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            raise _DuplicateKey(key)
        body[key] = value
    return body


def certificate_spec(body: dict[str, Any], settings: Settings) -> CertificateSpec:
    """:raises InvalidInput: naming the first bad field."""
    unknown = set(body) - SPEC_FIELDS
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "is not a known field")
    env = names.component("environment", body.get("environment"))
    if env not in settings.environments:
        raise InvalidInput("environment", f"must be one of {', '.join(settings.environments)}")
    ref = CertificateRef(env, names.component("service", body.get("service")),
                         names.component("name", body.get("name")))
    issuer_name = body.get("issuer") or settings.default_issuer
    if not isinstance(issuer_name, str) or issuer_name not in settings.issuers:
        raise InvalidInput("issuer", f"must be one of {', '.join(sorted(settings.issuers))}")
    issuer = settings.issuers[issuer_name]
    dns = names.dns_names("dns_names", body.get("dns_names"),
                          allow_wildcard=issuer.challenge == "dns-01")
    key_type = body.get("key_type") or settings.default_key_type.value
    try:
        key = KeyType(key_type)
    except ValueError:
        raise InvalidInput("key_type", "must be one of " + ", ".join(
            k.value for k in KeyType)) from None
    return CertificateSpec(
        ref=ref, dns_names=dns, issuer=issuer_name, key_type=key,
        renew_before=_optional_str("renew_before", body.get("renew_before"), 32),
        targets=_targets(body.get("targets")),
        owner=_optional_str("owner", body.get("owner"), 200),
        contact=_optional_str("contact", body.get("contact"), 200),
    )


def _optional_str(field: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise InvalidInput(field, f"must be a printable string of at most {limit} characters")
    return value


def _targets(value: Any) -> tuple[Target, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 1000:
        raise InvalidInput("targets", "must be a list of at most 1000 targets")
    out = []
    for i, item in enumerate(value):
        field = f"targets/{i}"
        if isinstance(item, str):
            item = {"address": item}
        if not isinstance(item, dict):
            raise InvalidInput(field, "must be an object with an address")
        address = item.get("address")
        if not isinstance(address, str) or ":" not in address:
            raise InvalidInput(f"{field}/address", "must be host:port")
        host, _, port = address.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInput(f"{field}/address", "must end with a port from 1 to 65535")
        host = host.strip("[]")
        try:
            host = names.ip_address(f"{field}/address", host)
        except InvalidInput:
            host = names.dns_name(f"{field}/address", host, allow_wildcard=False)
        sni = item.get("sni")
        if sni is not None:
            sni = names.dns_name(f"{field}/sni", sni, allow_wildcard=False)
        ips = item.get("ips") or []
        if not isinstance(ips, list) or len(ips) > 256:
            raise InvalidInput(f"{field}/ips", "must be a list of at most 256 addresses")
        out.append(Target(f"{host}:{port}", sni, tuple(
            names.ip_address(f"{field}/ips/{j}", ip) for j, ip in enumerate(ips))))
    return tuple(out)


MAX_WAIT = 120.0


def wait_seconds() -> float:
    """The ``?wait=<seconds>`` parameter: how long to hold the answer for a result."""
    raw = request.args.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise InvalidInput("wait", "must be a number of seconds") from None
    if not 0 <= wait <= MAX_WAIT:
        raise InvalidInput("wait", f"must be between 0 and {MAX_WAIT:g} seconds")
    return wait
