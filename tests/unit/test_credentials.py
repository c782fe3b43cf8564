"""Service credentials: key ring, JWKS, mint and verify, and the classic JWT attacks."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading

import pytest

from certlocker.clock import FixedClock
from certlocker.credentials.keys import KeyRing, SigningKey
from certlocker.credentials.memory import MemorySigningKeyStore
from certlocker.credentials.tokens import TokenMinter
from certlocker.errors import Conflict, InvalidInput, Unauthenticated
from tests.support.threads import run_together

ISSUER = "https://certlocker.example.test"
AUDIENCE = "certlocker"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _parts(token: str) -> tuple[dict, dict, str]:
    header, payload, signature = token.split(".")
    return json.loads(_unb64(header)), json.loads(_unb64(payload)), signature


def _encode(header: dict, payload: dict) -> str:
    return (_b64(json.dumps(header, separators=(",", ":")).encode()) + "."
            + _b64(json.dumps(payload, separators=(",", ":")).encode()))


class Generations:
    """The current generation per (environment, service), as the revocation store keeps it."""

    def __init__(self) -> None:
        self.current: dict[tuple[str, str], int] = {}

    def __call__(self, environment: str, service: str) -> int:
        return self.current.get((environment, service), 0)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(_now())


@pytest.fixture
def store() -> MemorySigningKeyStore:
    return MemorySigningKeyStore()


@pytest.fixture
def ring(store: MemorySigningKeyStore, clock: FixedClock) -> KeyRing:
    return KeyRing.load_or_create(store, clock)


@pytest.fixture
def generations() -> Generations:
    return Generations()


def _minter(ring: KeyRing, clock: FixedClock, generations: Generations,
            **kw: object) -> TokenMinter:
    options = {"issuer": ISSUER, "audience": AUDIENCE, "current_generation": generations}
    options.update(kw)
    return TokenMinter(ring, clock, **options)  # type: ignore[arg-type]


@pytest.fixture
def minter(ring: KeyRing, clock: FixedClock, generations: Generations) -> TokenMinter:
    return _minter(ring, clock, generations)


# --- mint and verify ----------------------------------------------------------------------


def test_round_trip_carries_the_claim_set(minter: TokenMinter, ring: KeyRing,
                                          clock: FixedClock) -> None:
    minted = minter.mint("prod", "api", 3, ttl=600)
    header, payload, _ = _parts(minted.token)
    assert header["alg"] == "ES256" and header["kid"] == ring.active.kid == minted.kid
    assert payload["iss"] == ISSUER and payload["aud"] == AUDIENCE
    assert payload["sub"] == "api" and payload["env"] == "prod" and payload["gen"] == 3
    assert payload["jti"] == minted.jti and len(minted.jti) >= 22
    start = int(clock.now().timestamp())
    assert payload["iat"] == payload["nbf"] == start and payload["exp"] == start + 600
    assert minted.expires_at == clock.now() + dt.timedelta(seconds=600)

    claims = minter.verify(minted.token, expected_environment="prod")
    assert (claims.environment, claims.service, claims.generation) == ("prod", "api", 3)
    assert claims.jti == minted.jti and claims.kid == minted.kid
    assert claims.expires_at == minted.expires_at


def test_each_token_has_its_own_jti(minter: TokenMinter) -> None:
    assert minter.mint("prod", "api", 0).jti != minter.mint("prod", "api", 0).jti


def test_es384_keys_sign_and_verify(store: MemorySigningKeyStore, clock: FixedClock,
                                    generations: Generations) -> None:
    ring = KeyRing.load_or_create(store, clock, alg="ES384")
    minter = _minter(ring, clock, generations)
    token = minter.mint("prod", "api", 0).token
    assert _parts(token)[0]["alg"] == "ES384"
    assert ring.jwks()["keys"][0]["crv"] == "P-384"
    assert minter.verify(token).service == "api"


@pytest.mark.parametrize("field,args", [
    ("environment", ("Prod", "api", 0)),
    ("environment", ("../prod", "api", 0)),
    ("service", ("prod", "api/../web", 0)),
    ("service", ("prod", "", 0)),
    ("generation", ("prod", "api", -1)),
    ("generation", ("prod", "api", True)),
    ("generation", ("prod", "api", "1")),
])
def test_mint_rejects_bad_names_and_generations(minter: TokenMinter, field: str,
                                               args: tuple) -> None:
    with pytest.raises(InvalidInput) as err:
        minter.mint(*args)
    assert err.value.field == field


@pytest.mark.parametrize("ttl", [0, 59, 86401, 10**9, True, 60.5])
def test_mint_bounds_the_ttl(minter: TokenMinter, ttl: object) -> None:
    with pytest.raises(InvalidInput) as err:
        minter.mint("prod", "api", 0, ttl=ttl)  # type: ignore[arg-type]
    assert err.value.field == "ttl"


def test_a_deployment_cannot_configure_ttl_past_a_day(ring: KeyRing, clock: FixedClock,
                                                     generations: Generations) -> None:
    from certlocker.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        _minter(ring, clock, generations, default_ttl=86401)
    with pytest.raises(ConfigurationError):
        _minter(ring, clock, generations, max_ttl=10 * 86400)


# --- verify refuses ----------------------------------------------------------------------


def _refused(minter: TokenMinter, token: str, reason: str, **kw: object) -> None:
    with pytest.raises(Unauthenticated) as err:
        minter.verify(token, **kw)  # type: ignore[arg-type]
    assert reason in err.value.detail
    assert token not in str(err.value) and token.split(".")[1] not in str(err.value)


def test_expired_token_is_refused(ring: KeyRing, generations: Generations) -> None:
    past = FixedClock(_now() - dt.timedelta(hours=2))
    token = _minter(ring, past, generations).mint("prod", "api", 0, ttl=3600).token
    _refused(_minter(ring, FixedClock(_now()), generations), token, "expired")


def test_token_expired_within_the_leeway_is_still_accepted(
        ring: KeyRing, generations: Generations) -> None:
    past = FixedClock(_now() - dt.timedelta(seconds=60 + 10))
    token = _minter(ring, past, generations).mint("prod", "api", 0, ttl=60).token
    assert _minter(ring, past, generations).verify(token).service == "api"


def test_not_yet_valid_token_is_refused(ring: KeyRing, generations: Generations) -> None:
    future = FixedClock(_now() + dt.timedelta(minutes=10))
    token = _minter(ring, future, generations).mint("prod", "api", 0).token
    _refused(_minter(ring, FixedClock(_now()), generations), token, "not yet valid")


def test_wrong_audience_is_refused(ring: KeyRing, clock: FixedClock,
                                   generations: Generations) -> None:
    token = _minter(ring, clock, generations, audience="other").mint("prod", "api", 0).token
    _refused(_minter(ring, clock, generations), token, "audience")


def test_wrong_issuer_is_refused(ring: KeyRing, clock: FixedClock,
                                 generations: Generations) -> None:
    token = _minter(ring, clock, generations, issuer="https://evil.test").mint(
        "prod", "api", 0).token
    _refused(_minter(ring, clock, generations), token, "issuer")


def test_alg_none_is_refused(minter: TokenMinter) -> None:
    header, payload, _ = _parts(minter.mint("prod", "api", 0).token)
    for alg in ("none", "None", "NONE"):
        forged = _encode({**header, "alg": alg}, payload) + "."
        _refused(minter, forged, "algorithm")


def test_hs256_signed_with_the_public_key_is_refused(minter: TokenMinter,
                                                     ring: KeyRing) -> None:
    """The classic confusion attack: the public key (which is published) used as an
    HMAC secret. It must fail on the algorithm, whichever encoding of the key is used."""
    header, payload, _ = _parts(minter.mint("prod", "web", 0).token)
    pem = ring.active.public_pem().encode()
    jwk = json.dumps(ring.active.public_jwk()).encode()
    for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384)):
        for secret in (pem, jwk):
            signing_input = _encode({**header, "alg": alg}, payload)
            mac = hmac.new(secret, signing_input.encode(), digest).digest()
            _refused(minter, signing_input + "." + _b64(mac), "algorithm")


def test_unknown_kid_is_refused(minter: TokenMinter, store: MemorySigningKeyStore,
                                clock: FixedClock, generations: Generations) -> None:
    stranger = KeyRing.load_or_create(MemorySigningKeyStore(), clock)
    token = _minter(stranger, clock, generations).mint("prod", "api", 0).token
    _refused(minter, token, "unknown key")


def test_missing_kid_is_refused(minter: TokenMinter, ring: KeyRing) -> None:
    import jwt

    header, payload, _ = _parts(minter.mint("prod", "api", 0).token)
    token = jwt.encode(payload, ring.active.private_key, algorithm="ES256")
    _refused(minter, token, "key id")


def test_another_key_under_our_kid_is_refused(minter: TokenMinter, ring: KeyRing,
                                             clock: FixedClock) -> None:
    import jwt

    _, payload, _ = _parts(minter.mint("prod", "api", 0).token)
    attacker = SigningKey.generate("ES256", clock.now())
    token = jwt.encode(payload, attacker.private_key, algorithm="ES256",
                       headers={"kid": ring.active.kid})
    _refused(minter, token, "signature")


def test_edited_payload_is_refused(minter: TokenMinter) -> None:
    token = minter.mint("prod", "api", 0).token
    header, payload, signature = _parts(token)
    for edit in ({"sub": "web"}, {"env": "dev"}, {"gen": 99}, {"exp": payload["exp"] + 1}):
        forged = _encode(header, {**payload, **edit}) + "." + signature
        _refused(minter, forged, "signature")


def test_missing_claims_are_refused(minter: TokenMinter, ring: KeyRing) -> None:
    import jwt

    header, payload, _ = _parts(minter.mint("prod", "api", 0).token)
    for claim in ("iss", "sub", "aud", "iat", "nbf", "exp", "jti"):
        reduced = {k: v for k, v in payload.items() if k != claim}
        token = jwt.encode(reduced, ring.active.private_key, algorithm="ES256",
                           headers={"kid": header["kid"]})
        _refused(minter, token, "credential")
    for claim, reason in (("env", "environment"), ("gen", "generation")):
        reduced = {k: v for k, v in payload.items() if k != claim}
        token = jwt.encode(reduced, ring.active.private_key, algorithm="ES256",
                           headers={"kid": header["kid"]})
        _refused(minter, token, reason)


def test_overlong_lifetime_signed_by_our_key_is_refused(minter: TokenMinter,
                                                        ring: KeyRing) -> None:
    import jwt

    header, payload, _ = _parts(minter.mint("prod", "api", 0).token)
    payload["exp"] = payload["iat"] + 86400 * 365
    token = jwt.encode(payload, ring.active.private_key, algorithm="ES256",
                       headers={"kid": header["kid"]})
    _refused(minter, token, "lifetime")


def test_other_environment_is_refused(minter: TokenMinter) -> None:
    token = minter.mint("dev", "api", 0).token
    assert minter.verify(token, expected_environment="dev").environment == "dev"
    _refused(minter, token, "another environment", expected_environment="prod")


def test_older_generation_is_revoked(minter: TokenMinter, generations: Generations) -> None:
    old = minter.mint("prod", "api", 1).token
    generations.current[("prod", "api")] = 2
    _refused(minter, old, "revoked")
    assert minter.verify(minter.mint("prod", "api", 2).token).generation == 2
    assert minter.verify(minter.mint("prod", "web", 0).token).generation == 0


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "..", "x" * 10000, None, b"a.b.c"])
def test_garbage_is_refused(minter: TokenMinter, garbage: object) -> None:
    with pytest.raises(Unauthenticated):
        minter.verify(garbage)  # type: ignore[arg-type]


# --- key ring ------------------------------------------------------------------------


def test_jwks_holds_public_members_only(ring: KeyRing) -> None:
    jwks = ring.jwks()
    assert len(jwks["keys"]) == 1
    jwk = jwks["keys"][0]
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert "d" not in jwk and '"d"' not in json.dumps(jwks)
    private_value = ring.active.private_key.private_numbers().private_value
    assert _b64(private_value.to_bytes(32, "big")) not in json.dumps(jwks)
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("EC", "P-256", "sig", "ES256")
    assert len(_unb64(jwk["x"])) == len(_unb64(jwk["y"])) == 32


def test_jwks_key_verifies_our_tokens(ring: KeyRing, minter: TokenMinter) -> None:
    import jwt

    token = minter.mint("prod", "api", 0).token
    published = jwt.PyJWKSet.from_dict(ring.jwks())[ring.active.kid]
    payload = jwt.decode(token, key=published, algorithms=["ES256"], audience=AUDIENCE,
                         issuer=ISSUER, options={"require": ["exp"]})
    assert payload["sub"] == "api"


def test_kid_is_the_rfc7638_thumbprint(ring: KeyRing) -> None:
    jwk = ring.jwks()["keys"][0]
    canonical = json.dumps({m: jwk[m] for m in ("crv", "kty", "x", "y")},
                           separators=(",", ":"), sort_keys=True)
    assert jwk["kid"] == _b64(hashlib.sha256(canonical.encode()).digest())


def test_public_keys_pem_are_public(ring: KeyRing) -> None:
    pems = ring.public_keys_pem()
    assert len(pems) == 1 and pems[0].startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in "".join(pems)


def test_repr_hides_private_material(ring: KeyRing, store: MemorySigningKeyStore,
                                     minter: TokenMinter) -> None:
    key = ring.active
    document, _ = store.load()
    assert document is not None
    secret_pem = document["keys"][0]["private_key_pem"]
    secret_body = "".join(secret_pem.splitlines()[1:-1])
    d_value = _b64(key.private_key.private_numbers().private_value.to_bytes(32, "big"))
    minted = minter.mint("prod", "api", 0)
    for text in (repr(key), str(key), repr(ring), repr(store), repr(minted), str(minted)):
        assert key.kid in text or "version" in text or minted.jti in text
        assert secret_body[:40] not in text and "PRIVATE" not in text
        assert d_value not in text and str(key.private_key.private_numbers().private_value) \
            not in text
        assert minted.token not in text


def test_load_or_create_reuses_the_stored_key(store: MemorySigningKeyStore,
                                              clock: FixedClock, ring: KeyRing) -> None:
    again = KeyRing.load_or_create(store, clock)
    assert again.active.kid == ring.active.kid
    assert store.saves == 1


def test_concurrent_load_or_create_yields_one_key(clock: FixedClock) -> None:
    """Every thread sees an empty store before any saves, so all race on CAS 0."""
    threads_n = 6
    barrier = threading.Barrier(threads_n)

    class RacingStore(MemorySigningKeyStore):
        def load(self):  # type: ignore[no-untyped-def]
            document, version = super().load()
            if document is None:
                barrier.wait(timeout=10)
            return document, version

    store = RacingStore()
    rings: list[KeyRing] = []
    errors = run_together(threads_n, lambda _: rings.append(KeyRing.load_or_create(store, clock)),
                          barrier=False)
    assert not errors
    assert store.saves == 1 and store.conflicts == threads_n - 1
    document, version = store.load()
    assert version == 1 and document is not None and len(document["keys"]) == 1
    assert {r.active.kid for r in rings} == {document["keys"][0]["kid"]}


def test_memory_store_enforces_cas() -> None:
    store = MemorySigningKeyStore()
    assert store.save({"a": 1}, cas=0) == 1
    with pytest.raises(Conflict):
        store.save({"a": 2}, cas=0)
    assert store.save({"a": 2}, cas=1) == 2
    document, _ = store.load()
    assert document is not None
    document["a"] = 3
    assert store.load() == ({"a": 2}, 2)


def test_rotation_keeps_the_old_key_until_its_tokens_expire(
        store: MemorySigningKeyStore, generations: Generations) -> None:
    clock = FixedClock(_now())
    ring = KeyRing.load_or_create(store, clock, max_token_ttl=3600, grace=300)
    minter = _minter(ring, clock, generations, default_ttl=3600, max_ttl=3600)
    old = ring.active
    old_token = minter.mint("prod", "api", 0).token

    new = ring.rotate()
    assert new.kid != old.kid and ring.active.kid == new.kid
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new.kid, old.kid]
    assert len(ring.public_keys_pem()) == 2
    assert minter.verify(old_token).kid == old.kid
    assert minter.mint("prod", "api", 0).kid == new.kid

    clock.advance(dt.timedelta(seconds=3600 + 300 - 1))
    assert old.kid in {k["kid"] for k in ring.jwks()["keys"]}
    clock.advance(dt.timedelta(seconds=1))
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new.kid]
    assert ring.key(old.kid) is None

    document, _ = store.load()
    assert document is not None and len(document["keys"]) == 2  # pruned on next write
    newest = ring.rotate()
    document, _ = store.load()
    assert document is not None
    assert [k["kid"] for k in document["keys"]] == [newest.kid, new.kid]


def test_other_workers_converge_after_a_rotation(store: MemorySigningKeyStore,
                                                 generations: Generations) -> None:
    clock = FixedClock(_now())
    worker_a = KeyRing.load_or_create(store, clock, refresh_seconds=30,
                                      unknown_kid_refresh_seconds=5)
    worker_b = KeyRing.load_or_create(store, clock, refresh_seconds=30,
                                      unknown_kid_refresh_seconds=5)
    new = worker_a.rotate()
    token = _minter(worker_a, clock, generations).mint("prod", "api", 0).token
    verifier = _minter(worker_b, clock, generations)

    # Within the rate limit an unknown kid does not cost a store read ...
    _refused(verifier, token, "unknown key")
    # ... after it, an unknown kid triggers one.
    clock.advance(dt.timedelta(seconds=5))
    assert verifier.verify(token).kid == new.kid
    # The periodic refresh moves the active key without any unknown kid.
    assert worker_b.active.kid == new.kid
    newest = worker_a.rotate()
    assert worker_b.active.kid == new.kid
    clock.advance(dt.timedelta(seconds=30))
    assert worker_b.active.kid == newest.kid


def test_concurrent_rotations_make_one_new_key(store: MemorySigningKeyStore,
                                               clock: FixedClock) -> None:
    a = KeyRing.load_or_create(store, clock)
    b = KeyRing.load_or_create(store, clock)
    first = a.active.kid

    class Interleaved:
        """B's store: before B saves, A rotates (B loses the CAS race)."""

        def load(self):  # type: ignore[no-untyped-def]
            return store.load()

        def save(self, document, cas):  # type: ignore[no-untyped-def]
            if not rotated:
                rotated.append(a.rotate())
            return store.save(document, cas)

    rotated: list[SigningKey] = []
    b._store = Interleaved()  # type: ignore[assignment]
    result = b.rotate()
    document, _ = store.load()
    assert document is not None
    assert result.kid == rotated[0].kid
    assert [k["kid"] for k in document["keys"]][1:] == [first]
    assert len(document["keys"]) == 2
