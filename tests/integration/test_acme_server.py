"""certlocker's ACME server (RFC 8555) end to end on the shared real stack: OpenBao with
the shipped policies, Pebble upstream, the API under gunicorn, driven by certbot's own
``acme`` library as the client (the stock clients: test_acme_server_clients.py).

- an account bound by EAB to one service obtains a certificate for its granted names with
  its own CSR; certlocker records it (inventory with key_held_by client, audit trail,
  status) and no private key for it exists anywhere under the mount;
- another service's name is refused with rejectedIdentifier before anything reaches the
  CA; revoking the service's credentials stops its accounts and bindings at once;
- renewal (a new order), ARI from certlocker's plan and an operator's "renew now",
  revocation through certlocker's revocation, key rollover, deactivation;
- the protocol's failure cases answer ACME problems, never a 500.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import josepy as jose
import pytest
import requests
from click.testing import CliRunner
from acme import errors as acme_errors, jws as acme_jws, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certlocker.acmeserver.server import PROCESSING_RETRY_AFTER
from certlocker.cli import main as cli
from certlocker.issuance import ari
from tests.support import acme_direct as ad
from tests.support import kv
from tests.support.audit_trail import stored_events
from tests.support.kv import grant_names
from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration

ENV = "prod"
MOUNT = "certlocker"


@pytest.fixture(scope="module")
def stack(certlocker_stack: CertlockerStack) -> CertlockerStack:
    return certlocker_stack


def directory_url(stack: CertlockerStack) -> str:
    return f"{stack.api_url}/acme/{ENV}/directory"


def service_with_names(stack: CertlockerStack, service: str, names: list[str]) -> None:
    grant_names(stack.client(stack.root_token), MOUNT, ENV, service, names)


def new_client(stack: CertlockerStack, service: str, key: jose.JWK | None = None) -> Any:
    eab = ad.binding(stack.api_url, stack.operator_token, ENV, service)
    acme = ad.client(directory_url(stack), key)
    ad.register(acme, eab)
    return acme


def leaf(fullchain: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(fullchain.encode())


def view(stack: CertlockerStack, cert_id: str) -> dict[str, Any]:
    resp = requests.get(f"{stack.api_url}/v1/certificates/{cert_id}",
                        headers={"X-Vault-Token": stack.operator_token}, timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def every_secret(stack: CertlockerStack) -> dict[str, dict[str, Any]]:
    """Every secret under the mount (root token), by path."""
    return kv.every_secret(stack.client(stack.root_token), MOUNT)


def test_a_bound_account_gets_its_service_names_with_its_own_key(
        stack: CertlockerStack) -> None:
    names = ["shop.acme.test", "www.shop.acme.test"]
    service_with_names(stack, "shop", names)
    acme = new_client(stack, "shop")
    got = ad.obtain(acme, names)

    cert = leaf(got.fullchain)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    key = serialization.load_pem_private_key(got.key_pem, None)
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
    assert len(list(x509.load_pem_x509_certificates(got.fullchain.encode()))) >= 2

    shown = view(stack, "prod.shop.acme-shop-acme-test")
    assert shown["status"] == "valid"
    assert shown["key_held_by"] == "client"
    assert shown["current"]["serial"] == format(cert.serial_number, "x")
    assert shown["acme_order"] == got.order.uri.rsplit("/", 1)[1]

    # The key never reached certlocker or Vault: no secret anywhere under the mount holds
    # it, and the certificate's secret has no private_key field.
    secrets = every_secret(stack)
    assert kv.holding_key(secrets, got.key_pem) == []
    stored = secrets["certs/prod/shop/acme-shop-acme-test"]
    assert "private_key" not in stored
    assert stored["certificate"].strip() == cert.public_bytes(
        serialization.Encoding.PEM).decode().strip()

    events = stored_events(stack.client(stack.root_token), MOUNT)
    actions = {(e["action"], e["outcome"]) for e in events
               if "shop" in json.dumps(e.get("subject", ""))}
    assert {("acme.binding.create", "success"), ("acme.account.create", "success"),
            ("acme.order.create", "success"), ("acme.order.finalize", "success"),
            ("certificate.issue", "success")} <= actions
    finalize = [e for e in events if e["action"] == "acme.order.finalize"
                and e["subject"] == "prod.shop.acme-shop-acme-test"][-1]
    assert finalize["actor"].startswith("acme:prod/shop/")
    assert sorted(finalize["details"]["dns_names"]) == sorted(names)


def test_another_services_name_is_rejected_before_the_ca(stack: CertlockerStack) -> None:
    service_with_names(stack, "shop", ["cart.acme.test"])
    service_with_names(stack, "billing", ["billing.acme.test"])
    acme = new_client(stack, "shop")
    with pytest.raises(messages.Error) as refused:
        ad.obtain(acme, ["cart.acme.test", "billing.acme.test"])
    assert refused.value.typ == "urn:ietf:params:acme:error:rejectedIdentifier"
    sub = [s.identifier.value for s in refused.value.subproblems or ()]
    assert sub == ["billing.acme.test"]
    assert "billing.acme.test" not in (stack.state_dir / "pebble.log").read_text()


def test_revoking_the_service_credentials_stops_its_accounts(stack: CertlockerStack) -> None:
    service_with_names(stack, "kiosk", ["kiosk.acme.test"])
    eab = ad.binding(stack.api_url, stack.operator_token, ENV, "kiosk")
    unused = ad.binding(stack.api_url, stack.operator_token, ENV, "kiosk")
    acme = ad.client(directory_url(stack))
    ad.register(acme, eab)
    got = ad.obtain(acme, ["kiosk.acme.test"])

    resp = requests.delete(f"{stack.api_url}/v1/services/{ENV}/kiosk/credentials",
                           headers={"X-Vault-Token": stack.operator_token}, timeout=30)
    assert resp.status_code == 200, resp.text
    with pytest.raises(messages.Error) as stopped:
        ad.obtain(acme, ["kiosk.acme.test"])
    assert stopped.value.typ == "urn:ietf:params:acme:error:unauthorized"
    with pytest.raises(messages.Error) as no_revoke:  # a stopped account revokes nothing
        acme.revoke(leaf(got.fullchain), 0)
    assert no_revoke.value.typ == "urn:ietf:params:acme:error:unauthorized"
    assert view(stack, "prod.kiosk.acme-kiosk-acme-test")["status"] == "valid"
    with pytest.raises(messages.Error) as old_binding:
        ad.register(ad.client(directory_url(stack)), unused)
    assert old_binding.value.typ == "urn:ietf:params:acme:error:unauthorized"
    # A binding made after the revocation works again.
    ad.obtain(new_client(stack, "kiosk"), ["kiosk.acme.test"])


def test_renewal_ari_and_renew_now(stack: CertlockerStack) -> None:
    service_with_names(stack, "cafe", ["cafe.acme.test"])
    acme = new_client(stack, "cafe")
    first = ad.obtain(acme, ["cafe.acme.test"])
    second = ad.obtain(acme, ["cafe.acme.test"])
    assert leaf(first.fullchain).serial_number != leaf(second.fullchain).serial_number
    assert view(stack, "prod.cafe.acme-cafe-acme-test")["current"]["serial"] == format(
        leaf(second.fullchain).serial_number, "x")

    ident = ari.cert_id(second.fullchain)
    assert ident is not None
    directory = requests.get(directory_url(stack), timeout=30).json()
    window = requests.get(f"{directory['renewalInfo']}/{ident}", timeout=30)
    assert window.status_code == 200, window.text
    assert int(window.headers["Retry-After"]) > 0
    cert = leaf(second.fullchain)
    start = messages.RenewalInfo.from_json(window.json()).suggested_window.start
    assert cert.not_valid_before_utc < start < cert.not_valid_after_utc

    renew = requests.post(f"{stack.api_url}/v1/certificates/prod.cafe.acme-cafe-acme-test"
                          "/renew?wait=0", headers={"X-Vault-Token": stack.operator_token},
                          timeout=30)
    assert renew.status_code in (200, 202), renew.text
    now_window = requests.get(f"{directory['renewalInfo']}/{ident}", timeout=30).json()
    end = messages.RenewalInfo.from_json(now_window).suggested_window.end
    import datetime as dt

    assert end <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=2)
    # certlocker did not renew it itself: the client holds the key.
    assert view(stack, "prod.cafe.acme-cafe-acme-test")["current"]["serial"] == format(
        cert.serial_number, "x")
    unknown = requests.get(f"{directory['renewalInfo']}/AAAA.AQID", timeout=30)
    assert unknown.status_code == 404 and ad.problem_type(unknown) == "malformed"


def test_a_renewal_the_ca_fails_ends_its_order_and_the_next_order_is_issued(
        stack: CertlockerStack) -> None:
    """The renewal's new name fails Pebble's http-01 check (its A record points at
    127.0.0.2, where nothing listens): the order ends invalid with the CA's error while
    the client still polls (it used to stay processing until a 5-minute backoff, after
    stock clients gave up), the first certificate stays served, and nothing is issued
    for the failed order later. The client's next order is issued."""
    names = ["tide.acme.test", "b.tide.acme.test"]
    service_with_names(stack, "tide", names)
    acme = new_client(stack, "tide")
    first = ad.obtain(acme, names[:1])
    cts = f"http://127.0.0.1:{stack.stack.ports['challtestsrv_mgmt']}"
    requests.post(f"{cts}/add-a", json={"host": names[1] + ".", "addresses": ["127.0.0.2"]},
                  timeout=5).raise_for_status()
    try:
        with pytest.raises(acme_errors.IssuanceError) as failed:
            ad.obtain(acme, names, timeout=90)
    finally:
        requests.post(f"{cts}/clear-a", json={"host": names[1] + "."},
                      timeout=5).raise_for_status()
    error = failed.value.error
    assert error.typ == "urn:ietf:params:acme:error:serverInternal"
    assert error.detail and "issuance failed" in error.detail and names[1] in error.detail

    shown = view(stack, "prod.tide.acme-tide-acme-test")
    assert shown["status"] == "valid" and shown["renewal_failing"]
    assert shown["current"]["serial"] == format(leaf(first.fullchain).serial_number, "x")
    assert shown["failed_acme_order"] == shown["acme_order"]
    assert shown["next_attempt_at"] is None
    assert shown["next_renewal"]["reason"] != "acme-order"
    cli_env = {"CERTLOCKER_URL": stack.api_url, "VAULT_TOKEN": stack.operator_token}
    described = CliRunner().invoke(cli, ["show", "prod.tide.acme-tide-acme-test"],
                                   env=cli_env)
    assert described.exit_code == 0, described.output
    assert f"acme order:  {shown['acme_order']} failed (invalid)" in described.output
    browser = requests.Session()
    signed_in = browser.post(f"{stack.api_url}/login", data={"token": stack.operator_token},
                             timeout=30, allow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    page = browser.get(f"{stack.api_url}/certificates/prod.tide.acme-tide-acme-test",
                       timeout=30)
    assert page.status_code == 200
    assert f"{shown['acme_order']}</code> failed and ended invalid" in " ".join(
        page.text.split())

    renewed = ad.obtain(acme, names)
    cert = leaf(renewed.fullchain)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    shown = view(stack, "prod.tide.acme-tide-acme-test")
    assert shown["current"]["serial"] == format(cert.serial_number, "x")
    assert shown["failed_acme_order"] is None and not shown["renewal_failing"]


def test_a_client_polling_at_the_retry_after_keeps_its_connection(
        stack: CertlockerStack) -> None:
    """A stock client waits the processing order's Retry-After, then polls on its kept
    connection. The API (gunicorn with certlocker's --keep-alive) must still hold it
    open: with gunicorn's default of 2 s the server closed it as the poll went out and
    the client's request was lost (seen as RemoteDisconnected in acme's own client)."""
    where = urlsplit(stack.api_url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    try:
        for _ in range(2):
            conn.request("GET", f"/acme/{ENV}/directory")
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200
            assert answer.getheader("Connection", "").lower() != "close"
            time.sleep(PROCESSING_RETRY_AFTER + 1.5)  # past gunicorn's default, with its 1 s sweep
    finally:
        conn.close()


def test_the_renewal_window_falls_in_the_maintenance_window_across_orders(
        stack: CertlockerStack) -> None:
    """An operator's maintenance window on a client-held certificate moves the ARI window
    certlocker suggests into its openings (as certlocker's own rotations are held), and
    the client's next order keeps it in the spec."""
    import datetime as dt

    names = ["ebb.acme.test"]
    service_with_names(stack, "ebb", names)
    acme = new_client(stack, "ebb")
    ad.obtain(acme, names)
    opens = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=12)).replace(
        second=0, microsecond=0)
    closes = opens + dt.timedelta(minutes=1)
    window = {"start": f"{opens:%H:%M}", "end": f"{closes:%H:%M}", "timezone": "UTC"}
    patched = requests.patch(
        f"{stack.api_url}/v1/certificates/prod.ebb.acme-ebb-acme-test",
        json={"maintenance_window": window},
        headers={"X-Vault-Token": stack.operator_token}, timeout=30)
    assert patched.status_code == 200, patched.text

    renewed = ad.obtain(acme, names)
    shown = view(stack, "prod.ebb.acme-ebb-acme-test")
    assert shown["maintenance_window"]["start"] == window["start"], "kept by the new order"
    assert shown["current"]["serial"] == format(leaf(renewed.fullchain).serial_number, "x")
    directory = requests.get(directory_url(stack), timeout=30).json()
    answer = requests.get(f"{directory['renewalInfo']}/{ari.cert_id(renewed.fullchain)}",
                          timeout=30)
    assert answer.status_code == 200, answer.text
    suggested = messages.RenewalInfo.from_json(answer.json()).suggested_window
    assert f"{suggested.start:%H:%M}" == window["start"]
    assert suggested.end - suggested.start <= dt.timedelta(minutes=1)
    assert suggested.start < leaf(renewed.fullchain).not_valid_after_utc


def test_revocation_goes_through_certlocker(stack: CertlockerStack) -> None:
    service_with_names(stack, "dock", ["dock.acme.test"])
    acme = new_client(stack, "dock")
    got = ad.obtain(acme, ["dock.acme.test"])
    cert = leaf(got.fullchain)
    acme.revoke(cert, 4)
    shown = view(stack, "prod.dock.acme-dock-acme-test")
    assert shown["status"] == "revoked"
    assert shown["revocation"]["serial"] == format(cert.serial_number, "x")
    assert shown["revocation"]["reason"] == "superseded"
    with pytest.raises(messages.Error) as again:
        acme.revoke(cert, 4)
    assert again.value.typ == "urn:ietf:params:acme:error:alreadyRevoked"
    # Another service's account may not revoke it.
    service_with_names(stack, "other", ["other.acme.test"])
    stranger = new_client(stack, "other")
    got2 = ad.obtain(acme, ["dock.acme.test"])
    with pytest.raises(messages.Error) as denied:
        stranger.revoke(leaf(got2.fullchain), 0)
    assert denied.value.typ == "urn:ietf:params:acme:error:unauthorized"


def test_key_rollover_and_deactivation(stack: CertlockerStack) -> None:
    service_with_names(stack, "roll", ["roll.acme.test"])
    acme = new_client(stack, "roll")
    account_url = acme.net.account.uri
    new_key = ad.rsa_key()
    directory = requests.get(directory_url(stack), timeout=30).json()
    inner = json.loads(acme_jws.JWS.sign(
        json.dumps({"account": account_url,
                    "oldKey": acme.net.key.public_key().to_json()}).encode(),
        key=new_key, alg=jose.RS256, nonce=None, url=directory["keyChange"]).json_dumps())
    resp = ad.signed_post(directory["keyChange"], inner, acme.net.key,
                          nonce=ad.fresh_nonce(directory), kid=account_url)
    assert resp.status_code == 200, resp.text
    rolled = ad.client(directory_url(stack), new_key)
    rolled.net.account = acme.net.account
    ad.obtain(rolled, ["roll.acme.test"])
    old = ad.signed_post(directory["newOrder"], {"identifiers": [
        {"type": "dns", "value": "roll.acme.test"}]}, acme.net.key,
        nonce=ad.fresh_nonce(directory), kid=account_url)
    assert old.status_code == 403 and ad.problem_type(old) == "unauthorized"
    rolled.deactivate_registration(rolled.net.account)
    after = ad.signed_post(directory["newOrder"], {"identifiers": [
        {"type": "dns", "value": "roll.acme.test"}]}, new_key,
        nonce=ad.fresh_nonce(directory), kid=account_url)
    assert after.status_code == 403 and ad.problem_type(after) == "unauthorized"


def test_protocol_failures_are_acme_problems(stack: CertlockerStack) -> None:
    service_with_names(stack, "proto", ["proto.acme.test"])
    acme = new_client(stack, "proto")
    kid = acme.net.account.uri
    key = acme.net.key
    directory = requests.get(directory_url(stack), timeout=30).json()
    new_order = directory["newOrder"]
    order_body = {"identifiers": [{"type": "dns", "value": "proto.acme.test"}]}

    nonce = ad.fresh_nonce(directory)
    first = ad.signed_post(new_order, order_body, key, nonce=nonce, kid=kid)
    assert first.status_code == 201, first.text
    replay = ad.signed_post(new_order, order_body, key, nonce=nonce, kid=kid)
    assert replay.status_code == 400 and ad.problem_type(replay) == "badNonce"
    assert replay.headers["Replay-Nonce"] != nonce
    forged = ad.signed_post(new_order, order_body, key, nonce="AAAA" * 8, kid=kid)
    assert ad.problem_type(forged) == "badNonce"

    wrong_url = ad.signed_post(new_order, order_body, key, nonce=ad.fresh_nonce(directory),
                               kid=kid, sign_url=directory["newAccount"])
    assert wrong_url.status_code == 403 and ad.problem_type(wrong_url) == "unauthorized"
    hmac = ad.signed_post(new_order, order_body, jose.JWKOct(key=b"k" * 32),
                          nonce=ad.fresh_nonce(directory), kid=kid, alg=jose.HS256)
    assert ad.problem_type(hmac) == "badSignatureAlgorithm"
    assert "ES256" in hmac.json()["algorithms"]
    other_key = ad.signed_post(new_order, order_body, ad.ec_key(),
                               nonce=ad.fresh_nonce(directory), kid=kid)
    assert other_key.status_code == 403 and ad.problem_type(other_key) == "unauthorized"
    no_account = ad.signed_post(new_order, order_body, key, nonce=ad.fresh_nonce(directory),
                                kid=directory["newAccount"].replace("new-account",
                                                                    "account/" + "0" * 32))
    assert ad.problem_type(no_account) == "accountDoesNotExist"
    media = ad.signed_post(new_order, order_body, key, nonce=ad.fresh_nonce(directory),
                           kid=kid, content_type="application/json")
    assert media.status_code == 415 and ad.problem_type(media) == "malformed"

    for body in (b"{", b"[]", b'{"protected": 1, "payload": "", "signature": ""}',
                 b"x" * 70_000, json.dumps({"signatures": []}).encode()):
        resp = requests.post(new_order, data=body, timeout=30,
                             headers={"Content-Type": "application/jose+json"})
        assert 400 <= resp.status_code < 500, (body[:40], resp.status_code, resp.text)
        assert ad.problem_type(resp) == "malformed"
        assert resp.headers["Replay-Nonce"]

    ip = ad.signed_post(new_order, {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]},
                        key, nonce=ad.fresh_nonce(directory), kid=kid)
    assert ad.problem_type(ip) == "unsupportedIdentifier"
    bad_name = ad.signed_post(new_order, {"identifiers": [{"type": "dns", "value": "a..b"}]},
                              key, nonce=ad.fresh_nonce(directory), kid=kid)
    assert ad.problem_type(bad_name) == "rejectedIdentifier"

    order_url = first.headers["Location"]
    with_payload = ad.signed_post(order_url, {"x": 1}, key, nonce=ad.fresh_nonce(directory),
                                  kid=kid)
    assert ad.problem_type(with_payload) == "malformed"
    finalize = first.json()["finalize"]
    junk_csr = ad.signed_post(finalize, {"csr": "AAAA"}, key,
                              nonce=ad.fresh_nonce(directory), kid=kid)
    assert ad.problem_type(junk_csr) == "badCSR"
    get = requests.get(order_url, timeout=30)
    assert get.status_code == 405
    unknown_env = requests.get(f"{stack.api_url}/acme/nowhere/directory", timeout=30)
    assert unknown_env.status_code == 404

    no_eab = ad.client(directory_url(stack))
    with pytest.raises(messages.Error) as required:
        no_eab.new_account(messages.NewRegistration.from_data(
            email="x@example.test", terms_of_service_agreed=True))
    assert required.value.typ == "urn:ietf:params:acme:error:externalAccountRequired"
    eab = ad.binding(stack.api_url, stack.operator_token, ENV, "proto")
    with pytest.raises(messages.Error) as bad_mac:
        ad.register(ad.client(directory_url(stack)),
                    {**eab, "eab_hmac_key": jose.encode_b64jose(b"z" * 32)})
    assert bad_mac.value.typ == "urn:ietf:params:acme:error:unauthorized"


def test_the_cli_creates_a_binding_a_client_can_use(stack: CertlockerStack) -> None:
    certlocker = str(Path(sys.executable).with_name("certlocker"))
    service_with_names(stack, "cli-acme", ["cli.acme.test"])
    human = subprocess.run([certlocker, "acme-account", ENV, "cli-acme"], env=dict(stack.env),
                           capture_output=True, text=True, timeout=60)
    assert human.returncode == 0, human.stderr
    assert f"directory: {directory_url(stack)}" in human.stdout
    done = subprocess.run([certlocker, "--json", "acme-account", ENV, "cli-acme"],
                          env=dict(stack.env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    eab = json.loads(done.stdout)
    assert eab["directory_url"] == directory_url(stack)
    acme = ad.client(eab["directory_url"])
    ad.register(acme, eab)
    got = ad.obtain(acme, ["cli.acme.test"])
    assert view(stack, "prod.cli-acme.acme-cli-acme-test")["current"]["serial"] == format(
        leaf(got.fullchain).serial_number, "x")
    # The HMAC key is stored nowhere: no secret under the mount holds it.
    assert not [p for p, doc in every_secret(stack).items()
                if eab["eab_hmac_key"] in json.dumps(doc)]


def test_targets_added_to_an_acme_certificate_are_verified_and_kept_across_orders(
        stack: CertlockerStack, tmp_path: Path) -> None:
    """A node serving what its ACME client got reads ok; after a new order the node
    still serving the old certificate does not, until it is given the new one."""
    from tests.support.tls_servers import start_nginx

    service_with_names(stack, "edge", ["edge.acme.test"])
    acme = new_client(stack, "edge")
    cert_id = "prod.edge.acme-edge-acme-test"
    first = ad.obtain(acme, ["edge.acme.test"])
    served = tmp_path / "edge.pem"
    served.write_text(first.fullchain + first.key_pem.decode())
    nginx = start_nginx(tmp_path, served)
    try:
        headers = {"X-Vault-Token": stack.operator_token}
        patched = requests.patch(f"{stack.api_url}/v1/certificates/{cert_id}", headers=headers,
                                 json={"targets": [{"address": f"127.0.0.1:{nginx.port}",
                                                    "sni": "edge.acme.test"}]}, timeout=60)
        assert patched.status_code == 200, patched.text

        def verify() -> dict[str, Any]:
            resp = requests.post(f"{stack.api_url}/v1/certificates/{cert_id}/verify",
                                 headers=headers, timeout=60)
            assert resp.status_code == 200, resp.text
            return dict(resp.json()["targets"][0])

        assert verify()["status"] == "ok"
        second = ad.obtain(acme, ["edge.acme.test"])
        shown = view(stack, cert_id)
        assert [t["address"] for t in shown["targets"]] == [f"127.0.0.1:{nginx.port}"]
        assert verify()["status"] != "ok"
        served.write_text(second.fullchain + second.key_pem.decode())
        subprocess.run(nginx.reload_command, check=True, timeout=30)
        from tests.support.tls_servers import wait_until

        wait_until(lambda: verify()["status"] == "ok", 30, "nginx serves the new certificate")
    finally:
        nginx.stop()
