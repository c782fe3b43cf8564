"""Each delivery format parses back to the same leaf, key and chain."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12 as p12

from certlocker.delivery import formats
from certlocker.delivery.formats import Bundle
from certlocker.errors import InvalidInput
from certlocker.models import CertificateInfo, IssuedCertificate
from tests.support.tls_servers import IssuedChain, issue_test_chain, new_key

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module", params=["ec", "rsa"])
def chain(request: pytest.FixtureRequest) -> IssuedChain:
    return issue_test_chain(request.param)


@pytest.fixture
def bundle(chain: IssuedChain) -> Bundle:
    return Bundle(chain.certificate, chain.chain, chain.private_key)


def _spki(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _leaf(chain: IssuedChain) -> x509.Certificate:
    return x509.load_pem_x509_certificate(chain.certificate.encode())


# --- text formats ---------------------------------------------------------------------


def test_haproxy_pem_is_leaf_then_chain_then_key(bundle: Bundle, chain: IssuedChain) -> None:
    text = formats.haproxy_pem(bundle)
    certs = x509.load_pem_x509_certificates(text.encode())
    assert [c.fingerprint(hashes.SHA256()).hex() for c in certs] == [
        chain.sha256_fingerprint,
        x509.load_pem_x509_certificate(chain.chain.encode()).fingerprint(hashes.SHA256()).hex(),
    ]
    key = serialization.load_pem_private_key(text.encode(), None)
    assert _spki(key) == _spki(serialization.load_pem_private_key(chain.private_key.encode(), None))
    assert text.index("BEGIN CERTIFICATE") < text.index("PRIVATE KEY")


def test_inputs_without_trailing_newline_do_not_glue_blocks(chain: IssuedChain) -> None:
    b = Bundle(chain.certificate.rstrip("\n"), chain.chain.rstrip("\n"),
               chain.private_key.rstrip("\n"))
    text = formats.haproxy_pem(b)
    assert "----------" not in text
    assert len(x509.load_pem_x509_certificates(text.encode())) == 2


def test_nginx_files(bundle: Bundle, chain: IssuedChain) -> None:
    files = formats.nginx_files(bundle)
    assert set(files) == {"fullchain.pem", "privkey.pem"}
    certs = x509.load_pem_x509_certificates(files["fullchain.pem"].encode())
    assert certs[0] == _leaf(chain) and len(certs) == 2
    assert "PRIVATE KEY" not in files["fullchain.pem"]
    key = serialization.load_pem_private_key(files["privkey.pem"].encode(), None)
    assert formats.key_matches_certificate(files["fullchain.pem"], files["privkey.pem"])
    assert _spki(key) == _spki(serialization.load_pem_private_key(chain.private_key.encode(), None))


def test_pem_trio(bundle: Bundle, chain: IssuedChain) -> None:
    files = formats.pem_trio(bundle)
    assert x509.load_pem_x509_certificates(files["cert.pem"].encode()) == [_leaf(chain)]
    assert x509.load_pem_x509_certificates(files["chain.pem"].encode()) == \
        x509.load_pem_x509_certificates(chain.chain.encode())
    assert formats.key_matches_certificate(files["cert.pem"], files["key.pem"])


def test_kubernetes_secret(bundle: Bundle, chain: IssuedChain) -> None:
    text = formats.kubernetes_tls_secret(bundle, "api-tls", "prod")
    fields = dict(line.strip().split(": ", 1) for line in text.splitlines() if ": " in line)
    assert fields["kind"] == "Secret" and fields["type"] == "kubernetes.io/tls"
    assert fields["name"] == "api-tls" and fields["namespace"] == "prod"
    crt = base64.b64decode(fields["tls.crt"])
    key = base64.b64decode(fields["tls.key"])
    ca = base64.b64decode(fields["ca.crt"])
    assert x509.load_pem_x509_certificates(crt)[0] == _leaf(chain)
    assert formats.key_matches_certificate(crt.decode(), key.decode())
    assert x509.load_pem_x509_certificates(ca) == \
        x509.load_pem_x509_certificates(chain.chain.encode())


def test_kubernetes_secret_without_chain_has_no_ca(chain: IssuedChain) -> None:
    text = formats.kubernetes_tls_secret(Bundle(chain.certificate, "", chain.private_key),
                                         "api", "default")
    assert "ca.crt" not in text


@pytest.mark.parametrize("name,namespace,field", [
    ("Api", "prod", "name"), ("api\nkind: Pod", "prod", "name"), ("", "prod", "name"),
    ("api", "prod.x", "namespace"), ("api", "-prod", "namespace"),
])
def test_kubernetes_secret_refuses_bad_names(bundle: Bundle, name: str, namespace: str,
                                             field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        formats.kubernetes_tls_secret(bundle, name, namespace)
    assert err.value.field == field


def test_der_is_the_leaf(bundle: Bundle, chain: IssuedChain) -> None:
    assert x509.load_der_x509_certificate(formats.der(bundle)) == _leaf(chain)


# --- the key/certificate check --------------------------------------------------------


def test_key_matches_certificate(chain: IssuedChain) -> None:
    other = issue_test_chain("ec")
    assert formats.key_matches_certificate(chain.certificate, chain.private_key)
    assert not formats.key_matches_certificate(chain.certificate, other.private_key)


def test_ec_cert_with_rsa_key_is_a_mismatch() -> None:
    ec_chain = issue_test_chain("ec")
    rsa_key = new_key("rsa").private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()).decode()
    assert not formats.key_matches_certificate(ec_chain.certificate, rsa_key)


@pytest.mark.parametrize("render", [
    formats.haproxy_pem, formats.nginx_files, formats.pem_trio, formats.der,
    lambda b: formats.kubernetes_tls_secret(b, "a", "b"),
    lambda b: formats.pkcs12(b, PASSWORD),
    lambda b: formats.java_pkcs12(b, PASSWORD, "api"),
])
def test_every_renderer_refuses_a_mismatched_pair(chain: IssuedChain, render) -> None:
    other = issue_test_chain("ec")
    with pytest.raises(InvalidInput) as err:
        render(Bundle(chain.certificate, chain.chain, other.private_key))
    assert err.value.field == "private_key"
    assert "PRIVATE" not in str(err.value)


@pytest.mark.parametrize("field,value", [
    ("certificate", "not pem"), ("certificate", ""), ("private_key", "garbage"),
    ("chain", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
])
def test_unparseable_input_is_invalid_input(bundle: Bundle, field: str, value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        formats.haproxy_pem(dataclasses.replace(bundle, **{field: value}))
    assert err.value.field == field


def test_certificate_field_must_hold_only_the_leaf(chain: IssuedChain) -> None:
    with pytest.raises(InvalidInput) as err:
        formats.haproxy_pem(Bundle(chain.fullchain, "", chain.private_key))
    assert err.value.field == "certificate"


def test_accepts_an_issued_certificate(chain: IssuedChain) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    issued = IssuedCertificate(
        CertificateInfo("01", now, now, chain.sha256_fingerprint, "test"),
        chain.certificate, chain.chain, chain.private_key)
    assert formats.haproxy_pem(issued) == formats.haproxy_pem(
        Bundle(chain.certificate, chain.chain, chain.private_key))


# --- PKCS#12 --------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_round_trip(bundle: Bundle, chain: IssuedChain, legacy: bool) -> None:
    blob = formats.pkcs12(bundle, PASSWORD, legacy=legacy, friendly_name="api.example")
    loaded = p12.load_pkcs12(blob, PASSWORD.encode())
    assert loaded.cert is not None and loaded.key is not None
    assert loaded.cert.certificate == _leaf(chain)
    assert loaded.cert.friendly_name == b"api.example"
    assert _spki(loaded.key) == _spki(
        serialization.load_pem_private_key(chain.private_key.encode(), None))
    assert [c.certificate for c in loaded.additional_certs] == \
        x509.load_pem_x509_certificates(chain.chain.encode())


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_wrong_password_fails(bundle: Bundle, legacy: bool) -> None:
    blob = formats.pkcs12(bundle, PASSWORD, legacy=legacy)
    with pytest.raises(ValueError):
        p12.load_key_and_certificates(blob, b"not the password at all")


def _openssl_info(blob: bytes, tmp_path: Path, *, legacy_provider: bool) -> str:
    path = tmp_path / "x.p12"
    path.write_bytes(blob)
    cmd = ["openssl", "pkcs12", "-info", "-nokeys", "-nocerts", "-in", str(path),
           "-passin", f"pass:{PASSWORD}"]
    if legacy_provider:
        cmd.append("-legacy")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_modern_and_legacy_encryption_really_differ(bundle: Bundle, tmp_path: Path) -> None:
    modern = _openssl_info(formats.pkcs12(bundle, PASSWORD), tmp_path, legacy_provider=False)
    assert "MAC: sha256" in modern
    assert "PBES2, PBKDF2, AES-256-CBC" in modern
    assert "3DES" not in modern and "TripleDES" not in modern

    # OpenSSL 3 moved 3DES-PKCS#12 to the legacy provider; reading it needs -legacy.
    legacy = _openssl_info(formats.pkcs12(bundle, PASSWORD, legacy=True), tmp_path,
                           legacy_provider=True)
    assert "MAC: sha1" in legacy
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in legacy
    assert "AES" not in legacy


@pytest.mark.skipif(shutil.which("keytool") is None, reason="no JDK keytool on this machine")
def test_java_keystore_lists_with_keytool(bundle: Bundle, chain: IssuedChain,
                                          tmp_path: Path) -> None:
    store = tmp_path / "keystore.p12"
    store.write_bytes(formats.java_pkcs12(bundle, PASSWORD, "api-tls"))
    done = subprocess.run(
        ["keytool", "-list", "-v", "-storetype", "PKCS12", "-keystore", str(store),
         "-storepass", PASSWORD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Alias name: api-tls" in done.stdout
    assert "Entry type: PrivateKeyEntry" in done.stdout
    assert "Certificate chain length: 2" in done.stdout
    sha = ":".join(chain.sha256_fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    assert sha in done.stdout

    wrong = subprocess.run(
        ["keytool", "-list", "-storetype", "PKCS12", "-keystore", str(store),
         "-storepass", "wrong password!!"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0


def test_java_alias_must_be_lowercase(bundle: Bundle) -> None:
    with pytest.raises(InvalidInput) as err:
        formats.java_pkcs12(bundle, PASSWORD, "Api")
    assert err.value.field == "alias"


@pytest.mark.parametrize("password", ["", "short", "elevenchars", "tab\tin the middle",
                                      None, "x" * 1025])
def test_password_policy_refuses(password) -> None:
    with pytest.raises(InvalidInput) as err:
        formats.validate_pkcs12_password(password)
    assert err.value.field == "password"
    if isinstance(password, str) and password:
        assert password not in err.value.reason


def test_password_policy_accepts_twelve() -> None:
    assert formats.validate_pkcs12_password("twelve chars") == "twelve chars"


def test_pkcs12_refuses_a_weak_password_before_rendering(bundle: Bundle) -> None:
    with pytest.raises(InvalidInput) as err:
        formats.pkcs12(bundle, "hunter2")
    assert err.value.field == "password"


# --- registry -------------------------------------------------------------------------


def test_format_registry_names_and_unknown() -> None:
    assert formats.format_spec("pkcs12").needs_password
    assert formats.format_spec("der").binary
    assert formats.format_spec("nginx").multi_file
    for bad in ("jks", "", None, "HAPROXY"):
        with pytest.raises(InvalidInput) as err:
            formats.format_spec(bad)
        assert err.value.field == "format"


def test_every_registered_renderer_renders(bundle: Bundle) -> None:
    for spec in formats.FORMATS.values():
        kwargs: dict = {}
        if spec.needs_password:
            kwargs["password"] = PASSWORD
        if spec.name == "java":
            kwargs["alias"] = "api"
        if spec.needs_k8s_name:
            kwargs.update(name="api", namespace="prod")
        out = spec.render(bundle, **kwargs)
        assert isinstance(out, bytes if spec.binary else (dict if spec.multi_file else str))
