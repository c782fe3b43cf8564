"""The issuance boundary: what an issuer needs from storage, and what it returns.

Issuers (ACME, Vault PKI) implement ``Issuer``; the lifecycle layer gives them a
``Journal`` for the in-flight state of one certificate and a ``ChallengeStore`` for
http-01 answers, both backed by Vault so any replica can resume or answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from ..models import CertificateRef, IssuedCertificate, KeyType


@dataclasses.dataclass(frozen=True)
class IssueRequest:
    ref: CertificateRef
    dns_names: tuple[str, ...]
    key_type: KeyType
    replaces: str | None = None  # ARI certificate id of the certificate being renewed


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


class Issuer(Protocol):
    name: str

    def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
        """Obtain a certificate, resuming from ``journal`` when it holds an order.

        :raises IssuanceFailed: (or ``RateLimited``) when the CA refuses.
        """
        ...
