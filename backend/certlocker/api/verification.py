"""POST /v1/certificates/<id>/verify: check now that every target serves the current
certificate, store the per-node results, answer the certificate document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..audit.recorder import audited
from ..errors import AccessDenied
from ..lifecycle.verification import verifier_for
from ..models import CertificateRef, State
from .certificates import render
from .context import caller, services

bp = Blueprint("verification", __name__, url_prefix="/v1/certificates")


@bp.post("/<cert_id>/verify")
def verify(cert_id: str) -> Response:
    """The caller must be allowed to read the spec (Vault decides, with their token);
    the probes and the status write run with certlocker's own token."""
    s = services()
    ref = CertificateRef.parse_id(cert_id)
    who = caller()
    try:
        seen = s.certificates.view(who.store, ref)
    except AccessDenied as exc:
        audited(s.audit, who.display_name, "delivery.verify", ref.id, "denied",
                reason=exc.detail)
        raise
    if seen.status.state is State.RETIRED:  # nodes still serving it are reported
        s.retirement.verify(ref, actor=who.display_name)
        return jsonify(render(s.certificates.view(who.store, ref), s.store.paths))
    verifier = s.verifier or verifier_for(s.settings, s.store, s.certificates.update_status,
                                          s.audit)
    verifier.verify_certificate(ref, actor=who.display_name)
    return jsonify(render(s.certificates.view(who.store, ref), s.store.paths))
