"""The ACME server's pure parts and its Vault records over an in-memory store: request
authentication (JWS), nonces, External Account Bindings, CSR checks, the names an order
maps to, and how the lifecycle treats a certificate whose key the client holds."""

from __future__ import annotations

import datetime as dt
import json

import josepy as jose
import pytest
from acme import crypto_util, jws as acme_jws, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certlocker import specs, x509info
from certlocker.acmeserver import jws, server
from certlocker.acmeserver.bindings import Bindings
from certlocker.acmeserver.nonces import LIFETIME, WINDOW, Nonces
from certlocker.acmeserver.problems import AcmeProblem
from certlocker.acmeserver.records import Order, OrderStatus
from certlocker.acmeserver.secret import ServerSecret
from certlocker.errors import InvalidInput
from certlocker.lifecycle.policy import planning, reissue
from certlocker.models import (CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, KeyType, RenewalRequest, State)
from tests.support.memory_store import MemoryStore

URL = "http://127.0.0.1:8080/acme/prod/new-order"
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)


def ec_jwk() -> jose.JWKEC:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def signed(payload: bytes, key: jose.JWK, *, url: str = URL, kid: str | None = None,
           nonce: bytes | None = b"n" * 16, alg: jose.JWASignature | None = None) -> bytes:
    alg = alg or (jose.RS256 if isinstance(key, jose.JWKRSA) else jose.ES256)
    return acme_jws.JWS.sign(payload, key=key, alg=alg, nonce=nonce, url=url,
                             kid=kid).json_dumps().encode()


def code(exc: pytest.ExceptionInfo[AcmeProblem]) -> str:
    return exc.value.code


# -- JWS ------------------------------------------------------------------------------------

def test_an_es256_request_with_its_jwk_verifies() -> None:
    key = ec_jwk()
    got = jws.verify(signed(b'{"a": 1}', key), URL, by_account=None)
    assert got.json() == {"a": 1} and got.kid is None
    assert jws.thumbprint(got.key) == jws.thumbprint(key.public_key())


def test_an_rs256_request_by_an_account_verifies_with_the_accounts_key() -> None:
    key = jose.JWKRSA(key=rsa.generate_private_key(65537, 2048))
    got = jws.verify(signed(b"", key, kid="acct"), URL, by_account=lambda kid: key.public_key())
    assert got.post_as_get and got.kid == "acct"


@pytest.mark.parametrize("alg", [jose.HS256, jose.RS256])
def test_a_mac_or_mismatched_algorithm_is_refused(alg: jose.JWASignature) -> None:
    key = jose.JWKOct(key=b"k" * 32) if alg is jose.HS256 else ec_jwk()
    if alg is jose.RS256:
        body = signed(b"{}", key, alg=jose.ES256)
        document = json.loads(body)
        protected = json.loads(jose.b64decode(document["protected"]))
        protected["alg"] = "RS256"
        document["protected"] = jose.b64encode(json.dumps(protected).encode()).decode()
        with pytest.raises(AcmeProblem) as refused:
            jws.verify(json.dumps(document).encode(), URL, by_account=None)
        assert code(refused) == "unauthorized"
        return
    with pytest.raises(AcmeProblem) as refused:
        jws.verify(signed(b"{}", key, kid="acct", alg=alg), URL,
                   by_account=lambda kid: key)
    assert code(refused) == "badSignatureAlgorithm"
    assert "ES256" in refused.value.extra["algorithms"]


def test_the_url_must_be_the_resource_and_a_nonce_is_needed() -> None:
    key = ec_jwk()
    with pytest.raises(AcmeProblem) as elsewhere:
        jws.verify(signed(b"{}", key, url=URL + "x"), URL, by_account=None)
    assert code(elsewhere) == "unauthorized"
    with pytest.raises(AcmeProblem) as no_nonce:
        jws.verify(signed(b"{}", key, nonce=None), URL, by_account=None)
    assert code(no_nonce) == "badNonce"


def test_a_kid_where_a_jwk_is_required_and_the_reverse_are_malformed() -> None:
    key = ec_jwk()
    with pytest.raises(AcmeProblem) as kid:
        jws.verify(signed(b"{}", key, kid="acct"), URL, by_account=None)
    assert code(kid) == "malformed"
    with pytest.raises(AcmeProblem) as jwk:
        jws.verify(signed(b"{}", key), URL, by_account=lambda kid: key)
    assert code(jwk) == "malformed"


def test_a_small_rsa_key_and_a_forged_signature_are_refused() -> None:
    with pytest.raises(AcmeProblem) as small:
        jws.verify(signed(b"{}", jose.JWKRSA(key=rsa.generate_private_key(65537, 1024))),
                   URL, by_account=None)
    assert code(small) == "badPublicKey"
    document = json.loads(signed(b"{}", ec_jwk()))
    document["payload"] = jose.b64encode(b'{"evil": 1}').decode()
    with pytest.raises(AcmeProblem) as forged:
        jws.verify(json.dumps(document).encode(), URL, by_account=None)
    assert code(forged) == "unauthorized"


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"protected": 1}',
                                  b'{"protected": "", "payload": "", "signature": "", "x": 1}',
                                  b"x" * (jws.MAX_BODY + 1)])
def test_bodies_that_are_no_flattened_jws_are_malformed(body: bytes) -> None:
    with pytest.raises(AcmeProblem) as bad:
        jws.verify(body, URL, by_account=None)
    assert code(bad) == "malformed"


# -- nonces ---------------------------------------------------------------------------------

def test_a_nonce_is_good_once_and_only_if_this_server_made_it() -> None:
    store = MemoryStore()
    clock = [1_000_000.0]
    nonces = Nonces(store, lambda: b"s" * 32, now=lambda: clock[0])
    nonce = nonces.new()
    nonces.redeem(nonce)
    with pytest.raises(AcmeProblem) as again:
        nonces.redeem(nonce)
    assert code(again) == "badNonce"
    forged = Nonces(store, lambda: b"t" * 32, now=lambda: clock[0]).new()
    with pytest.raises(AcmeProblem):
        nonces.redeem(forged)
    late = nonces.new()
    clock[0] += LIFETIME + 1
    with pytest.raises(AcmeProblem) as expired:
        nonces.redeem(late)
    assert "expired" in expired.value.detail


def test_nonce_records_of_old_windows_are_pruned() -> None:
    store = MemoryStore()
    clock = [1_000_000.0]
    nonces = Nonces(store, lambda: b"s" * 32, now=lambda: clock[0])
    nonces.redeem(nonces.new())
    old_window = f"{int(clock[0]) // WINDOW:010d}"
    assert store.list(store.paths.acme_nonces_dir(old_window))
    clock[0] += 4 * WINDOW
    nonces.new()
    assert store.list(store.paths.acme_nonces_dir(old_window)) == []


# -- External Account Bindings --------------------------------------------------------------

def test_a_binding_verifies_the_key_it_was_signed_for_and_nothing_else() -> None:
    store = MemoryStore()
    bindings = Bindings(store, ServerSecret(store))
    binding, hmac_key = bindings.create("prod", "shop", 1, "alice", NOW)
    assert not hmac_key.startswith("-") and "=" not in hmac_key
    assert hmac_key not in json.dumps(store.read_json(store.paths.acme_binding(binding.kid)))
    account = ec_jwk()
    directory = messages.Directory({"newAccount": URL})
    eab = messages.ExternalAccountBinding.from_data(
        account_public_key=account.public_key(), kid=binding.kid, hmac_key=hmac_key,
        directory=directory)
    assert bindings.verify(eab, account.public_key(), URL).service == "shop"
    with pytest.raises(AcmeProblem) as other_key:
        bindings.verify(eab, ec_jwk().public_key(), URL)
    assert code(other_key) == "unauthorized"
    wrong = messages.ExternalAccountBinding.from_data(
        account_public_key=account.public_key(), kid=binding.kid,
        hmac_key=jose.encode_b64jose(b"x" * 32), directory=directory)
    with pytest.raises(AcmeProblem) as bad_mac:
        bindings.verify(wrong, account.public_key(), URL)
    assert code(bad_mac) == "unauthorized"


# -- CSRs and specs with a client-held key --------------------------------------------------

def csr(names: list[str], key: object = None, cn: str | None = None,
        ip: bool = False) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    if ip:
        import ipaddress

        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(  # type: ignore[arg-type]
        serialization.Encoding.PEM).decode()


def test_read_csr_takes_stock_client_requests_and_says_what_is_wrong() -> None:
    key_pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    facts = x509info.read_csr(crypto_util.make_csr(key_pem, ["a.test", "B.test"]))
    assert facts.dns_names == ("a.test", "b.test") and facts.key_type is KeyType.EC_P384
    assert facts.common_name is None
    for bad, why in ((csr(["a.test"], cn="other.test"), "common name"),
                     (csr(["a.test"], ip=True), "only DNS names"),
                     (csr(["a.test"], key=rsa.generate_private_key(65537, 1024)), "1024"),
                     ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE "
                      "REQUEST-----\n", "does not parse")):
        with pytest.raises(ValueError, match=why):
            x509info.read_csr(bad)


def test_a_spec_with_a_csr_takes_its_key_type_and_must_name_the_same() -> None:
    body = {"environment": "prod", "service": "shop", "name": "acme-a-test",
            "dns_names": ["a.test"], "issuer": "pebble",
            "csr": csr(["a.test"], key=rsa.generate_private_key(65537, 2048)),
            "acme_order": "0" * 32}
    spec = specs.parse(body, specs.PERMISSIVE)
    assert spec.key_type is KeyType.RSA_2048 and spec.key_held_by_client
    assert specs.from_record(spec.to_json(), spec.ref, specs.PERMISSIVE) == spec
    with pytest.raises(InvalidInput, match="csr"):
        specs.parse({**body, "dns_names": ["b.test"]}, specs.PERMISSIVE)
    with pytest.raises(InvalidInput, match="key_type"):
        specs.parse({**body, "key_type": "ec-p256"}, specs.PERMISSIVE)
    with pytest.raises(InvalidInput, match="acme_order"):
        specs.parse({k: v for k, v in body.items() if k != "csr"}, specs.PERMISSIVE)


# -- the lifecycle of a client-held certificate ---------------------------------------------

def acme_spec(order: str = "a" * 32) -> CertificateSpec:
    return CertificateSpec(ref=CertificateRef("prod", "shop", "acme-a-test"),
                           dns_names=("a.test",), issuer="pebble",
                           csr=csr(["a.test"]), acme_order=order)


def info(order: str | None, *, days_left: float = 60) -> CertificateInfo:
    return CertificateInfo(serial="1", not_before=NOW - dt.timedelta(days=30),
                           not_after=NOW + dt.timedelta(days=days_left),
                           sha256_fingerprint="f", issuer="CA", dns_names=("a.test",),
                           acme_order=order)


def test_only_a_new_order_makes_certlocker_issue_a_client_held_certificate() -> None:
    spec = acme_spec()
    assert reissue.needs_reissue(spec, None, now=NOW).reason == reissue.Reason.ACME_ORDER
    assert reissue.needs_reissue(spec, info("b" * 32), now=NOW).needed
    up = reissue.needs_reissue(spec, info("a" * 32, days_left=1), now=NOW)
    assert not up.needed and "ACME client renews" in up.message
    requested = CertificateStatus(state=State.VALID, current=info("a" * 32),
                                  renewal_request=RenewalRequest(at=NOW, by="ops"))
    assert not planning.decide(spec, requested, NOW).needed


def test_a_revoked_client_held_certificate_is_issued_again_for_a_new_order() -> None:
    revoked = CertificateStatus(state=State.REVOKED, current=info("a" * 32))
    assert not planning.decide(acme_spec("a" * 32), revoked, NOW).needed
    assert planning.decide(acme_spec("b" * 32), revoked, NOW).needed


# -- orders ---------------------------------------------------------------------------------

@pytest.mark.parametrize("names, expected", [
    (("www.shop.test",), "acme-www-shop-test"),
    (("*.shop.test", "shop.test"), "acme-wildcard-shop-test"),
])
def test_an_orders_certificate_is_named_after_its_first_name(names: tuple[str, ...],
                                                              expected: str) -> None:
    assert server.certificate_name(names) == expected


def test_a_long_first_name_still_gives_a_valid_distinct_certificate_name() -> None:
    long_a = "a" * 60 + ".example.test"
    long_b = "a" * 60 + ".example2.test"
    a, b = server.certificate_name((long_a,)), server.certificate_name((long_b,))
    assert a != b and len(a) <= 63
    from certlocker import names

    assert names.component("name", a) == a


def test_an_order_is_answered_by_the_certificate_issued_for_it() -> None:
    order = Order(id="a" * 32, account="c" * 32, environment="prod", service="shop",
                  certificate="acme-a-test", dns_names=("a.test",), created_at=NOW,
                  expires=NOW + dt.timedelta(days=7), status=OrderStatus.PROCESSING,
                  finalized_at=NOW)
    pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
    import dataclasses

    other = CertificateStatus(state=State.VALID, current=dataclasses.replace(
        info("b" * 32), leaf_pem=pem), updated_at=NOW)
    assert server._settled(order, other) is None
    mine = CertificateStatus(state=State.VALID, current=dataclasses.replace(
        info("a" * 32), leaf_pem=pem, chain_pem="CHAIN"), updated_at=NOW)
    valid = server._settled(order, mine)
    assert valid is not None and valid.status is OrderStatus.VALID
    assert valid.fullchain == pem + "CHAIN"
    failed = CertificateStatus(state=State.REFUSED, last_error="not granted",
                               updated_at=NOW + dt.timedelta(seconds=1))
    refused = server._settled(order, failed)
    assert refused is not None and refused.status is OrderStatus.INVALID
    assert refused.error is not None and refused.error["type"].endswith("rejectedIdentifier")
    earlier = CertificateStatus(state=State.FAILED, last_error="x",
                                updated_at=NOW - dt.timedelta(seconds=1))
    assert server._settled(order, earlier) is None


def test_ari_ids_and_revocation_reasons_parse_strictly() -> None:
    assert server._serial_of("AAAA.AQID") == "10203"
    for bad in ("nodot", "a.b.c", "AAAA.", "AAAA.!!"):
        assert server._serial_of(bad) is None
    assert server._reason(None) == "unspecified" and server._reason(1) == "keyCompromise"
    for bad in (6, -1, True, "1"):
        with pytest.raises(AcmeProblem) as refused:
            server._reason(bad)
        assert code(refused) == "badRevocationReason"


def test_an_order_whose_finalize_never_recorded_its_spec_ends_invalid() -> None:
    from typing import Any, cast

    from certlocker.acmeserver.records import Records
    from certlocker.clock import FixedClock

    store = MemoryStore()
    options = server.ServerOptions(public_url="http://127.0.0.1:1", environments=("prod",),
                                   issuer="pebble", challenge="http-01", finalize_wait=5)
    acme = server.AcmeServer(
        cast(Any, store), options, rules=specs.PERMISSIVE, certificates=cast(Any, None),
        ownership=cast(Any, None), revocation=cast(Any, None), issuers={},
        credentials=cast(Any, None), bindings=cast(Any, None), nonces=cast(Any, None),
        audit=cast(Any, None), clock=FixedClock(NOW))
    order = Order(id="a" * 32, account="c" * 32, environment="prod", service="shop",
                  certificate="acme-a-test", dns_names=("a.test",), created_at=NOW,
                  expires=NOW + dt.timedelta(days=7), status=OrderStatus.PROCESSING,
                  finalized_at=NOW - dt.timedelta(seconds=30))
    records = Records(store)
    version = records.save_order(order, 0)
    assert acme._settle(order, version)[0].status is OrderStatus.PROCESSING  # still young
    old = order.replace(finalized_at=NOW - dt.timedelta(minutes=5))
    version = records.save_order(old, version)
    store.create_spec(acme_spec("a" * 32))
    assert acme._settle(old, version)[0].status is OrderStatus.PROCESSING  # recorded: answered
    store.write_json(store.paths.spec(old.ref), acme_spec("b" * 32).to_json(), cas=None)
    ended, _ = acme._settle(old, version)
    assert ended.status is OrderStatus.INVALID and ended.error is not None
    assert records.order("prod", "c" * 32, "a" * 32)[0].status is OrderStatus.INVALID


def test_a_failed_renewal_ends_its_order_and_is_not_issued_later() -> None:
    """A renewal order (the client's CSR) whose issuance fails while the current
    certificate is still served: the order ends invalid with the error at once (not
    ``processing`` until a backoff minutes later), certlocker does not issue for it
    again, and the client's next order is issued at once."""
    from certlocker.errors import IssuanceFailed
    from certlocker.lifecycle.service import CertificateService
    from tests.support.memory_issuer import MemoryIssuer
    from tests.support.memory_store import grant
    from tests.support.pools import certificate_pools

    rules = specs.SpecRules(environments=("prod",), issuers={"pebble": "http-01"},
                            default_issuer="pebble")
    store, issuer = MemoryStore(spec_rules=rules), MemoryIssuer("pebble")
    service = CertificateService(store, {"pebble": issuer}, pools=certificate_pools(1))
    try:
        first = acme_spec("a" * 32)
        grant(store, first)
        issued = service.record_client_order(first, rules, actor="acme").result(timeout=30)
        assert issued.state is State.VALID and issued.current is not None

        issuer.fail_with = IssuanceFailed("connection refused by 127.0.0.2:80")
        failed = service.record_client_order(acme_spec("b" * 32), rules,
                                             actor="acme").result(timeout=30)
        assert failed.state is State.VALID, "the first certificate is still served"
        assert failed.current == issued.current
        assert failed.failed_acme_order == "b" * 32 and failed.retryable
        assert failed.next_attempt_at is None, "no retry for an order that ended"
        assert not planning.decide(acme_spec("b" * 32), failed, NOW).needed
        assert CertificateStatus.from_json(failed.to_json()) == failed

        order = Order(id="b" * 32, account="c" * 32, environment="prod", service="shop",
                      certificate="acme-a-test", dns_names=("a.test",), created_at=NOW,
                      expires=NOW + dt.timedelta(days=7), status=OrderStatus.PROCESSING,
                      finalized_at=NOW)
        ended = server._settled(order, failed)
        assert ended is not None and ended.status is OrderStatus.INVALID
        assert ended.error is not None and "127.0.0.2" in ended.error["detail"]
        assert server._settled(order.replace(id="d" * 32), failed) is None, \
            "another order is not answered by this failure"

        issuer.fail_with = None
        again = service.record_client_order(acme_spec("e" * 32), rules,
                                            actor="acme").result(timeout=30)
        assert again.state is State.VALID and again.current is not None
        assert again.current.acme_order == "e" * 32
        assert again.failed_acme_order is None
    finally:
        service.shutdown()


def test_the_ari_window_falls_in_the_certificates_maintenance_window() -> None:
    """ARI clients rotate when certlocker's ACME server says; with a maintenance window
    that is inside it, as certlocker's own rotations are, unless waiting would leave too
    little validity (the same override)."""
    from certlocker import maintenance

    window = maintenance.parse("maintenance_window", {"start": "02:00", "end": "04:00"})
    day = dt.timedelta(days=1)
    at = dt.datetime(2026, 12, 10, 12, 0, tzinfo=dt.timezone.utc)  # outside: noon
    not_after = at + 30 * day
    span = dt.timedelta(hours=36)
    assert server._within(None, at, at + span, not_after, at) == (at, at + span)

    opens = dt.datetime(2026, 12, 11, 2, 0, tzinfo=dt.timezone.utc)
    assert server._within(window, at, at + span, not_after, at) == \
        (opens, opens + dt.timedelta(hours=2)), "held: the next opening, cut at its end"

    inside = dt.datetime(2026, 12, 10, 3, 0, tzinfo=dt.timezone.utc)
    assert server._within(window, inside, inside + span, not_after, inside) == \
        (inside, inside + dt.timedelta(hours=1)), "inside one: cut at its end"

    near = at + dt.timedelta(hours=20)  # 20 h of slack, the opening 14 h off: override
    assert server._within(window, at, at + span, near, at) == (at, at + span)


def test_a_processing_order_waiting_for_a_rate_limit_slot_says_when_to_poll() -> None:
    """An issuance an issuer's rate limits scheduled for later is not failed: its order
    stays processing, and the client is told to come back when the slot comes, not
    every 2 seconds."""
    later = NOW + dt.timedelta(seconds=90.2)
    waiting = CertificateStatus(state=State.PENDING, next_attempt_at=later,
                                waiting="a slot in issuer pebble's rate limits")
    assert server._retry_after(waiting, NOW) == 91
    assert server._retry_after(waiting, later) == server.PROCESSING_RETRY_AFTER
    failed_retry = waiting.replace(waiting=None, last_error="boom")
    assert server._retry_after(failed_retry, NOW) == server.PROCESSING_RETRY_AFTER
    assert server._retry_after(None, NOW) == server.PROCESSING_RETRY_AFTER
