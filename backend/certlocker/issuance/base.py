"""The issuance boundary: what an issuer needs from storage, and what it returns.

Issuers (ACME, Vault PKI) implement ``Issuer``; the lifecycle layer gives them a
``Journal`` for the in-flight state of one certificate and a ``ChallengeStore`` for
http-01 answers, both backed by Vault so any replica can resume or answer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Mapping, Protocol

from ..models import CertificateRef, IssuedCertificate, KeyType


@dataclasses.dataclass(frozen=True)
class IssueRequest:
    ref: CertificateRef
    dns_names: tuple[str, ...]
    key_type: KeyType
    replaces: str | None = None  # ARI certificate id of the certificate being renewed


@dataclasses.dataclass(frozen=True)
class RenewalWindow:
    """A CA's suggested renewal window (RFC 9773 section 4.2) and when to ask again
    (its ``Retry-After``, None when it sent none)."""

    start: dt.datetime
    end: dt.datetime
    explanation_url: str | None = None
    retry_after: dt.timedelta | None = None


class Journal(Protocol):
    """Durable in-flight state of one issuance (key PEM, order URL…).

    ``save`` must be durable before it returns: the issuer saves the new key before it
    asks the CA for anything, and the order URL before it finalizes.
    """

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


class ChallengeStore(Protocol):
    def put(self, token: str, key_authorization: str) -> None: ...

    def delete(self, token: str) -> None: ...


class IssuerSecrets(Protocol):
    """An issuer's secrets, read from Vault when needed (never from settings)."""

    def eab(self) -> Mapping[str, Any] | None:
        """External account binding: ``kid``, ``hmac_key`` (base64url), optional
        ``alg`` (HS256/HS384/HS512); None when none is stored."""
        ...

    def dns(self) -> Mapping[str, Any]:
        """The dns-01 provider's secrets. :raises IssuanceFailed: when none are stored."""
        ...


class Issuer(Protocol):
    name: str

    def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
        """Obtain a certificate, resuming from ``journal`` when it holds an order.

        :raises IssuanceFailed: (or ``RateLimited``) when the CA refuses.
        """
        ...


class RenewalInfoSource(Protocol):
    """An issuer whose CA may suggest renewal windows (ACME with ``renewalInfo``)."""

    def renewal_info(self, certificate_pem: str) -> RenewalWindow | None:
        """The CA's window for this certificate; None when the CA offers none or cannot
        be asked now (ARI is advisory: never raises)."""
        ...
