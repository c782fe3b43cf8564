"""/v1/certificates: declare, list, show, renew."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from ..errors import InvalidInput
from ..lifecycle.service import CertificateView
from ..models import CertificateRef, State
from .context import caller, services
from .json_input import certificate_spec, json_body

bp = Blueprint("certificates", __name__, url_prefix="/v1/certificates")
MAX_WAIT = 120.0


def render(view: CertificateView, paths: Any) -> dict[str, Any]:
    """The contract of DESIGN.md: other tools rely on these names."""
    spec, status = view.spec, view.status
    current = None
    if status.current is not None:
        c = status.current.to_json()
        current = {k: c[k] for k in ("serial", "not_before", "not_after",
                                     "sha256_fingerprint", "issuer")}
        current["vault_version"] = c["vault_version"]
    observed = {t.address: t for t in status.targets}
    targets = []
    for target in spec.targets:
        seen = observed.get(target.address)
        targets.append({"address": target.address, "sni": target.sni, "ips": list(target.ips),
                        "status": seen.status if seen else "unknown",
                        "served_sha256": seen.served_sha256 if seen else None,
                        "checked_at": seen.to_json()["checked_at"] if seen else None})
    return {
        "id": spec.ref.id,
        "environment": spec.ref.environment,
        "service": spec.ref.service,
        "name": spec.ref.name,
        "dns_names": list(spec.dns_names),
        "issuer": spec.issuer,
        "key_type": spec.key_type.value,
        "renew_before": spec.renew_before,
        "owner": spec.owner,
        "contact": spec.contact,
        "status": status.state.value,
        "current": current,
        "last_error": status.last_error,
        "attempts": status.attempts,
        "next_attempt_at": status.to_json()["next_attempt_at"],
        "updated_at": status.to_json()["updated_at"],
        "vault": {"path": paths.api_path(paths.cert(spec.ref))},
        "targets": targets,
    }


def _wait_param() -> float:
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


def _answer(future: cf.Future[Any], ref: CertificateRef, wait: float, created: bool) -> Response:
    s = services()
    if wait:
        try:
            future.result(timeout=wait)
        except cf.TimeoutError:
            pass
    view = s.certificates.view(s.store, ref)
    body = render(view, s.store.paths)
    done = view.status.state in (State.VALID, State.FAILED)
    resp = jsonify(body)
    resp.status_code = 201 if (created and done) else (200 if done else 202)
    resp.headers["Location"] = url_for("certificates.show", cert_id=ref.id)
    return resp


@bp.post("")
def declare() -> Response:
    s = services()
    wait = _wait_param()
    spec = certificate_spec(json_body(s.settings.max_request_bytes), s.settings)
    who = caller()
    future = s.certificates.declare(who.store, spec, actor=who.display_name)
    return _answer(future, spec.ref, wait, created=True)


@bp.get("")
def index() -> Response:
    s = services()
    who = caller()
    env = request.args.get("environment")
    service = request.args.get("service")
    state = request.args.get("status")
    limit = _int_arg("limit", 100, 1, 1000)
    offset = _int_arg("offset", 0, 0, 10**9)
    items = []
    skipped = 0
    for ref in s.certificates.refs(who.store, env, service):
        view = s.certificates.view(who.store, ref)
        if state and view.status.state.value != state:
            continue
        if skipped < offset:
            skipped += 1
            continue
        items.append(render(view, s.store.paths))
        if len(items) >= limit:
            break
    return jsonify({"items": items, "offset": offset, "limit": limit})


@bp.get("/<cert_id>")
def show(cert_id: str) -> Response:
    s = services()
    ref = CertificateRef.parse_id(cert_id)
    return jsonify(render(s.certificates.view(caller().store, ref), s.store.paths))


@bp.post("/<cert_id>/renew")
def renew(cert_id: str) -> Response:
    s = services()
    wait = _wait_param()
    ref = CertificateRef.parse_id(cert_id)
    who = caller()
    future = s.certificates.renew(who.store, ref, actor=who.display_name)
    return _answer(future, ref, wait, created=False)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidInput(name, f"must be an integer from {low} to {high}")
    return int(raw)
