"""Scoped access, proven against the real bootstrapped stack: the policies/ files as
`certlocker bootstrap` renders them, the JWT auth mounts it configures, and credentials
minted through the API.

- every service token opens its own certs/<env>/<service>/* read-only and nothing else;
- every forged, stale, foreign or revoked JWT is refused BY VAULT at login;
- operators and auditors get exactly what their policies grant, as problem documents;
- certlocker itself cannot read back a private key it stored;
- the signing key rotates with one command, the service refreshes its own credential,
  and `certlocker bootstrap` is idempotent.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import hvac
import hvac.exceptions
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.secrets import jwts_in
from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration

KV = "certlocker"
ROLE = "service"
ENVIRONMENTS = ("dev", "prod")
ISOLATED = tuple(f"iso-{i:02d}" for i in range(12))  # x 2 environments = 24 identities
CERT = "tls"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
CERTLOCKER = shutil.which("certlocker") or str(
    Path(__file__).resolve().parents[2] / ".venv" / "bin" / "certlocker")


# --- talking to the stack ---------------------------------------------------------------


class Api:
    """certlocker's HTTP API and Vault's, as raw HTTP: status codes are the assertions."""

    def __init__(self, stack: CertlockerStack) -> None:
        self.stack = stack
        self._local = threading.local()

    @property
    def http(self) -> requests.Session:
        """One session per thread: fixtures call the API from a thread pool."""
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def call(self, method: str, path: str, token: str | None = None,
             **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["X-Vault-Token"] = token
        return self.http.request(method, self.stack.api_url + path, headers=headers,
                                 timeout=120, **kwargs)

    def declare(self, token: str, env: str, service: str, name: str = CERT,
                wait: float = 60) -> requests.Response:
        return self.call("POST", f"/v1/certificates?wait={wait:g}", token, json={
            "environment": env, "service": service, "name": name,
            "dns_names": [f"{name}.{service}.{env}.test"]})

    def mint(self, env: str, service: str, token: str | None = None) -> dict[str, Any]:
        resp = self.call("POST", f"/v1/services/{env}/{service}/credentials",
                         token or self.stack.operator_token)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def revoke(self, env: str, service: str) -> int:
        resp = self.call("DELETE", f"/v1/services/{env}/{service}/credentials",
                         self.stack.operator_token)
        assert resp.status_code == 200, resp.text
        return int(resp.json()["generation"])

    def vault(self, method: str, path: str, token: str,
              session: requests.Session | None = None, **kwargs: Any) -> requests.Response:
        return (session or self.http).request(
            method, f"{self.stack.vault_addr}/v1/{path}", headers={"X-Vault-Token": token},
            timeout=30, **kwargs)

    def login(self, jwt_token: str, env: str = "prod") -> str:
        """Log in at auth/certlocker-<env>/login with hvac; return the Vault token."""
        client = hvac.Client(url=self.stack.vault_addr, timeout=10)
        answer = client.auth.jwt.jwt_login(ROLE, jwt_token, use_token=False,
                                           path=f"certlocker-{env}")
        return answer["auth"]["client_token"]

    def refused(self, jwt_token: str, reason: str, env: str = "prod") -> None:
        """Assert Vault refuses the login, for a reason containing ``reason``."""
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)) as err:
            self.login(jwt_token, env)
        assert reason in str(err.value)

    def read_cert(self, vault_token: str, env: str, service: str,
                  name: str = CERT) -> requests.Response:
        return self.vault("GET", f"{KV}/data/certs/{env}/{service}/{name}", vault_token)

    def child_token(self, policy: str) -> str:
        resp = self.vault("POST", "auth/token/create", self.stack.root_token,
                          json={"policies": [policy], "ttl": "1h",
                                "display_name": policy})
        assert resp.status_code == 200, resp.text
        return resp.json()["auth"]["client_token"]


@pytest.fixture(scope="module")
def api(certlocker_stack: CertlockerStack) -> Api:
    return Api(certlocker_stack)


def _problem(resp: requests.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def _declared(api: Api, env: str, service: str, name: str = CERT) -> dict[str, Any]:
    resp = api.declare(api.stack.operator_token, env, service, name)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "valid", body
    return body


# --- JWT forging ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(_unb64(header)), json.loads(_unb64(payload)), signature


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    alg: str
    private_key: ec.EllipticCurvePrivateKey

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private_key, algorithm=self.alg,
                          headers={"kid": self.kid, "typ": "JWT", **header})

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _active_key(api: Api) -> ActiveKey:
    """certlocker's active signing key, read from Vault with the root token: the test
    plays an attacker who knows everything except what it must not."""
    resp = api.vault("GET", f"{KV}/data/system/jwt/signing-keys", api.stack.root_token)
    assert resp.status_code == 200, resp.text
    document = json.loads(resp.json()["data"]["data"]["json"])
    entry = next(k for k in document["keys"] if k["retired_at"] is None)
    key = serialization.load_pem_private_key(entry["private_key_pem"].encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return ActiveKey(entry["kid"], entry["alg"], key)


def _fresh_claims(claims: dict[str, Any], **changes: Any) -> dict[str, Any]:
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    return {**claims, "iat": now, "nbf": now, "exp": now + 600,
            "jti": secrets.token_urlsafe(18), **changes}


# --- the isolation matrix -----------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    env: str
    service: str
    vault_token: str
    serial: str


@pytest.fixture(scope="module")
def identities(api: Api) -> list[Identity]:
    """24 services (12 names x dev, prod), each with one issued certificate, one minted
    credential and one Vault login."""
    pairs = [(env, svc) for env in ENVIRONMENTS for svc in ISOLATED]
    with cf.ThreadPoolExecutor(8) as pool:
        declared = list(pool.map(lambda p: _declared(api, *p), pairs))

    def login(pair: tuple[str, str], cert: dict[str, Any]) -> Identity:
        env, svc = pair
        credential = api.mint(env, svc)
        assert credential["vault"] == {"auth_path": f"certlocker-{env}", "role": ROLE}
        return Identity(env, svc, api.login(credential["token"], env),
                        cert["current"]["serial"])

    with cf.ThreadPoolExecutor(8) as pool:
        return list(pool.map(login, pairs, declared))


def test_each_service_reads_its_own_certificate(api: Api,
                                                identities: list[Identity]) -> None:
    for me in identities:
        resp = api.read_cert(me.vault_token, me.env, me.service)
        assert resp.status_code == 200, (me, resp.text)
        bundle = resp.json()["data"]["data"]
        assert bundle["serial"] == me.serial
        assert "BEGIN PRIVATE KEY" in bundle["private_key"]
        listing = api.vault("LIST", f"{KV}/metadata/certs/{me.env}/{me.service}",
                            me.vault_token)
        assert listing.status_code == 200 and listing.json()["data"]["keys"] == [CERT]


def _leaks(api: Api, identities: list[Identity],
           attempts: Callable[[Identity], list[tuple[str, str]]]) -> list[tuple[Any, ...]]:
    """Run every identity's attempts (method, path) in parallel; return those that did
    not get a 403."""

    def run(me: Identity) -> list[tuple[Any, ...]]:
        found = []
        with requests.Session() as session:
            for method, path in attempts(me):
                body = {"json": {"data": {"certificate": "forged"}}} if method == "POST" \
                    else {}
                code = api.vault(method, path, me.vault_token, session, **body).status_code
                if code != 403:
                    found.append((me.env, me.service, method, path, code))
        return found

    with cf.ThreadPoolExecutor(8) as pool:
        return [leak for leaks in pool.map(run, identities) for leak in leaks]


def test_no_service_reaches_another_services_or_environments_certs(
        api: Api, identities: list[Identity]) -> None:
    """24 x 23 other identities x (read, list, write): every one a 403."""

    def attempts(me: Identity) -> list[tuple[str, str]]:
        out = []
        for other in identities:
            if other != me:
                where = f"certs/{other.env}/{other.service}"
                out += [("GET", f"{KV}/data/{where}/{CERT}"),
                        ("LIST", f"{KV}/metadata/{where}"),
                        ("POST", f"{KV}/data/{where}/{CERT}")]
        return out

    assert _leaks(api, identities, attempts) == []


def test_no_service_reaches_specs_status_system_audit_or_listings(
        api: Api, identities: list[Identity]) -> None:

    def attempts(me: Identity) -> list[tuple[str, str]]:
        own = f"{me.env}/{me.service}"
        return [
            ("GET", f"{KV}/data/specs/{own}/{CERT}"),
            ("LIST", f"{KV}/metadata/specs/{own}"),
            ("POST", f"{KV}/data/specs/{own}/{CERT}"),
            ("GET", f"{KV}/data/status/{own}/{CERT}"),
            ("LIST", f"{KV}/metadata/status/{me.env}"),
            ("POST", f"{KV}/data/status/{own}/{CERT}"),
            ("GET", f"{KV}/data/system/jwt/signing-keys"),
            ("LIST", f"{KV}/metadata/system"),
            ("POST", f"{KV}/data/system/credentials/{own}"),
            ("LIST", f"{KV}/metadata/audit/events"),
            ("GET", f"{KV}/data/audit/events/1"),
            ("POST", f"{KV}/data/audit/events/999999999"),
            ("LIST", f"{KV}/metadata/certs/{me.env}"),
            ("LIST", f"{KV}/metadata/certs"),
            # its own path, but write: read only
            ("POST", f"{KV}/data/certs/{own}/{CERT}"),
            ("POST", f"{KV}/data/certs/{own}/new"),
            ("DELETE", f"{KV}/metadata/certs/{own}/{CERT}"),
        ]

    assert _leaks(api, identities, attempts) == []


# --- attacks on login, refused by Vault -----------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A prod service with an issued certificate and a genuine credential."""

    service: str
    token: str
    claims: dict[str, Any]


@pytest.fixture(scope="module")
def target(api: Api) -> Target:
    _declared(api, "prod", "att-api")
    _declared(api, "prod", "att-web")
    token = api.mint("prod", "att-api")["token"]
    return Target("att-api", token, _parts(token)[1])


def test_a_genuine_and_a_faithfully_resigned_credential_log_in(api: Api,
                                                               target: Target) -> None:
    """The control for every attack below: the forging code itself is sound."""
    vault_token = api.login(target.token)
    assert api.read_cert(vault_token, "prod", "att-api").status_code == 200
    resigned = _active_key(api).sign(_fresh_claims(target.claims))
    assert api.read_cert(api.login(resigned), "prod", "att-api").status_code == 200


def test_alg_none_is_refused(api: Api, target: Target) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": _parts(target.token)[0]["kid"]}
    api.refused(f"{_segment(header)}.{_segment(_fresh_claims(target.claims))}.",
                'unexpected signature algorithm "none"')


def test_hs256_signed_with_the_public_key_is_refused(api: Api, target: Target) -> None:
    key = _active_key(api)
    signing_input = (_segment({"alg": "HS256", "typ": "JWT", "kid": key.kid}) + "."
                     + _segment(_fresh_claims(target.claims)))
    jwks = api.call("GET", "/.well-known/jwks.json").json()["keys"]
    assert key.kid in {k["kid"] for k in jwks}
    for secret in (key.public_pem(), key.public_pem().strip()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        api.refused(f"{signing_input}.{_b64(mac)}", 'unexpected signature algorithm "HS256"')


def test_unknown_kid_is_refused(api: Api, target: Target) -> None:
    stranger = ActiveKey("attacker-" + secrets.token_hex(8), "ES256",
                         ec.generate_private_key(ec.SECP256R1()))
    api.refused(stranger.sign(_fresh_claims(target.claims)), "verify id token signature")
    # a stranger's key under our kid
    forged = ActiveKey(_active_key(api).kid, "ES256", stranger.private_key)
    api.refused(forged.sign(_fresh_claims(target.claims)), "verify id token signature")


def test_expired_credential_is_refused(api: Api, target: Target) -> None:
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = _fresh_claims(target.claims, iat=now - 3600, nbf=now - 3600, exp=now - 300)
    api.refused(_active_key(api).sign(claims), "token is expired")


def test_credential_not_yet_valid_is_refused(api: Api, target: Target) -> None:
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = _fresh_claims(target.claims, nbf=now + 600, exp=now + 1200)
    api.refused(_active_key(api).sign(claims), "not yet valid")


def test_wrong_audience_is_refused(api: Api, target: Target) -> None:
    api.refused(_active_key(api).sign(_fresh_claims(target.claims, aud="another-deployment")),
                "invalid audience (aud) claim")


def test_wrong_issuer_is_refused(api: Api, target: Target) -> None:
    api.refused(_active_key(api).sign(_fresh_claims(target.claims, iss="https://evil.test")),
                "invalid issuer (iss) claim")


def test_payload_edited_to_another_service_is_refused(api: Api, target: Target) -> None:
    header, payload, signature = target.token.split(".")
    claims = json.loads(_unb64(payload))
    generation = claims["credential"].rsplit(".", 1)[1]
    claims.update(sub="att-web", credential=f"att-web.{generation}")
    api.refused(f"{header}.{_segment(claims)}.{signature}", "verify id token signature")
    api.login(target.token)  # the untouched original still works


def test_dev_credential_on_the_prod_mount_is_refused(api: Api, target: Target) -> None:
    dev_token = api.mint("dev", "att-api")["token"]
    api.refused(dev_token, 'claim "env" does not match', "prod")
    api.login(dev_token, "dev")  # and it is a good credential where it belongs


def test_revocation_stops_login_and_live_tokens_at_once(api: Api) -> None:
    _declared(api, "prod", "rev-api")
    before = api.mint("prod", "rev-api")
    live = api.login(before["token"])
    assert api.read_cert(live, "prod", "rev-api").status_code == 200
    old_generation = int(_parts(before["token"])[1]["gen"])

    assert api.revoke("prod", "rev-api") == old_generation + 1

    assert api.read_cert(live, "prod", "rev-api").status_code == 403
    assert dt.datetime.fromisoformat(before["expires_at"].replace("Z", "+00:00")) > \
        dt.datetime.now(dt.timezone.utc)
    api.refused(before["token"], "permission denied")
    after = api.mint("prod", "rev-api")
    assert _parts(after["token"])[1]["gen"] == old_generation + 1
    assert api.read_cert(api.login(after["token"]), "prod", "rev-api").status_code == 200
    # the new generation's entity does not revive the old one
    api.refused(before["token"], "permission denied")


# --- operators, auditors, certlocker itself ---------------------------------------------------


def test_team_operator_manages_its_services_only(api: Api) -> None:
    stack = api.stack
    _declared(api, "prod", "web")
    web_credential = api.mint("prod", "web")["token"]
    team = api.child_token("certlocker-operator-team-payments")
    # default deny: an administrator grants the team's service its names first
    granted = api.call("PUT", "/v1/grants/prod/payments-api", stack.operator_token,
                       json={"zones": ["payments-api.prod.test"]})
    assert granted.status_code == 200, granted.text

    ok = api.declare(team, "prod", "payments-api")
    assert ok.status_code in (201, 202), ok.text
    assert ok.json()["service"] == "payments-api"
    assert api.call("GET", "/v1/certificates/prod.payments-api.tls", team).status_code == 200
    minted = api.call("POST", "/v1/services/prod/payments-api/credentials", team)
    assert minted.status_code == 201, minted.text
    assert _parts(minted.json()["token"])[1]["sub"] == "payments-api"

    _problem(api.declare(team, "prod", "web", name="other"), 403)
    _problem(api.call("GET", "/v1/certificates/prod.web.tls", team), 403)
    _problem(api.call("POST", "/v1/services/prod/web/credentials", team), 403)
    _problem(api.call("DELETE", "/v1/services/prod/web/credentials", team), 403)
    _problem(api.call("POST", "/v1/system/signing-keys/rotate", team), 403)
    # the denied revoke changed nothing: web's credential still logs in
    api.login(web_credential)
    # nothing was declared for web by the team
    missing = api.call("GET", "/v1/certificates/prod.web.other", stack.operator_token)
    assert missing.status_code == 404


def test_auditor_reads_inventory_but_changes_nothing_and_reads_no_keys(api: Api) -> None:
    _declared(api, "prod", "audited")
    auditor = api.child_token("certlocker-auditor")
    assert api.call("GET", "/v1/certificates/prod.audited.tls", auditor).status_code == 200
    listing = api.call("GET", "/v1/certificates?environment=prod&service=audited", auditor)
    assert listing.status_code == 200 and len(listing.json()["items"]) == 1
    _problem(api.declare(auditor, "prod", "audited", name="more"), 403)
    _problem(api.call("POST", "/v1/services/prod/audited/credentials", auditor), 403)
    _problem(api.call("POST", "/v1/certificates/prod.audited.tls/renew", auditor), 403)
    # verify dials every target and writes status and audit: not read-only either
    denied = _problem(api.call("POST", "/v1/certificates/prod.audited.tls/verify", auditor),
                      403)
    assert "update" in denied["detail"]
    assert api.read_cert(auditor, "prod", "audited").status_code == 403
    assert api.vault("LIST", f"{KV}/metadata/certs/prod", auditor).status_code == 403
    assert api.vault("GET", f"{KV}/data/system/jwt/signing-keys",
                     auditor).status_code == 403


def test_certlocker_issues_but_cannot_read_back_a_private_key(api: Api) -> None:
    issued = _declared(api, "prod", "sealed")
    own = (api.stack.state_dir / "certlocker.token").read_text().strip()
    resp = api.read_cert(own, "prod", "sealed")
    assert resp.status_code == 403
    assert "PRIVATE KEY" not in resp.text
    # ... yet the key is there, for the service alone
    service_token = api.login(api.mint("prod", "sealed")["token"])
    bundle = api.read_cert(service_token, "prod", "sealed").json()["data"]["data"]
    assert bundle["serial"] == issued["current"]["serial"]
    assert "BEGIN PRIVATE KEY" in bundle["private_key"]


def test_certlockers_token_has_its_policy_only_not_vaults_default(api: Api) -> None:
    own = (api.stack.state_dir / "certlocker.token").read_text().strip()
    me = api.vault("GET", "auth/token/lookup-self", own)
    assert me.status_code == 200
    assert me.json()["data"]["policies"] == ["certlocker"]
    assert api.vault("POST", "auth/token/renew-self", own).status_code == 200
    # What only the default policy would grant:
    assert api.vault("POST", "cubbyhole/probe", own, json={"a": "b"}).status_code == 403
    assert api.vault("POST", "sys/tools/hash", own, json={"input": "aGk="}).status_code == 403
    operator = api.stack.operator_token  # which has the default policy: the same call
    assert api.vault("POST", "sys/tools/hash", operator, json={"input": "aGk="}).status_code == 200


def test_jwks_publishes_public_members_only(api: Api) -> None:
    resp = api.call("GET", "/.well-known/jwks.json")
    assert resp.status_code == 200
    keys = resp.json()["keys"]
    assert keys
    for jwk in keys:
        assert not PRIVATE_JWK_MEMBERS & set(jwk), jwk
        assert jwk["kty"] == "EC" and jwk["use"] == "sig" and jwk["kid"]
    assert "PRIVATE" not in resp.text


# --- service self-refresh ----------------------------------------------------------------------


def _cli(api: Api, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CERTLOCKER, *args], env={**api.stack.env, **env},
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def _refresh(api: Api, service: str, bearer: str) -> requests.Response:
    return api.call("POST", f"/v1/services/prod/{service}/credentials/refresh",
                    headers={"Authorization": f"Bearer {bearer}"})


def test_a_service_refreshes_its_own_credential(api: Api) -> None:
    current = api.mint("prod", "ref-api")["token"]
    resp = _refresh(api, "ref-api", current)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    fresh = resp.json()
    assert fresh["vault"] == {"auth_path": "certlocker-prod", "role": ROLE}
    claims = _parts(fresh["token"])[1]
    assert (claims["sub"], claims["env"]) == ("ref-api", "prod")
    assert claims["jti"] != _parts(current)[1]["jti"]
    api.login(fresh["token"])


def test_refresh_refuses_foreign_stale_and_revoked_credentials(api: Api) -> None:
    other = api.mint("prod", "ref-other")["token"]
    _problem(_refresh(api, "ref-victim", other), 401)
    _problem(api.call("POST", "/v1/services/prod/ref-victim/credentials/refresh"), 401)
    _problem(_refresh(api, "ref-victim", "not-a-jwt"), 401)

    genuine = api.mint("prod", "ref-victim")["token"]
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    expired = _active_key(api).sign(_fresh_claims(_parts(genuine)[1], iat=now - 3600,
                                                  nbf=now - 3600, exp=now - 300))
    _problem(_refresh(api, "ref-victim", expired), 401)
    dev = api.mint("dev", "ref-victim")["token"]
    _problem(_refresh(api, "ref-victim", dev), 401)
    # The credential is checked before the environment: a stranger learns nothing of
    # which environments the deployment serves, and a genuine credential is no key to
    # one it does not.
    for bearer in ("not-a-jwt", genuine):
        resp = api.call("POST", "/v1/services/staging/ref-victim/credentials/refresh",
                        headers={"Authorization": f"Bearer {bearer}"})
        assert "prod" not in _problem(resp, 401)["detail"]

    assert _refresh(api, "ref-victim", genuine).status_code == 201
    api.revoke("prod", "ref-victim")
    _problem(_refresh(api, "ref-victim", genuine), 401)


def test_cli_refresh_rewrites_the_credential_file(api: Api, tmp_path: Path) -> None:
    credential = tmp_path / "credential.jwt"
    minted = _cli(api, "credentials", "mint", "prod", "ref-cli", "--out", str(credential))
    assert minted.returncode == 0, minted.stderr
    first = credential.read_text()

    done = _cli(api, "credentials", "refresh", "prod", "ref-cli",
                "--credential-file", str(credential), VAULT_TOKEN="")
    assert done.returncode == 0, done.stderr
    second = credential.read_text().strip()
    assert second != first and second not in done.stdout + done.stderr
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["credential.jwt"]  # no temp file left
    api.login(second)

    api.revoke("prod", "ref-cli")
    refused = _cli(api, "credentials", "refresh", "prod", "ref-cli",
                   "--credential-file", str(credential), VAULT_TOKEN="")
    assert refused.returncode == 1
    assert "401" in refused.stderr
    assert credential.read_text().strip() == second  # untouched


def test_systemd_unit_calls_the_refresh_command() -> None:
    unit = (Path(__file__).resolve().parents[2] / "templates" / "systemd"
            / "certlocker-credential.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.split("=", 1)[1].split()
    # the absolute path systemd needs (a bare name does not run under it)
    assert argv[:3] == ["/usr/local/bin/certlocker", "credentials", "refresh"]
    assert "--credential-file" in argv


# --- signing-key rotation ----------------------------------------------------------------------


def test_signing_key_rotation_is_one_command(api: Api) -> None:
    _declared(api, "prod", "rot-api")
    old = api.mint("prod", "rot-api")["token"]
    old_kid = _parts(old)[0]["kid"]
    api.login(old)

    auditor = api.child_token("certlocker-auditor")
    _problem(api.call("POST", "/v1/system/signing-keys/rotate", auditor), 403)

    done = _cli(api, "--json", "credentials", "rotate-signing-key")
    assert done.returncode == 0, done.stderr
    rotated = json.loads(done.stdout)
    assert rotated["previous_kid"] == old_kid and rotated["kid"] != old_kid
    assert rotated["published"] == [rotated["kid"], old_kid]
    assert "PRIVATE" not in done.stdout

    # Every gunicorn worker signs with the new key at once (several requests, so both
    # workers answer some), and Vault fetches the JWKS again for the unknown kid.
    for _ in range(12):
        new = api.mint("prod", "rot-api")["token"]
        assert _parts(new)[0]["kid"] == rotated["kid"]
    jwks = {k["kid"] for k in api.call("GET", "/.well-known/jwks.json").json()["keys"]}
    assert jwks == {rotated["kid"], old_kid}
    assert api.read_cert(api.login(new), "prod", "rot-api").status_code == 200
    # the credential minted before the rotation logs in until it expires
    assert api.read_cert(api.login(old), "prod", "rot-api").status_code == 200


# --- bootstrap idempotency -------------------------------------------------------------------


def _vault_state(api: Api) -> str:
    """certlocker's Vault configuration as bootstrap manages it, as canonical JSON."""
    root = api.stack.root_token

    def get(path: str) -> Any:
        resp = api.vault("GET", path, root)
        assert resp.status_code == 200, (path, resp.text)
        return resp.json()["data"]

    state: dict[str, Any] = {"policies": {}, "auth": {}}
    for name in sorted(get("sys/policies/acl?list=true")["keys"]):
        if name.startswith("certlocker"):
            state["policies"][name] = get(f"sys/policies/acl/{name}")["policy"]
    mounts = get("sys/auth")
    for env in ENVIRONMENTS:
        mount = f"certlocker-{env}"
        info = mounts[mount + "/"]
        state["auth"][mount] = {
            "mount": {k: info[k] for k in ("type", "accessor", "description")},
            "config": get(f"auth/{mount}/config"),
            "role": get(f"auth/{mount}/role/{ROLE}"),
        }
    state["kv"] = {k: get("sys/mounts")[KV + "/"][k] for k in ("type", "options")}
    return json.dumps(state, sort_keys=True, indent=1)


def _bootstrap(api: Api, tmp: Path) -> list[str]:
    stack = api.stack
    argv = [CERTLOCKER, "bootstrap", "all",
            "--token-file", str(tmp / "certlocker.token"),
            "--operator-token-file", str(tmp / "operator.token")]
    result = subprocess.run(argv, env=stack.stack.admin_env(), capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture
def token_copies(api: Api, tmp_path: Path) -> Iterator[Path]:
    for name in ("certlocker.token", "operator.token"):
        shutil.copy(api.stack.state_dir / name, tmp_path / name)
        os.chmod(tmp_path / name, 0o600)
    yield tmp_path


def test_bootstrap_twice_changes_nothing(api: Api, token_copies: Path) -> None:
    # The first run may apply policies/ edits made since the stack started.
    first = _bootstrap(api, token_copies)
    before = _vault_state(api)
    second = _bootstrap(api, token_copies)
    assert len(second) >= 13  # mount, 2 auth mounts, 6 policies, 2 tokens, 2x config+role
    assert [line for line in second if not line.startswith("unchanged ")] == []
    assert {line.split(None, 1)[1] for line in second} == \
        {line.split(None, 1)[1] for line in first}
    assert _vault_state(api) == before
    for name in ("certlocker.token", "operator.token"):
        assert (token_copies / name).read_text() == \
            (api.stack.state_dir / name).read_text()


def test_bootstrap_repairs_drift(api: Api, token_copies: Path) -> None:
    _bootstrap(api, token_copies)
    before = _vault_state(api)
    root = api.stack.root_token
    role_path = f"auth/certlocker-prod/role/{ROLE}"
    role = api.vault("GET", role_path, root).json()["data"]
    managed = ("role_type", "user_claim", "bound_audiences", "token_policies",
               "token_max_ttl", "clock_skew_leeway", "expiration_leeway",
               "not_before_leeway")
    drifted = {**{k: role[k] for k in managed}, "token_ttl": 60,
               "bound_claims": {"env": "dev"}}
    assert api.vault("POST", role_path, root, json=drifted).status_code in (200, 204)
    policy = "sys/policies/acl/certlocker-service-dev"
    text = api.vault("GET", policy, root).json()["data"]["policy"]
    assert api.vault("POST", policy, root, json={
        "policy": text + '\npath "certlocker/data/certs/*" { capabilities = ["read"] }\n'}
    ).status_code in (200, 204)
    assert _vault_state(api) != before

    with_default = api.vault("POST", "auth/token/create-orphan", root, json={
        "policies": ["certlocker"], "period": "1h"}).json()["auth"]["client_token"]
    (token_copies / "certlocker.token").write_text(with_default + "\n")

    lines = _bootstrap(api, token_copies)
    assert "changed    token certlocker" in lines  # it carried Vault's default policy
    replaced = (token_copies / "certlocker.token").read_text().strip()
    assert api.vault("GET", "auth/token/lookup-self", replaced).json()["data"][
        "policies"] == ["certlocker"]
    # Renamed into place (a running certlocker follows the file), owner-only, no leftovers.
    assert (token_copies / "certlocker.token").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in token_copies.iterdir()) == [
        "certlocker.token", "operator.token"]
    assert "changed    auth/certlocker-prod/role/service" in lines
    assert "changed    policy certlocker-service-dev" in lines
    assert _vault_state(api) == before


# --- last: nothing secret reached certlocker's logs ----------------------------------------------


def test_logs_hold_no_credentials_or_private_keys(api: Api) -> None:
    logs = [p for name in ("api.log", "reconciler.log", "bootstrap.log")
            if (p := api.stack.state_dir / name).exists()]
    assert any(p.name == "api.log" for p in logs)
    for log in logs:
        text = log.read_text(errors="replace")
        assert jwts_in(text) == [], log
        assert "PRIVATE KEY" not in text, log
        assert api.stack.root_token not in text and api.stack.operator_token not in text
