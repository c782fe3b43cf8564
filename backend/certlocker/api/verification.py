"""POST /v1/certificates/<id>/verify: check now that every target serves the current
certificate, store the per-node results, answer the certificate document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..lifecycle.revocation import authorize
from ..models import CertificateRef, State
from .certificates import render
from .context import authenticate_first, caller, services

bp = Blueprint("verification", __name__, url_prefix="/v1/certificates")
authenticate_first(bp)


@bp.post("/<certificate_id:cert_id>/verify")
def verify(cert_id: str) -> Response:
    """The caller must hold update on the spec (Vault decides, with their token): a
    verification dials every target and writes status and audit, so a read-only token
    (an auditor's) may not trigger it. The probes and the status write run with
    certlocker's own token."""
    s = services()
    ref = CertificateRef.parse_id(cert_id)
    who = caller()
    authorize(who.store, s.store, ref, s.audit, who.display_name, "delivery.verify",
              ("update",))
    seen = s.certificates.view(who.store, ref)  # 404 for a certificate that does not exist
    if seen.status.state is State.RETIRED:  # nodes still serving it are reported
        s.retirement.verify(ref, actor=who.display_name)
        return jsonify(render(s.certificates.view(who.store, ref), s.store.paths))
    verifier = s.verifier
    verifier.verify_certificate(ref, actor=who.display_name)
    return jsonify(render(s.certificates.view(who.store, ref), s.store.paths))
