"""ACME problem documents (RFC 8555 section 6.7, RFC 7807) as one exception."""

from __future__ import annotations

from typing import Any, Mapping

PREFIX = "urn:ietf:params:acme:error:"

#: RFC 8555 error type -> the HTTP status a server answers it with.
STATUS: Mapping[str, int] = {
    "accountDoesNotExist": 400, "alreadyRevoked": 400, "badCSR": 400, "badNonce": 400,
    "badPublicKey": 400, "badRevocationReason": 400, "badSignatureAlgorithm": 400,
    "caa": 403, "compound": 403, "connection": 400, "externalAccountRequired": 400,
    "incorrectResponse": 400, "invalidContact": 400, "malformed": 400,
    "orderNotReady": 403, "rateLimited": 429, "rejectedIdentifier": 400,
    "serverInternal": 500, "unauthorized": 403, "unsupportedContact": 400,
    "unsupportedIdentifier": 400, "userActionRequired": 403,
}


class AcmeProblem(Exception):
    """An ACME error answered to the client: ``code`` is the RFC 8555 type without its
    URN prefix. ``status`` overrides the usual HTTP status (404, 405, 409, 413, 415, 503
    for what RFC 8555 leaves to HTTP). ``extra`` adds members (``algorithms``,
    ``subproblems``); ``headers`` adds response headers (``Location``, ``Retry-After``)."""

    def __init__(self, code: str, detail: str, *, status: int | None = None,
                 extra: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status or STATUS.get(code, 400)
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def document(self) -> dict[str, Any]:
        return {"type": PREFIX + self.code, "detail": self.detail, "status": self.status,
                **self.extra}


def identifier_problem(code: str, name: str, detail: str) -> dict[str, Any]:
    """One entry of ``subproblems`` (RFC 8555 section 6.7.1)."""
    return {"type": PREFIX + code, "detail": detail,
            "identifier": {"type": "dns", "value": name}}
