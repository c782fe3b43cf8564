"""URL converters that keep a variable segment from shadowing a fixed route beside it.

``/v1/certificates/cleanup`` (GET) sits beside ``/v1/certificates/<cert_id>`` (GET,
PATCH, DELETE), and ``/v1/discovery/findings`` and ``/scans`` beside
``/v1/discovery/<sha256>``. With a plain segment, ``PATCH /v1/certificates/cleanup`` or
``GET /v1/discovery/findings`` reached the variable route and answered 400 or 404; with
these they answer 405 with the ``Allow`` of the fixed route (RFC 9110 section 15.5.6).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import BaseConverter


class CertificateId(BaseConverter):
    """Any segment but the names of the fixed routes under ``/v1/certificates``; the
    id's own syntax is checked by the view, which says what is wrong with it."""

    regex = r"(?!cleanup$)[^/]+"


class Sha256(BaseConverter):
    """A SHA-256 fingerprint in hex."""

    regex = r"[0-9a-fA-F]{64}"


def install(app: Flask) -> None:
    """Register the converters; before the blueprints, whose rules use them."""
    app.url_map.converters["certificate_id"] = CertificateId
    app.url_map.converters["sha256"] = Sha256
