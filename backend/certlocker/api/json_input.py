"""Reading and validating JSON request bodies into domain records."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from .. import specs
from ..errors import InvalidInput, MalformedRequest, PayloadTooLarge, UnsupportedMediaType
from ..models import CertificateSpec
from ..settings import Settings
from ..specs import SpecRules


def json_body(max_bytes: int, media_types: tuple[str, ...] = ("application/json",),
              ) -> dict[str, Any]:
    """:raises UnsupportedMediaType, PayloadTooLarge, MalformedRequest:"""
    if request.mimetype not in media_types:
        raise UnsupportedMediaType("send Content-Type: " + " or ".join(media_types))
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
    """The one spec parser (``certlocker.specs``), with the deployment's rules.

    :raises InvalidInput: naming the first bad field."""
    return specs.parse(body, SpecRules.from_settings(settings))


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
