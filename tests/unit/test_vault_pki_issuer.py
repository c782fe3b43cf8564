"""The vault-pki issuer over an honest in-memory CA (real signatures, no Vault)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certlocker.errors import ConfigurationError, IssuanceFailed
from certlocker.issuance.base import Inflight, IssueRequest
from certlocker.issuance.vault_pki import VaultPkiIssuer
from certlocker.models import CertificateRef, KeyType
from certlocker.settings import IssuerSettings
from certlocker.vault.bootstrap import render_policy
from certlocker.vault.pki import sign_policy

NOW = dt.datetime.now(dt.timezone.utc)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _ca(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None = None,
        signer: ec.EllipticCurvePrivateKey | None = None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer or key, hashes.SHA256()))


@dataclasses.dataclass
class Signed:
    certificate: str
    ca_chain: tuple[str, ...]


class MemoryCA:
    """Root -> intermediate; signs CSRs like ``<mount>/sign/<role>`` and answers
    ``ca_chain`` = [intermediate, root] as Vault does when it knows the root."""

    def __init__(self, swap_key: bool = False) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _ca("root", self.root_key)
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = _ca("intermediate", self.int_key, self.root.subject,
                                self.root_key)
        self.csrs: list[x509.CertificateSigningRequest] = []
        self.swap_key = swap_key

    def sign(self, csr_pem: str, ttl: str | None = None,
             common_name: str | None = None) -> Signed:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        self.csrs.append(csr)
        public = ec.generate_private_key(ec.SECP256R1()).public_key() if self.swap_key \
            else csr.public_key()
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        leaf = (x509.CertificateBuilder().subject_name(csr.subject)
                .issuer_name(self.intermediate.subject).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=3))
                .add_extension(san, critical=False).sign(self.int_key, hashes.SHA256()))
        return Signed(_pem(leaf), (_pem(self.intermediate), _pem(self.root)))


class MemoryJournal:
    def __init__(self) -> None:
        self.state: Inflight | None = None
        self.saves = 0

    def load(self) -> Inflight | None:
        return self.state

    def save(self, state: Inflight) -> None:
        self.state = state
        self.saves += 1


SETTINGS = IssuerSettings(name="internal", type="vault-pki", pki_mount="pki-int",
                          pki_role="web")
REQUEST = IssueRequest(CertificateRef("prod", "api", "www"),
                       ("www.internal.test", "api.internal.test"), KeyType.EC_P256)


def test_issues_leaf_with_intermediate_chain_and_no_root() -> None:
    ca, journal = MemoryCA(), MemoryJournal()
    issued = VaultPkiIssuer(SETTINGS, ca).issue(REQUEST, journal)
    leaf = x509.load_pem_x509_certificate(issued.certificate.encode())
    leaf.verify_directly_issued_by(ca.intermediate)
    assert issued.chain == _pem(ca.intermediate)
    assert sorted(issued.info.dns_names) == sorted(REQUEST.dns_names)
    key = serialization.load_pem_private_key(issued.private_key.encode(), None)
    assert key.public_key() == ca.csrs[0].public_key()
    assert journal.state is not None and journal.state.private_key == issued.private_key


def test_a_retry_reuses_the_journaled_key() -> None:
    ca, journal = MemoryCA(), MemoryJournal()
    first = VaultPkiIssuer(SETTINGS, ca).issue(REQUEST, journal)
    second = VaultPkiIssuer(SETTINGS, ca).issue(REQUEST, journal)
    assert first.private_key == second.private_key
    assert journal.saves == 1


def test_changed_names_get_a_fresh_key() -> None:
    ca, journal = MemoryCA(), MemoryJournal()
    first = VaultPkiIssuer(SETTINGS, ca).issue(REQUEST, journal)
    changed = dataclasses.replace(REQUEST, dns_names=("other.internal.test",))
    assert VaultPkiIssuer(SETTINGS, ca).issue(changed, journal).private_key != \
        first.private_key


def test_a_certificate_for_another_key_is_refused() -> None:
    with pytest.raises(IssuanceFailed) as caught:
        VaultPkiIssuer(SETTINGS, MemoryCA(swap_key=True)).issue(REQUEST, MemoryJournal())
    assert caught.value.retryable is False


def test_policy_grants_update_on_each_sign_path_once() -> None:
    other = IssuerSettings(name="b", type="vault-pki", pki_mount="pki/int2", pki_role="svc")
    acme = IssuerSettings(name="le", directory_url="https://acme.test/dir")
    hcl = sign_policy([SETTINGS, other, SETTINGS, acme])
    assert hcl.count("path ") == 2
    assert 'path "pki-int/sign/web" {\n  capabilities = ["update"]\n}' in hcl
    assert 'path "pki/int2/sign/svc"' in hcl
    rendered = render_policy("a @MOUNT@\n@PKI_SIGN@", "kv", pki_sign=hcl)
    assert "@" not in rendered and rendered.startswith("a kv\npath")
    assert render_policy("@PKI_SIGN@", "kv") == ""


@pytest.mark.parametrize("mount, role", [
    ('pki" {} path "sys/*', "web"), ("pki", "web/../../sys"), ("../sys", "web"),
    ("pki", "we b"), ("/pki", "web"), (None, "web")])
def test_pki_mount_and_role_must_be_plain_path_segments(mount, role) -> None:
    with pytest.raises(ConfigurationError):
        IssuerSettings(name="x", type="vault-pki", pki_mount=mount, pki_role=role).validate()
