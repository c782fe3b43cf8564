"""Choosing among the chains a CA offers (RFC 8555 section 7.4.2, Link rel="alternate").

Like certbot's ``--preferred-chain``: a chain matches when the issuer common name of its
topmost certificate, or the subject common name of any certificate in it, equals the
preference. The default chain (the first) wins when none matches.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..x509info import split_pem_chain


def _common_names(name: x509.Name) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def matches(fullchain: str, preferred: str) -> bool:
    certs = [x509.load_pem_x509_certificate(pem.encode()) for pem in split_pem_chain(fullchain)]
    if not certs:
        return False
    if preferred in _common_names(certs[-1].issuer):
        return True
    return any(preferred in _common_names(c.subject) for c in certs[1:])


def select(chains: list[str], preferred: str | None) -> str:
    """The first chain matching ``preferred``, else the CA's default (``chains[0]``)."""
    if preferred:
        for chain in chains:
            if matches(chain, preferred):
                return chain
    return chains[0]
