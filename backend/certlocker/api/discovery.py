"""/v1/discovery: endpoint scans, file findings, unmanaged certificates, adoption.

Authorization is Vault's, through the caller's own token (``sys/capabilities-self``):

- running a scan, reporting file findings and adopting need ``update`` on
  ``paths.discovery_grant()`` (``<mount>/data/specs/_system/discovery``; the admin
  policy's ``specs/*`` grants it, a team operator's ``specs/+/team-*`` does not);
- reading discoveries and scans needs ``read`` on ``<mount>/data/discovered/*``
  (admin and auditor policies);
- adopting also declares the spec with the caller's token, so Vault decides whether the
  caller may own that environment/service.

The records themselves are read and written with certlocker's token.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import math
import re
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from .. import names
from ..lifecycle import access
from ..audit.recorder import audited
from ..clock import parse_rfc3339
from ..discovery.files import FoundCertificate
from ..discovery.service import DiscoveryService
from ..discovery.scan import expand_targets, first_refusal
from ..errors import Conflict, InvalidInput, TargetForbidden
from ..lifecycle.policy.inventory import parse_duration
from ..lifecycle.target_allowlist import require_allowed
from ..models import State
from .certificates import render
from .context import Caller, authenticate_first, require, services
from .json_input import certificate_spec, json_body, wait_seconds

bp = Blueprint("discovery", __name__, url_prefix="/v1/discovery")
authenticate_first(bp)

MAX_TARGETS = 256
MAX_FINDINGS = 500
SCAN_FIELDS = {"endpoints", "sni", "timeout", "parallelism"}
FINDING_FIELDS = {"sha256_fingerprint", "subject", "dns_names", "issuer", "serial",
                  "not_before", "not_after", "source", "is_ca"}
_HEX = re.compile(r"^[0-9a-f]{1,128}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def discovery_service() -> DiscoveryService:
    return services().discovery




def _authorize_read(action: str) -> Caller:
    """:raises AccessDenied: the caller may not read discoveries."""
    paths = services().store.paths
    return require(paths.api_path(paths.discovered("0" * 64)), access.READ, action=action,
                   subject="discovery", what="read discoveries")


def _authorize_update(action: str, subject: str) -> Caller:
    """:raises AccessDenied: the caller may not run discovery."""
    return require(services().store.paths.discovery_grant(), access.UPDATE, action=action,
                   subject=subject, what="run discovery")




def _number(body: dict[str, Any], field: str, default: float, low: float, high: float,
            integer: bool = False) -> float:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)) or not math.isfinite(value) \
            or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise InvalidInput(field, f"must be {kind} from {low:g} to {high:g}")
    return value


# -- scans ------------------------------------------------------------------------------

@bp.post("/scans")
def start_scan() -> Response:
    """Body: ``{"endpoints": ["127.0.0.1:8000-8010", "10.0.0.0/30:443"], "sni": "name",
    "timeout": 5, "parallelism": 32}``; answers 202 with the scan document (201 when it
    finished within ``?wait=``)."""
    s = services()
    wait = wait_seconds()
    body = json_body(s.settings.max_request_bytes)
    unknown = set(body) - SCAN_FIELDS
    if unknown:
        raise InvalidInput(sorted(unknown)[0][:64], "is not a known field")
    targets = body.get("endpoints")
    if not isinstance(targets, list) or not targets or len(targets) > MAX_TARGETS:
        raise InvalidInput("endpoints", f"must be a list of 1 to {MAX_TARGETS} "
                                        "'host:ports' strings")
    try:
        endpoints = expand_targets(targets)
    except InvalidInput as exc:
        raise InvalidInput(exc.field.replace("/targets/", "endpoints/"), exc.reason) from None
    sni = body.get("sni")
    if sni is not None:
        sni = names.dns_name("sni", sni, allow_wildcard=False)
    timeout = _number(body, "timeout", float(s.settings.verify_timeout_seconds), 0.1, 60)
    parallelism = int(_number(body, "parallelism", s.settings.verify_parallelism, 1, 256,
                              integer=True))
    who = _authorize_update("discovery.scan", "discovery")
    refusal = first_refusal(s.targets(), endpoints)
    if refusal is not None:
        audited(s.audit, who.display_name, "discovery.scan", "discovery", "denied",
                reason=str(refusal)[:300])
        raise TargetForbidden("endpoints", refusal.endpoint, refusal.rule, refusal.reason)
    scan_id, future = discovery_service().start_scan(
        endpoints, targets=targets, timeout=timeout, parallelism=parallelism, sni=sni,
        actor=who.display_name)
    doc = None
    if wait:
        try:
            doc = future.result(timeout=wait)
        except cf.TimeoutError:
            doc = None
    doc = doc or discovery_service().scan(scan_id)
    resp = jsonify(doc)
    resp.status_code = 201 if doc["state"] in ("done", "failed") else 202
    resp.headers["Location"] = url_for("discovery.show_scan", scan_id=scan_id)
    return resp


@bp.get("/scans/<scan_id>")
def show_scan(scan_id: str) -> Response:
    _authorize_read("discovery.scan.read")
    return jsonify(discovery_service().scan(scan_id))


# -- file findings (scanned on the host where the files lie) ------------------------------

@bp.post("/findings")
def report_findings() -> Response:
    """Body: ``{"host": "web-1", "findings": [<FoundCertificate JSON>, ...]}`` as
    ``certlocker scan dir --report`` sends: public facts only. Each ``source`` must be
    ``file:<absolute path>``; it is recorded as ``file://<host><path>``."""
    s = services()
    body = json_body(s.settings.max_request_bytes)
    unknown = set(body) - {"host", "findings"}
    if unknown:
        raise InvalidInput(sorted(unknown)[0][:64], "is not a known field")
    host = body.get("host")
    if not isinstance(host, str) or not _HOST.match(host):
        raise InvalidInput("host", "must be a host name (letters, digits, '.', '_', '-')")
    items = body.get("findings")
    if not isinstance(items, list) or len(items) > MAX_FINDINGS:
        raise InvalidInput("findings", f"must be a list of at most {MAX_FINDINGS} findings")
    found = [_finding(f"findings/{i}", item, host) for i, item in enumerate(items)]
    who = _authorize_update("discovery.findings", f"host:{host}")
    svc = discovery_service()
    recorded = svc.record(found)
    result = recorded.to_json(dt.datetime.now(dt.timezone.utc), svc.expiring_within)
    audited(s.audit, who.display_name, "discovery.findings", f"host:{host}", "success",
            details=result["counts"])
    return jsonify(result)


def _finding(field: str, item: Any, host: str) -> FoundCertificate:
    if not isinstance(item, dict):
        raise InvalidInput(field, "must be an object")
    unknown = set(item) - FINDING_FIELDS
    missing = FINDING_FIELDS - set(item)
    if unknown or missing:
        raise InvalidInput(f"{field}/{sorted(unknown or missing)[0][:64]}",
                           "is not a known field" if unknown else "is required")
    fp = item["sha256_fingerprint"]
    if not isinstance(fp, str) or len(fp) != 64 or not _HEX.match(fp):
        raise InvalidInput(f"{field}/sha256_fingerprint", "must be 64 lowercase hex digits")
    serial = item["serial"]
    if not isinstance(serial, str) or not _HEX.match(serial):
        raise InvalidInput(f"{field}/serial", "must be lowercase hex")
    texts = {}
    for key in ("subject", "issuer"):
        value = item[key]
        if not isinstance(value, str) or len(value) > 1024 or not value.isprintable():
            raise InvalidInput(f"{field}/{key}", "must be printable text of at most 1024 "
                                                 "characters")
        texts[key] = value
    dns = item["dns_names"]
    if not isinstance(dns, list) or len(dns) > 100 or not all(
            isinstance(n, str) and 0 < len(n) <= 253 and n.isprintable() for n in dns):
        raise InvalidInput(f"{field}/dns_names", "must be a list of at most 100 names")
    source = item["source"]
    if not isinstance(source, str) or not source.startswith("file:/") or len(source) > 4096 \
            or not source.isprintable():
        raise InvalidInput(f"{field}/source", "must be 'file:<absolute path>'")
    if not isinstance(item["is_ca"], bool):
        raise InvalidInput(f"{field}/is_ca", "must be true or false")
    times = {}
    for key in ("not_before", "not_after"):
        try:
            value = parse_rfc3339(item[key]) if isinstance(item[key], str) else None
            if value is not None and value.tzinfo is not None:
                # out of range in UTC: refused here, not stored to break every listing
                value = value.astimezone(dt.timezone.utc)
        except (ValueError, OverflowError):
            value = None
        if value is None or value.tzinfo is None:
            raise InvalidInput(f"{field}/{key}", "must be an RFC 3339 time with a zone")
        times[key] = value
    return FoundCertificate(
        sha256_fingerprint=fp, subject=texts["subject"], dns_names=tuple(dns),
        issuer=texts["issuer"], serial=serial, not_before=times["not_before"],
        not_after=times["not_after"], source=f"file://{host}{source[len('file:'):]}",
        is_ca=item["is_ca"])


# -- unmanaged certificates -------------------------------------------------------------

@bp.get("")
def index() -> Response:
    """``?expiring_within=30d&state=unmanaged|adopted|all&limit=100``, soonest expiry
    first."""
    args = request.args
    for key in args:
        if key not in ("expiring_within", "state", "limit"):
            raise InvalidInput(key[:64], "is not a known query parameter (known: "
                                         "expiring_within, state, limit)")
    within = args.get("expiring_within")
    expiring = parse_duration("expiring_within", within) if within is not None else None
    state = args.get("state", "unmanaged")
    if state not in ("unmanaged", "adopted", "all"):
        raise InvalidInput("state", "must be unmanaged, adopted or all")
    raw_limit = args.get("limit", "100")
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise InvalidInput("limit", "must be an integer from 1 to 1000")
    _authorize_read("discovery.list")
    svc = discovery_service()
    found = svc.entries(state=None if state == "all" else state, expiring_within=expiring)
    return jsonify({"items": [svc.view(d) for d in found[:int(raw_limit)]],
                    "total": len(found), "limit": int(raw_limit)})


@bp.get("/<sha256:sha256>")
def show(sha256: str) -> Response:
    _authorize_read("discovery.read")
    svc = discovery_service()
    return jsonify(svc.view(svc.get(sha256)))


@bp.post("/<sha256:sha256>/adopt")
def adopt(sha256: str) -> Response:
    """Body: ``{"environment", "service", "name", "issuer"}`` (and optionally the other
    spec fields but ``dns_names``, which are the discovered certificate's). Declares the
    spec with the caller's token, marks the discovery adopted, starts issuance."""
    s = services()
    wait = wait_seconds()
    body = json_body(s.settings.max_request_bytes)
    if "dns_names" in body:
        raise InvalidInput("dns_names", "are taken from the discovered certificate")
    svc = discovery_service()
    who = _authorize_update("discovery.adopt", f"discovered:{sha256[:64]}")
    found = svc.get(sha256)
    if found.adoption is not None:
        raise Conflict(f"already adopted as {found.adoption.certificate_id}")
    if not found.dns_names:
        raise Conflict("the discovered certificate names no DNS names to manage")
    spec = certificate_spec({**body, "dns_names": list(found.dns_names)}, s.settings)
    require_allowed(s.targets(), spec.targets)
    future = s.certificates.declare(who.store, spec, actor=who.display_name)
    adopted = svc.mark_adopted(found.sha256_fingerprint, spec.ref.id, who.display_name)
    audited(s.audit, who.display_name, "discovery.adopt", spec.ref.id, "success",
            details={"sha256_fingerprint": found.sha256_fingerprint,
                     "dns_names": list(found.dns_names), "issuer": spec.issuer})
    if wait:
        try:
            future.result(timeout=wait)
        except cf.TimeoutError:
            pass
    view = s.certificates.view(s.store, spec.ref)
    done = view.status.state in (State.VALID, State.FAILED)
    resp = jsonify({"discovery": svc.view(adopted),
                    "certificate": render(view, s.store.paths)})
    resp.status_code = 201 if done else 202
    resp.headers["Location"] = url_for("certificates.show", cert_id=spec.ref.id)
    return resp

