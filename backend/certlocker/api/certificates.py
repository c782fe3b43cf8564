"""/v1/certificates: declare, list, show, renew."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import itertools
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from ..audit.recorder import audited
from ..errors import TargetForbidden
from ..lifecycle.revocation import authorize
from ..clock import SystemClock, rfc3339
from ..lifecycle.policy import explain, inventory, shown
from ..lifecycle import visibility
from ..lifecycle.service import CertificateView
from ..lifecycle.target_allowlist import require_allowed
from ..lifecycle.verification import target_views
from ..models import CertificateRef, State
from ..errors import Conflict, InvalidInput
from .context import authenticate_first, caller, services
from ..specs import SpecRules
from .json_input import certificate_spec, json_body, wait_seconds

bp = Blueprint("certificates", __name__, url_prefix="/v1/certificates")
authenticate_first(bp)


def render(view: CertificateView, paths: Any, now: dt.datetime | None = None,
           ) -> dict[str, Any]:
    """The contract of DESIGN.md: other tools rely on these names. ``status`` and the
    targets are what is true at ``now`` (``lifecycle.shown``), not only what was stored."""
    spec, status = view.spec, view.status
    now = now or SystemClock().now()
    remaining = shown.remaining_validity(status, now)
    planned = explain.next_renewal(spec, status, now)
    current = None
    if status.current is not None:
        c = status.current.to_json()
        current = {k: c[k] for k in ("serial", "not_before", "not_after",
                                     "sha256_fingerprint", "issuer")}
        current["vault_version"] = c["vault_version"]
        # The configured issuer that issued it; a fallback says whom it stood in for.
        current["issued_by"] = c["issuer_name"]
        current["fallback_for"] = c.get("fallback_for")
        current["fallback_reason"] = c.get("fallback_reason")
        current["profile"] = c.get("profile")  # asked for at issuance; "" for none
    # A pool target's status is its worst node's; "nodes" has each node's own result.
    targets = [v.to_json() for v in target_views(spec.targets, status.targets,
                                                  status.current)]
    return {
        "id": spec.ref.id,
        "environment": spec.ref.environment,
        "service": spec.ref.service,
        "name": spec.ref.name,
        "dns_names": list(spec.dns_names),
        "issuer": spec.issuer,
        "key_type": spec.key_type.value,
        "key_held_by": "client" if spec.key_held_by_client else "vault",
        "acme_order": spec.acme_order,
        "renew_before": spec.renew_before,
        "maintenance_window": (spec.maintenance_window.to_json() if spec.maintenance_window
                               else None),
        "profile": spec.profile,
        "owner": spec.owner,
        "contact": spec.contact,
        "status": shown.shown_state(status, now).value,
        "current": current,
        "last_error": status.last_error,
        "renewal_failing": shown.renewal_failing(status),
        "remaining_validity_seconds": int(remaining.total_seconds())
        if remaining is not None else None,
        "attempts": status.attempts,
        "retryable": status.retryable,
        "next_attempt_at": status.to_json()["next_attempt_at"],
        "waiting": status.waiting,
        "failed_acme_order": status.failed_acme_order,
        "updated_at": status.to_json()["updated_at"],
        "vault": {"path": paths.api_path(paths.cert(spec.ref))},
        "targets": targets,
        "revocation": status.revocation.to_json() if status.revocation else None,
        "history": list(status.history),
        "retired_at": status.to_json()["retired_at"],
        "retirement": view.retirement,
        "renewal_request": (status.renewal_request.to_json() if status.renewal_request
                            else None),
        "next_renewal": {"at": rfc3339(planned.at) if planned.at else None,
                         "reason": planned.reason, "why": planned.why},
    }




def _answer(future: cf.Future[Any], ref: CertificateRef, wait: float, created: bool,
            previous: str | None = None, known: CertificateView | None = None) -> Response:
    """201/200 once settled (a certificate other than ``previous`` is stored, or an
    attempt made after this request failed), else 202. ``known`` is the view as of the
    request, answered as is when the caller does not wait (the issuance was only just
    queued: re-reading it from Vault would tell the same)."""
    s = services()
    asked = SystemClock().now()
    if known is not None and not wait:
        resp = jsonify(render(known, s.store.paths))
        resp.status_code = 202
        resp.headers["Location"] = url_for("certificates.show", cert_id=ref.id)
        return resp

    def settled(status: Any) -> bool:
        if status.last_error and status.updated_at and status.updated_at >= asked:
            return True
        return (status.state is State.VALID and status.current is not None
                and status.current.sha256_fingerprint != previous)

    if wait:
        s.certificates.wait_settled(ref, future, settled, wait)
    view = s.certificates.view(s.store, ref)
    body = render(view, s.store.paths)
    done = settled(view.status)
    resp = jsonify(body)
    resp.status_code = 201 if (created and done) else (200 if done else 202)
    resp.headers["Location"] = url_for("certificates.show", cert_id=ref.id)
    return resp


@bp.post("")
def declare() -> Response:
    s = services()
    wait = wait_seconds()
    spec = certificate_spec(json_body(s.settings.max_request_bytes), s.settings)
    who = caller()
    try:
        require_allowed(s.targets(), spec.targets)
    except TargetForbidden as exc:
        audited(s.audit, who.display_name, "spec.create", spec.ref.id, "denied",
                reason=exc.detail)
        raise
    future, pending = s.certificates.declare_with_status(who.store, spec,
                                                         actor=who.display_name)
    return _answer(future, spec.ref, wait, created=True,
                   known=CertificateView(spec, pending))


@bp.get("")
def index() -> Response:
    """Filters and paging: ``lifecycle.inventory.parse_query``. ``scope``: ``all``
    when the caller's token listed the whole inventory, ``permitted`` when it could
    list only some service folders (a team operator), see ``lifecycle.visibility``."""
    s = services()
    who = caller()
    query = inventory.parse_query(request.args.to_dict())
    if query.environment is not None and query.environment not in s.settings.environments:
        # An unknown environment holds nothing: say so rather than answer an empty list.
        raise InvalidInput("environment", "must be one of "
                           + ", ".join(s.settings.environments))
    now = SystemClock().now()
    scope = visibility.ALL
    if query.expiring_within is not None:  # the expiry index: work follows what expires
        refs = s.certificates.expiring_refs(now + query.expiring_within, query.environment,
                                            query.service)
    else:
        listing = listed(s, who.store, query.environment, query.service, query.status)
        refs, scope = listing.refs, listing.scope
    found = inventory.page(refs, lambda chunk: s.certificates.views(who.store, chunk),
                           query, now)
    return jsonify({"items": [render(v, s.store.paths, now) for v in found.items],
                    "next_cursor": found.next_cursor, "offset": query.offset,
                    "limit": query.limit, "scope": scope})


def listed(s: Any, store: Any, environment: str | None = None,
           service: str | None = None, status: State | None = None) -> visibility.Listing:
    """The declared certificates the caller may list, and the retired ones (their specs
    are gone; each is re-read with the caller's token). ``?status=retired`` needs only
    the latter."""
    retired = s.retirement.records.refs(environment, service)
    if status is State.RETIRED:
        return visibility.Listing(retired, visibility.ALL)
    declared = visibility.listable(store, s.store, environment, service)
    return dataclasses.replace(declared, refs=itertools.chain(
        declared.refs, (ref for ref in retired if declared.may_list(ref))))


@bp.get("/<certificate_id:cert_id>")
def show(cert_id: str) -> Response:
    s = services()
    ref = CertificateRef.parse_id(cert_id)
    return jsonify(render(s.certificates.view(caller().store, ref), s.store.paths))


@bp.patch("/<certificate_id:cert_id>")
def patch(cert_id: str) -> Response:
    """Change a declared spec (targets, names, issuer, ...) by an RFC 7396 merge patch,
    validated like a declaration and written with the caller's token."""
    s = services()
    ref = CertificateRef.parse_id(cert_id)
    who = caller()
    body = json_body(s.settings.max_request_bytes,
                     ("application/merge-patch+json", "application/json"))
    s.certificates.update_spec(who.store, ref, body, SpecRules.from_settings(s.settings),
                               actor=who.display_name,
                               check=lambda spec: require_allowed(s.targets(), spec.targets))
    return jsonify(render(s.certificates.view(who.store, ref), s.store.paths))


@bp.post("/<certificate_id:cert_id>/renew")
def renew(cert_id: str) -> Response:
    s = services()
    wait = wait_seconds()
    ref = CertificateRef.parse_id(cert_id)
    who = caller()
    # Renewing issues (and spends CA rate limits): reading the spec is not enough, or an
    # auditor could force issuances. Vault decides, on the caller's token.
    authorize(who.store, s.store, ref, s.audit, who.display_name, "certificate.renew",
              ("update",))
    seen = s.certificates.view(who.store, ref)
    if seen.status.state is State.RETIRED:
        raise Conflict(f"{ref.id} is retired; declare it again to issue it")
    before = seen.status.current
    future = s.certificates.renew(who.store, ref, actor=who.display_name)
    return _answer(future, ref, wait, created=False,
                   previous=before.sha256_fingerprint if before else None)
