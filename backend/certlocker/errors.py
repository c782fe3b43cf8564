"""The one error tree.

Every error the domain raises is a ``CertlockerError``. Each leaf knows its HTTP status
and RFC 9457 problem ``type``; the API maps them in one place (``api.problems``). Leaves
carry data, not prose: the message is built from the fields, and no field ever holds key
material or a token.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://certlocker.dev/problems/"


class CertlockerError(Exception):
    """Base of every domain error."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


# --- 4xx: the caller's input or rights ------------------------------------------------


class InvalidInput(CertlockerError):
    """A request field is malformed; ``field`` names it (JSON pointer style)."""

    status = 400
    slug = "invalid-input"
    title = "Invalid input"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}", field=field, reason=reason)


class MalformedRequest(CertlockerError):
    status = 400
    slug = "malformed-request"
    title = "Malformed request"


class UnsupportedMediaType(CertlockerError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class PayloadTooLarge(CertlockerError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class Unauthenticated(CertlockerError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class AccessDenied(CertlockerError):
    status = 403
    slug = "access-denied"
    title = "Access denied"


class NamesRefused(AccessDenied):
    """The service is not granted some names of a spec (``ownership``); ``refused`` lists
    each with its reason."""

    slug = "names-not-granted"
    title = "Names not granted to this service"

    def __init__(self, detail: str, refused: list[dict[str, str]]) -> None:
        self.refused = refused
        super().__init__(detail)
        self.extra["refused"] = refused


class GrantCorrupt(CertlockerError):
    """A name grant record in Vault does not parse: it grants nothing."""

    status = 409
    slug = "grant-invalid"
    title = "The name grant in Vault is invalid"


class TargetForbidden(CertlockerError):
    """A target or scan endpoint lies outside the administrator's allow-list
    (``delivery.target_policy``). ``field`` is where the request named it, ``target``
    the endpoint and ``rule`` the rule it breaks: ``port``, ``host`` or ``network``."""

    status = 403
    slug = "target-forbidden"
    title = "Target not allowed"

    def __init__(self, field: str, target: str, rule: str, reason: str) -> None:
        self.field = field
        self.target = target[:200]
        self.rule = rule
        super().__init__(f"{field}: {self.target}: {reason}", field=field,
                         target=self.target, rule=rule)


class NotFound(CertlockerError):
    status = 404
    slug = "not-found"
    title = "Not found"


class AlreadyExists(CertlockerError):
    status = 409
    slug = "already-exists"
    title = "Already exists"


class UnprocessableSelection(CertlockerError):
    """A well-formed selector that selects nothing (a mass replacement of no
    certificate): said, rather than answered as an operation with nothing to do."""

    status = 422
    slug = "empty-selection"
    title = "The selector matches no certificate"


class Conflict(CertlockerError):
    """A concurrent writer won a check-and-set race, or the state forbids the action."""

    status = 409
    slug = "conflict"
    title = "Conflict"


# --- issuance -------------------------------------------------------------------------


class IssuanceFailed(CertlockerError):
    """The CA refused or the challenge failed; ``acme_code`` is the RFC 8555 error type."""

    status = 502
    slug = "issuance-failed"
    title = "Certificate issuance failed"

    def __init__(self, detail: str, acme_code: str | None = None,
                 retryable: bool = True) -> None:
        self.acme_code = acme_code
        self.retryable = retryable
        super().__init__(detail, acme_code=acme_code)


class RateLimited(IssuanceFailed):
    status = 429
    slug = "rate-limited"
    title = "Rate limited by the CA"

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(detail, acme_code="rateLimited")


class IssuanceDeferred(IssuanceFailed):
    """Not a failure: the issuer's rate limits (kept by certlocker) have no slot now, so
    the certificate is scheduled for ``until`` (an aware datetime); ``issuer`` names
    the issuer it waits for. No attempt is counted and nothing is retried before then."""

    status = 429
    slug = "issuance-deferred"
    title = "Issuance scheduled for a later slot"

    def __init__(self, detail: str, until: Any, issuer: str) -> None:
        self.until = until
        self.issuer = issuer
        super().__init__(detail, acme_code=None, retryable=True)


# --- dependencies ---------------------------------------------------------------------


class VaultUnavailable(CertlockerError):
    """Vault is unreachable, sealed, or on standby without a leader."""

    status = 503
    slug = "vault-unavailable"
    title = "Vault is unavailable"


class OwnTokenRefused(AccessDenied):
    """Vault refused certlocker's *own* token: a fault of this deployment (the token
    lapsed or was revoked, or the certlocker policy lacks the path), never of the caller,
    so it answers 503. Still an ``AccessDenied`` for the code that expects certlocker's
    policy to refuse (a create-only audit seq taken, write-only ``certs/``)."""

    status = 503
    slug = "vault-token-refused"
    title = "certlocker's Vault token was refused"


class ConfigurationError(CertlockerError):
    """Settings are invalid; raised at start, never per request."""

    status = 500
    slug = "configuration"
    title = "Invalid configuration"


class RevocationFailed(CertlockerError):
    """The CA refused to revoke; ``acme_code`` is the RFC 8555 error type."""

    status = 502
    slug = "revocation-failed"
    title = "Certificate revocation failed"

    def __init__(self, detail: str, acme_code: str | None = None) -> None:
        self.acme_code = acme_code
        super().__init__(detail, acme_code=acme_code)


class DeliveryFailed(CertlockerError):
    """A server refused a certificate (HAProxy's Runtime API, a reload); ``target``
    names the server or socket. The certificate in Vault is fine; delivery is not."""

    status = 502
    slug = "delivery-failed"
    title = "Certificate delivery failed"

    def __init__(self, detail: str, target: str | None = None) -> None:
        self.target = target
        super().__init__(detail, target=target)


class AlertDeliveryFailed(CertlockerError):
    """No alert channel (webhook, SMTP) accepted an alert; ``channels`` names them."""

    status = 502
    slug = "alert-delivery-failed"
    title = "Alert delivery failed"

    def __init__(self, detail: str, channels: tuple[str, ...] = ()) -> None:
        self.channels = channels
        super().__init__(detail, channels=list(channels))


class VaultWriteUncertain(VaultUnavailable):
    """A write reached Vault but no answer came back (the node died or lost leadership
    mid-request): it may or may not have been applied. Read back before writing again."""
