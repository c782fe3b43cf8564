"""Issuance from an internal CA: a Vault/OpenBao PKI secrets engine mount and role.

certlocker generates the key in-process and sends only a CSR to ``<mount>/sign/<role>``;
the key leaves certlocker only into the service's KV path. The signing call goes through
a ``Signer`` (``certlocker.vault.pki.PkiSigner`` in production), so this module imports
no hvac.
"""

from __future__ import annotations

import logging
from typing import Protocol, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ..models import Inflight, IssuedCertificate, IssueRequest
from ..ports import Journal
from ..settings import IssuerSettings
from ..x509info import read_csr
from . import keys

log = logging.getLogger(__name__)


class Signed(Protocol):
    """A signed leaf and its issuing chain. Read-only, so a frozen dataclass (the
    ``SignedCertificate`` that ``PkiSigner`` returns) satisfies it."""

    @property
    def certificate(self) -> str: ...

    @property
    def ca_chain(self) -> Sequence[str]: ...


class Signer(Protocol):
    def sign(self, csr_pem: str, ttl: str | None = None,
             common_name: str | None = None) -> Signed: ...


class VaultPkiIssuer:
    def __init__(self, settings: IssuerSettings, signer: Signer) -> None:
        self.name = settings.name
        self.settings = settings
        self._signer = signer

    def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
        """Sign a fresh key's CSR. The key is journaled before Vault sees the CSR, so a
        retry after a crash reuses it rather than minting a second key for one spec.

        :raises IssuanceFailed: when the role refuses the names or returns a certificate
            that does not match the key.
        """
        if request.csr_pem is not None:  # the client holds the key: sign its CSR as is
            facts = read_csr(request.csr_pem)
            cn = None if facts.common_name else next(
                (n for n in facts.dns_names if len(n) <= 64), None)
            signed = self._signer.sign(request.csr_pem, common_name=cn)
            issued = keys.bundle(signed.certificate + chain_without_root(signed.ca_chain),
                                 csr_pem=request.csr_pem)
            log.info("vault_pki.signed", extra={"certificate": request.ref.id,
                                                "issuer": self.name})
            return issued
        state = journal.load()
        if (state is not None and state.private_key and state.issuer == self.name
                and state.for_names(request.dns_names)):
            key = keys.from_pem(state.private_key)
        else:
            key = keys.generate(request.key_type)
            journal.save(Inflight(private_key=keys.to_pem(key), dns_names=request.dns_names,
                                  issuer=self.name))
        signed = self._signer.sign(keys.csr_pem(key, request.dns_names).decode())
        issued = keys.bundle(signed.certificate + chain_without_root(signed.ca_chain), key)
        log.info("vault_pki.signed", extra={"certificate": request.ref.id, "issuer": self.name})
        return issued


def chain_without_root(ca_chain: Sequence[str]) -> str:
    """The intermediates a server sends: Vault's ``ca_chain`` minus any self-signed root
    (clients hold the root; sending it only costs bytes)."""
    return "".join(pem for pem in ca_chain if not _self_signed(pem))


def _self_signed(pem: str) -> bool:
    cert = x509.load_pem_x509_certificate(pem.encode())
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
