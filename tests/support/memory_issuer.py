"""An ``Issuer`` for unit tests that signs real certificates with a throwaway CA.

``lifetime`` sets each certificate's validity; ``fail_with`` makes every issuance raise
that error instead; ``issued`` lists what was issued, by certificate id.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certlocker.errors import IssuanceFailed
from certlocker.issuance import keys
from certlocker.issuance.base import IssueRequest, Journal
from certlocker.models import IssuedCertificate
from certlocker.x509info import info_from_pem


class MemoryIssuer:
    def __init__(self, name: str = "test", *, lifetime: dt.timedelta = dt.timedelta(days=90),
                 not_before: dt.datetime | None = None) -> None:
        self.name = name
        self.lifetime = lifetime
        self.not_before = not_before
        self.fail_with: IssuanceFailed | None = None
        self.issued: list[str] = []
        self._lock = threading.Lock()
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memory CA")])

    def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
        if self.fail_with is not None:
            raise self.fail_with
        key = keys.generate(request.key_type)
        start = (self.not_before or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
        builder: Any = (x509.CertificateBuilder()
                        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                    request.dns_names[0])]))
                        .issuer_name(self._ca_name)
                        .public_key(key.public_key())
                        .serial_number(x509.random_serial_number())
                        .not_valid_before(start)
                        .not_valid_after(start + self.lifetime)
                        .add_extension(x509.SubjectAlternativeName(
                            [x509.DNSName(n) for n in request.dns_names]), critical=False))
        cert = builder.sign(self._ca_key, hashes.SHA256())
        leaf = cert.public_bytes(serialization.Encoding.PEM).decode()
        with self._lock:
            self.issued.append(request.ref.id)
        return IssuedCertificate(info=info_from_pem(leaf), certificate=leaf, chain="",
                                 private_key=keys.to_pem(key))
