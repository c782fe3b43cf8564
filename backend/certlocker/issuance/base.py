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


@dataclasses.dataclass(frozen=True)
class Inflight:
    """The in-flight state of one issuance: the key made for it (before the CA heard of
    it), the names and key type it was made for, the issuer, and the ACME order once
    one exists. Stored as JSON (``to_json``) at ``system/inflight/...``; a field that is
    None is left out, so each issuer's record keeps its shape. The key is never shown
    in a ``repr``."""

    private_key: str | None = dataclasses.field(default=None, repr=False)
    dns_names: tuple[str, ...] = ()
    issuer: str | None = None
    key_type: str | None = None
    order_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"private_key": self.private_key,
                                "order_url": self.order_url,
                                "dns_names": list(self.dns_names), "issuer": self.issuer,
                                "key_type": self.key_type}
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Inflight | None:
        """None for no record; fields of the wrong type (a record from elsewhere) read
        as absent, so such a journal is never resumed."""
        if not isinstance(data, Mapping):
            return None
        names = data.get("dns_names")

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        return cls(private_key=text("private_key"),
                   dns_names=tuple(n for n in names if isinstance(n, str))
                   if isinstance(names, list) else (),
                   issuer=text("issuer"), key_type=text("key_type"),
                   order_url=text("order_url"))

    def for_names(self, dns_names: tuple[str, ...]) -> bool:
        """Made for the same names (in any order) as a request for ``dns_names``."""
        return sorted(self.dns_names) == sorted(dns_names)


class Journal(Protocol):
    """Durable in-flight state of one issuance (``Inflight``).

    ``save`` must be durable before it returns: the issuer saves the new key before it
    asks the CA for anything, and the order URL before it finalizes.
    """

    def load(self) -> Inflight | None: ...

    def save(self, state: Inflight) -> None: ...


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
