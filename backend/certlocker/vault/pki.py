"""Signing CSRs with a Vault/OpenBao PKI secrets engine (an internal CA).

certlocker generates the key itself and sends only a CSR to ``<mount>/sign/<role>``, so
the private key never reaches the PKI engine. Needs ``update`` on that path for
certlocker's own token: ``certlocker bootstrap vault`` renders it into the certlocker
policy for every ``vault-pki`` issuer in the settings (see :func:`sign_policy`).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import hvac
import hvac.exceptions as hx

from ..errors import IssuanceFailed
from ..settings import IssuerSettings
from .client import translated


@dataclasses.dataclass(frozen=True)
class SignedCertificate:
    certificate: str  # leaf PEM
    ca_chain: tuple[str, ...]  # issuing CA first, up to (possibly including) the root


class PkiSigner:
    """One PKI mount and role, used with certlocker's own token."""

    def __init__(self, client: hvac.Client, mount: str, role: str) -> None:
        self._client = client
        self.mount = mount.strip("/")
        self.role = role

    @property
    def sign_path(self) -> str:
        return f"{self.mount}/sign/{self.role}"

    def sign(self, csr_pem: str, ttl: str | None = None,
             common_name: str | None = None) -> SignedCertificate:
        """``POST <mount>/sign/<role>`` with the CSR; names come from the CSR's SANs.
        ``common_name``: for a CSR without one (stock ACME clients send none), the CN
        the role requires, instead of the CSR's.

        :raises IssuanceFailed: (not retryable) when the role refuses the request, e.g.
            a name outside ``allowed_domains`` or a TTL beyond ``max_ttl``; (retryable)
            when no PKI engine is mounted at the path.
        :raises AccessDenied: when certlocker's policy lacks update on the sign path.
        :raises VaultUnavailable: when Vault cannot be reached.
        """
        data: dict[str, object] = {"csr": csr_pem, "format": "pem"}
        if ttl:
            data["ttl"] = ttl
        if common_name:
            data.update(common_name=common_name, use_csr_common_name=False)
        with translated(self.sign_path):
            try:
                resp = self._client.write_data(self.sign_path, data=data)
            except hx.InvalidRequest as exc:
                # Vault's own words about the role's rules; the CSR is never echoed.
                reasons = "; ".join(exc.errors or []) or "request refused"
                raise IssuanceFailed(f"{self.sign_path}: {reasons}"[:500],
                                     acme_code="rejectedIdentifier", retryable=False) from exc
            except hx.InvalidPath as exc:
                # No PKI engine mounted there (yet): this deployment's fault, fixed by
                # mounting it, so retried like an issuer not configured yet.
                raise IssuanceFailed(f"{self.sign_path}: no PKI secrets engine answers "
                                     "there") from exc
        body = (resp or {}).get("data") or {}
        leaf = body.get("certificate")
        if not leaf:
            raise IssuanceFailed(f"{self.sign_path} returned no certificate")
        chain = body.get("ca_chain") or ([body["issuing_ca"]] if body.get("issuing_ca") else [])
        return SignedCertificate(leaf.strip() + "\n", tuple(c.strip() + "\n" for c in chain))


def sign_policy(issuers: Iterable[IssuerSettings]) -> str:
    """HCL stanzas granting ``update`` on the sign path of every vault-pki issuer
    (sorted and deduplicated, so rendering is stable and bootstrap stays idempotent)."""
    paths = sorted({f"{i.pki_mount.strip('/')}/sign/{i.pki_role}" for i in issuers
                    if i.type == "vault-pki" and i.pki_mount and i.pki_role})
    return "".join(f'path "{p}" {{\n  capabilities = ["update"]\n}}\n' for p in paths)
