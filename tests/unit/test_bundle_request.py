"""Bundle requests are validated before Vault is asked, and rendered like formats.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from certlocker.delivery import bundle_request, formats
from certlocker.delivery.fetch import Fetched, install
from certlocker.delivery.files import write_atomic
from certlocker.delivery.haproxy_runtime import RuntimeApi, parse_combined
from certlocker.errors import Conflict, InvalidInput
from certlocker.models import CertificateRef
from tests.support.tls_servers import issue_test_chain

REF = CertificateRef("prod", "shop", "www")
PASSWORD = "twelve chars or more"


@pytest.fixture(scope="module")
def bundle() -> formats.Bundle:
    chain = issue_test_chain()
    return formats.Bundle(chain.certificate, chain.chain, chain.private_key)


@pytest.mark.parametrize("fields, field, reason", [
    ({}, "format", "is required"),
    ({"format": "zip"}, "format", "must be one of"),
    ({"format": 3}, "format", "must be one of"),
    ({"format": "pkcs12"}, "password", "is required"),
    ({"format": "pkcs12", "password": ""}, "password", "must not be empty"),
    ({"format": "pkcs12-legacy", "password": "short"}, "password", "at least 12"),
    ({"format": "java", "password": 123456789012345}, "password", "must be a string"),
    ({"format": "haproxy", "password": PASSWORD}, "password", "only accepted by"),
    ({"format": "der", "alias": "x"}, "alias", "does not apply"),
    ({"format": "pem", "k8s_name": "x"}, "k8s_name", "does not apply"),
    ({"format": "kubernetes", "k8s_namespace": ""}, "k8s_namespace", "non-empty"),
    ({"format": "der", "colour": "red"}, "colour", "not a known field"),
])
def test_bad_requests_name_the_field(fields: dict, field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        bundle_request.parse(fields, REF)
    assert caught.value.field == field
    assert reason in caught.value.reason
    if isinstance(fields.get("password"), str) and fields["password"]:
        assert fields["password"] not in caught.value.detail


def test_defaults_come_from_the_certificate() -> None:
    java = bundle_request.parse({"format": "java", "password": PASSWORD}, REF)
    assert java.alias == "www"
    k8s = bundle_request.parse({"format": "kubernetes"}, REF)
    assert (k8s.k8s_name, k8s.k8s_namespace) == ("shop-www-tls", "prod")
    assert PASSWORD not in repr(java)


def test_every_format_renders_what_formats_renders(bundle: formats.Bundle) -> None:
    for name, spec in formats.FORMATS.items():
        fields = {"format": name, "password": PASSWORD} if spec.needs_password else {
            "format": name}
        rendered = bundle_request.render(bundle_request.parse(fields, REF), bundle)
        assert rendered.media_type == spec.media_type
        if name in ("haproxy", "der", "nginx", "pem"):
            assert rendered.body == spec.render(bundle)
        elif name == "kubernetes":
            assert rendered.body == formats.kubernetes_tls_secret(bundle, "shop-www-tls",
                                                                  "prod")
        else:
            loaded = pkcs12.load_pkcs12(rendered.body, PASSWORD.encode())  # type: ignore[arg-type]
            assert loaded.key is not None
            if name == "java":
                assert loaded.cert is not None and loaded.cert.friendly_name == b"www"


def test_an_unusable_stored_bundle_is_a_conflict_not_the_callers_fault(
        bundle: formats.Bundle) -> None:
    stranger = issue_test_chain()
    broken = formats.Bundle(bundle.certificate, bundle.chain, stranger.private_key)
    with pytest.raises(Conflict, match="renew"):
        bundle_request.render(bundle_request.parse({"format": "haproxy"}, REF), broken)
    with pytest.raises(InvalidInput) as caught:
        bundle_request.render(bundle_request.parse(
            {"format": "java", "password": PASSWORD, "alias": "UPPER"}, REF), bundle)
    assert caught.value.field == "alias"


# --- files ----------------------------------------------------------------------------


def test_write_atomic_replaces_with_0600_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "www.pem"
    target.write_text("old")
    target.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_atomic(target, "new")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["www.pem"]


def test_write_atomic_into_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "x.pem", b"data")


def test_install_one_file_or_a_directory_of_files(tmp_path: Path) -> None:
    one = Fetched({"": b"\x30\x82"}, multi_file=False, sha256="ab", serial="01")
    assert install(one, tmp_path / "cert.der") == [tmp_path / "cert.der"]
    with pytest.raises(InvalidInput):
        install(one, tmp_path)
    many = Fetched({"fullchain.pem": b"c", "privkey.pem": b"k"}, multi_file=True,
                   sha256="ab", serial="01")
    written = install(many, tmp_path / "nginx")
    assert [p.name for p in written] == ["fullchain.pem", "privkey.pem"]
    assert stat.S_IMODE((tmp_path / "nginx").stat().st_mode) == 0o700
    with pytest.raises(InvalidInput):
        install(many, tmp_path / "cert.der")


# --- HAProxy combined files -------------------------------------------------------------


def test_parse_combined_round_trips_and_refuses_a_foreign_key(bundle: formats.Bundle) -> None:
    combined = formats.haproxy_pem(bundle)
    assert formats.haproxy_pem(parse_combined(combined)) == combined
    stranger = issue_test_chain("rsa")
    with pytest.raises(InvalidInput, match="does not match"):
        parse_combined(bundle.certificate + bundle.chain + stranger.private_key)
    with pytest.raises(InvalidInput):
        parse_combined(bundle.certificate)
    with pytest.raises(InvalidInput):
        parse_combined(bundle.private_key)


def test_runtime_payload_may_not_end_early(tmp_path: Path) -> None:
    api = RuntimeApi(tmp_path / "unused.sock")
    with pytest.raises(InvalidInput):
        api.command("set ssl cert /x.pem", "line one\n\nline three")
    with pytest.raises(InvalidInput):
        api.command("show ssl cert\nshutdown frontend x")
