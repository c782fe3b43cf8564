"""The bad-input catalogue, against the real stack (gunicorn + OpenBao).

Every item is a 4xx RFC 9457 problem (``application/problem+json`` with ``type``,
``title``, ``status``, ``detail``) that names the offending field, and changes nothing:
what lies under ``specs/`` and ``status/`` in Vault, read with the root token, is the same
before and after. Then a seeded fuzz of a few hundred random bodies and queries: no
input produces a 5xx.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any, Iterator

import hvac
import pytest
import requests

from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration

MOUNT = "certlocker"
PROBLEM_KEYS = {"type", "title", "status", "detail"}
_counter = itertools.count()


@pytest.fixture(scope="module")
def http(certlocker_stack: CertlockerStack) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["X-Vault-Token"] = certlocker_stack.operator_token
        yield session


@pytest.fixture(scope="module")
def root(certlocker_stack: CertlockerStack) -> hvac.Client:
    return certlocker_stack.client(token=certlocker_stack.root_token)


def stored_paths(root: hvac.Client, directory: str = "") -> set[str]:
    """Every key under specs/ and status/ (recursively), read with the root token."""
    found: set[str] = set()
    for top in ([directory] if directory else ["specs/", "status/"]):
        try:
            keys = root.secrets.kv.v2.list_secrets(path=top, mount_point=MOUNT)["data"]["keys"]
        except hvac.exceptions.InvalidPath:
            continue
        for key in keys:
            if key.endswith("/"):
                found |= stored_paths(root, top + key)
            else:
                found.add(top + key)
    return found


def spec_exists(root: hvac.Client, env: str, service: str, name: str) -> bool:
    try:
        root.secrets.kv.v2.read_secret_metadata(f"specs/{env}/{service}/{name}",
                                                mount_point=MOUNT)
    except hvac.exceptions.InvalidPath:
        return False
    return True


def fresh_name() -> str:
    return f"bad{next(_counter)}-{random.randrange(10**6)}"


def body(**changes: Any) -> dict[str, Any]:
    name = fresh_name()
    base = {"environment": "dev", "service": "badinput", "name": name,
            "dns_names": [f"{name}.example.test"]}
    base.update(changes)
    return base


def assert_problem(resp: requests.Response, status: int, names: str | None = None) -> dict:
    """A problem document with ``status`` whose ``field`` (or detail) names ``names``."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"].split(";")[0] == "application/problem+json"
    doc = resp.json()
    assert PROBLEM_KEYS <= set(doc), doc
    assert doc["status"] == status
    assert isinstance(doc["type"], str) and isinstance(doc["detail"], str)
    assert "Traceback" not in resp.text
    if status == 401:  # RFC 9110 section 15.5.2: a 401 names a way to authenticate
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="certlocker"'
    if names is not None:
        assert doc.get("field") == names or names in doc["detail"], doc
    return doc


@pytest.fixture
def unchanged(root: hvac.Client) -> Iterator[None]:
    before = stored_paths(root)
    yield
    after = stored_paths(root)
    # An issuance declared by an earlier test may write its first status meanwhile.
    caused = {p for p in after - before
              if not (p.startswith("status/") and "specs/" + p[len("status/"):] in before)}
    assert not caused and before <= after, "a rejected request changed Vault"


def post(http: requests.Session, api: str, payload: Any) -> requests.Response:
    return http.post(api + "/v1/certificates", json=payload, timeout=30)


# -- DNS names -----------------------------------------------------------------------

BAD_DNS = [
    pytest.param("a" * 64 + ".example.test", id="label-over-63-octets"),
    pytest.param(".".join(["a" * 50] * 5) + ".test", id="name-over-253-octets"),
    pytest.param("foo bar.example.test", id="space"),
    pytest.param(" foo.example.test", id="leading-space"),
    pytest.param("foo_bar.example.test", id="underscore"),
    pytest.param("foo.*.example.test", id="wildcard-not-leftmost"),
    pytest.param("*.*", id="star-dot-star"),
    pytest.param("*.*.example.test", id="two-wildcards"),
    pytest.param("f*o.example.test", id="partial-wildcard"),
    pytest.param("192.0.2.1", id="ipv4"),
    pytest.param("2001:db8::1", id="ipv6"),
    pytest.param("foo..example.test", id="empty-label"),
    pytest.param("-foo.example.test", id="leading-hyphen"),
    pytest.param("foo\x00.example.test", id="nul"),
    pytest.param("", id="empty"),
    pytest.param(42, id="not-a-string"),
]


@pytest.mark.parametrize("dns", BAD_DNS)
def test_bad_dns_names_are_refused_and_store_nothing(
        certlocker_stack: CertlockerStack, http: requests.Session, root: hvac.Client,
        unchanged: None, dns: Any) -> None:
    payload = body()
    payload["dns_names"] = [f"{payload['name']}.example.test", dns]
    assert_problem(post(http, certlocker_stack.api_url, payload), 400, "dns_names/1")
    assert not spec_exists(root, "dev", "badinput", payload["name"])


@pytest.mark.parametrize("dns_names", [[], "www.example.test", None, [None],
                                       [f"n{i}.example.test" for i in range(101)]],
                         ids=["empty-list", "string", "null", "null-item", "too-many"])
def test_bad_dns_name_lists(certlocker_stack: CertlockerStack, http: requests.Session,
                            root: hvac.Client, unchanged: None, dns_names: Any) -> None:
    payload = body(dns_names=dns_names)
    doc = assert_problem(post(http, certlocker_stack.api_url, payload), 400)
    assert doc.get("field", "").startswith("dns_names"), doc
    assert not spec_exists(root, "dev", "badinput", payload["name"])


def test_idn_is_accepted_and_stored_as_a_labels(
        certlocker_stack: CertlockerStack, http: requests.Session, root: hvac.Client) -> None:
    payload = body(dns_names=["bücher.example.test", "BÜCHER.example.test"])
    resp = post(http, certlocker_stack.api_url, payload)
    assert resp.status_code in (201, 202), resp.text
    assert resp.json()["dns_names"] == ["xn--bcher-kva.example.test"]
    spec = root.secrets.kv.v2.read_secret_version(
        f"specs/dev/badinput/{payload['name']}", mount_point=MOUNT,
        raise_on_deleted_version=True)["data"]["data"]
    assert spec["dns_names"] == ["xn--bcher-kva.example.test"]


# -- names that become Vault paths -----------------------------------------------------

PATH_TRICKS = [
    pytest.param("..", id="dotdot"),
    pytest.param("../prod", id="climb"),
    pytest.param("a/b", id="slash"),
    pytest.param("%2f", id="pct-2f"),
    pytest.param("a%2Fb", id="pct-2F-inner"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("x" * 5000, id="very-long"),
    pytest.param("a.b", id="dot"),
    pytest.param("_credentials", id="reserved-underscore"),
    pytest.param("Prod", id="uppercase"),
    pytest.param("", id="empty"),
    pytest.param(["dev"], id="list"),
]


@pytest.mark.parametrize("field", ["environment", "service", "name"])
@pytest.mark.parametrize("value", PATH_TRICKS)
def test_path_tricks_in_names_are_refused(
        certlocker_stack: CertlockerStack, http: requests.Session, unchanged: None,
        field: str, value: Any) -> None:
    assert_problem(post(http, certlocker_stack.api_url, body(**{field: value})), 400, field)


def test_environment_outside_the_deployment_is_refused(
        certlocker_stack: CertlockerStack, http: requests.Session, unchanged: None) -> None:
    assert_problem(post(http, certlocker_stack.api_url, body(environment="staging")), 400,
                   "environment")


@pytest.mark.parametrize("field, value", [
    ("issuer", "no-such-ca"), ("issuer", 7), ("key_type", "dsa-1024"), ("key_type", ["x"]),
    ("renew_before", "x" * 100), ("owner", {"a": 1}), ("contact", "a\nb"),
    ("targets", "host:443"), ("targets", [{"address": "no-port"}]),
    ("targets", [{"address": "host:99999"}]), ("targets", [{"address": "a b:443"}]),
    ("targets", [{"address": "host:443", "ips": ["not-an-ip"]}]),
])
def test_unknown_or_malformed_values_are_named(
        certlocker_stack: CertlockerStack, http: requests.Session, unchanged: None,
        field: str, value: Any) -> None:
    doc = assert_problem(post(http, certlocker_stack.api_url, body(**{field: value})), 400)
    assert doc.get("field", "").startswith(field), doc


def test_unknown_fields_are_refused(certlocker_stack: CertlockerStack,
                                    http: requests.Session, unchanged: None) -> None:
    assert_problem(post(http, certlocker_stack.api_url, body(colour="blue")), 400, "colour")


# -- the body itself -------------------------------------------------------------------

def test_malformed_json(certlocker_stack: CertlockerStack, http: requests.Session,
                        unchanged: None) -> None:
    resp = http.post(certlocker_stack.api_url + "/v1/certificates",
                     data=b'{"environment": "dev", ', timeout=30,
                     headers={"Content-Type": "application/json"})
    assert_problem(resp, 400, "JSON")


def test_deeply_nested_json(certlocker_stack: CertlockerStack, http: requests.Session,
                            unchanged: None) -> None:
    resp = http.post(certlocker_stack.api_url + "/v1/certificates",
                     data=b"[" * 20000 + b"]" * 20000, timeout=30,
                     headers={"Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500
    assert_problem(resp, resp.status_code)


def test_oversized_json(certlocker_stack: CertlockerStack, http: requests.Session,
                        unchanged: None) -> None:
    payload = body(owner="x" * (65 * 1024))
    assert_problem(post(http, certlocker_stack.api_url, payload), 413, "bytes")


def test_oversized_body_without_content_length(
        certlocker_stack: CertlockerStack, http: requests.Session, unchanged: None) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"owner": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    resp = http.post(certlocker_stack.api_url + "/v1/certificates", data=chunks(),
                     timeout=30, headers={"Content-Type": "application/json"})
    assert_problem(resp, 413)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_wrong_content_type(certlocker_stack: CertlockerStack, http: requests.Session,
                            unchanged: None, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    resp = http.post(certlocker_stack.api_url + "/v1/certificates",
                     data=json.dumps(body()).encode(), headers=headers, timeout=30)
    if content_type is None:  # requests sends no Content-Type for raw bytes
        assert "Content-Type" not in resp.request.headers
    assert_problem(resp, 415, "application/json")


@pytest.mark.parametrize("payload", [[body()], "a string", 42, None, True],
                         ids=["array", "string", "number", "null", "bool"])
def test_body_that_is_not_an_object(certlocker_stack: CertlockerStack,
                                    http: requests.Session, unchanged: None,
                                    payload: Any) -> None:
    resp = http.post(certlocker_stack.api_url + "/v1/certificates",
                     data=json.dumps(payload).encode(), timeout=30,
                     headers={"Content-Type": "application/json"})
    assert_problem(resp, 400, "object")


def test_duplicate_declaration_is_a_conflict_and_keeps_the_first(
        certlocker_stack: CertlockerStack, http: requests.Session, root: hvac.Client) -> None:
    payload = body()
    first = post(http, certlocker_stack.api_url, payload)
    assert first.status_code in (201, 202), first.text
    path = f"specs/dev/badinput/{payload['name']}"
    version = root.secrets.kv.v2.read_secret_metadata(path, mount_point=MOUNT)["data"][
        "current_version"]
    again = dict(payload, dns_names=["other.example.test"])
    doc = assert_problem(post(http, certlocker_stack.api_url, again), 409)
    assert payload["name"] in doc["detail"]
    meta = root.secrets.kv.v2.read_secret_metadata(path, mount_point=MOUNT)["data"]
    assert meta["current_version"] == version
    spec = root.secrets.kv.v2.read_secret_version(path, mount_point=MOUNT,
                                                  raise_on_deleted_version=True)
    assert spec["data"]["data"]["dns_names"] == payload["dns_names"]


@pytest.mark.parametrize("wait", ["-1", "1e9", "abc", "nan", "inf"])
def test_bad_wait_parameter(certlocker_stack: CertlockerStack, http: requests.Session,
                            unchanged: None, wait: str) -> None:
    resp = http.post(certlocker_stack.api_url + "/v1/certificates", params={"wait": wait},
                     json=body(), timeout=30)
    assert_problem(resp, 400, "wait")


# -- routes and credentials --------------------------------------------------------------

@pytest.mark.parametrize("cert_id", [
    "garbage", "dev.badinput", "a.b.c.d", "dev.badinput.does-not-exist", "..%2f..%2fsys",
    "dev.badinput.%00", "dev..x", "x" * 3000, "DEV.API.WWW", "dev.badinput._credentials"])
def test_unknown_or_garbage_certificate_id_is_404(
        certlocker_stack: CertlockerStack, http: requests.Session, cert_id: str) -> None:
    resp = http.get(f"{certlocker_stack.api_url}/v1/certificates/{cert_id}", timeout=30)
    assert_problem(resp, 404)


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/v2/certificates", "/v1/",
                                  "/v1/certificates/dev.a.b/nope"])
def test_unknown_route_is_404_problem(certlocker_stack: CertlockerStack,
                                      http: requests.Session, path: str) -> None:
    assert_problem(http.get(certlocker_stack.api_url + path, timeout=30), 404)


@pytest.mark.parametrize("method, path, allowed", [
    ("PUT", "/v1/certificates", {"GET", "POST"}),
    ("TRACE", "/healthz", {"GET"}),
    # fixed routes beside a variable one: the variable one used to answer 400 or 404
    ("PATCH", "/v1/certificates/cleanup", {"GET"}),
    ("DELETE", "/v1/certificates/cleanup", {"GET"}),
    ("GET", "/v1/discovery/findings", {"POST"}),
    ("GET", "/v1/discovery/scans", {"POST"}),
])
def test_wrong_method_is_405_problem_naming_the_allowed_ones(
        certlocker_stack: CertlockerStack, http: requests.Session, method: str, path: str,
        allowed: set[str]) -> None:
    resp = http.request(method, certlocker_stack.api_url + path, timeout=30)
    assert_problem(resp, 405)
    # RFC 9110 section 15.5.6: a 405 must list what the resource supports
    assert set(resp.headers["Allow"].split(", ")) - {"HEAD", "OPTIONS"} == allowed


@pytest.mark.parametrize("headers", [
    {}, {"X-Vault-Token": ""}, {"Authorization": "Bearer "}, {"Authorization": "Basic eA=="}],
    ids=["none", "empty", "empty-bearer", "basic"])
def test_missing_token_is_401(certlocker_stack: CertlockerStack, root: hvac.Client,
                              headers: dict[str, str]) -> None:
    before = stored_paths(root)
    api = certlocker_stack.api_url
    assert_problem(requests.get(api + "/v1/certificates", headers=headers, timeout=30), 401)
    assert_problem(requests.post(api + "/v1/certificates", json=body(), headers=headers,
                                 timeout=30), 401)
    assert stored_paths(root) == before


@pytest.mark.parametrize("token", ["hvs.not-a-real-token", "s." + "A" * 24, "x" * 5000,
                                   "tok\u00e9n"], ids=["hvs", "legacy", "huge", "non-ascii"])
def test_invalid_token_is_401(certlocker_stack: CertlockerStack, root: hvac.Client,
                              token: str) -> None:
    before = stored_paths(root)
    api = certlocker_stack.api_url
    headers = {"X-Vault-Token": token.encode("utf-8").decode("latin-1")}
    assert_problem(requests.get(api + "/v1/certificates", headers=headers, timeout=30), 401)
    assert_problem(requests.post(api + "/v1/certificates", json=body(), headers=headers,
                                 timeout=30), 401)
    assert stored_paths(root) == before


# -- fuzz ------------------------------------------------------------------------------

FIELDS = ["environment", "service", "name", "dns_names", "issuer", "key_type",
          "renew_before", "targets", "owner", "contact"]
ATOMS: list[Any] = ["", "dev", "prod", "..", "/", "%2f", "\x00", "*", "*.*", "a" * 300,
                    "ü", "\ud800", "192.0.2.1", "::1", "host:443", "ec-p256", "pebble",
                    -1, 0, 2**64, 1.5, float("1e308"), True, False, None]


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.45:
        return rng.choice(ATOMS) if rng.random() < 0.6 else "".join(
            chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 40)))
    if roll < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(FIELDS + ["address", "ips", "sni", "x"]): _value(rng, depth + 1)
            for _ in range(rng.randrange(0, 4))}


def _random_body(rng: random.Random) -> tuple[bytes, str]:
    kind = rng.random()
    if kind < 0.7:
        doc = {f: _value(rng) for f in rng.sample(FIELDS, rng.randrange(0, len(FIELDS)))}
        if rng.random() < 0.3:
            doc[rng.choice(["zzz", "environment "])] = _value(rng)
        return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode(
            "utf-8", "surrogatepass"), "application/json"
    if kind < 0.85:
        return json.dumps(_value(rng)).encode(), "application/json"
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    return raw, rng.choice(["application/json", "application/json; charset=latin-1",
                            "text/plain", "application/octet-stream"])


def test_fuzzed_bodies_never_produce_a_5xx(certlocker_stack: CertlockerStack,
                                           http: requests.Session) -> None:
    rng = random.Random(20240917)
    failures = []
    for i in range(300):
        data, content_type = _random_body(rng)
        resp = http.post(certlocker_stack.api_url + "/v1/certificates", data=data,
                         headers={"Content-Type": content_type}, timeout=60)
        if resp.status_code >= 500:
            failures.append((i, resp.status_code, data[:200], resp.text[:200]))
        elif resp.status_code >= 400:
            assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert not failures, failures


def test_fuzzed_queries_and_ids_never_produce_a_5xx(certlocker_stack: CertlockerStack,
                                                    http: requests.Session) -> None:
    rng = random.Random(4242)
    params = ["environment", "service", "status", "issuer", "expiring_within", "limit",
              "cursor", "offset", "wait", "x"]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-._~%/\\*?#&=+ \x7fü"
    failures = []
    for i in range(200):
        query = {rng.choice(params): "".join(rng.choice(alphabet)
                                             for _ in range(rng.randrange(0, 30)))
                 for _ in range(rng.randrange(0, 4))}
        cert_id = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        for resp in (http.get(certlocker_stack.api_url + "/v1/certificates", params=query,
                              timeout=60),
                     http.get(certlocker_stack.api_url + "/v1/certificates/"
                              + requests.utils.quote(cert_id, safe=""), timeout=60)):
            if resp.status_code >= 500:
                failures.append((i, resp.request.url, resp.status_code, resp.text[:200]))
    assert not failures, failures


# -- issue #14, "Smaller" ----------------------------------------------------------------

FORGED_JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"  # the shape, not valid


@pytest.mark.parametrize("method, path, payload", [
    ("POST", "/v1/certificates", {"environment": "nope", "service": "a", "name": "b"}),
    ("POST", "/v1/certificates", "not an object"),
    ("POST", "/v1/certificates/dev.badinput.x/revoke", {"reason": "nope", "x": 1}),
    ("POST", "/v1/certificates/dev.badinput.x/renew?wait=-1", None),
    ("POST", "/v1/discovery/scans", {"endpoints": "nope"}),
    ("POST", "/v1/discovery/findings", {"host": "a b"}),
    ("GET", "/v1/discovery?state=nope", None),
    ("GET", "/v1/audit?limit=0", None),
    ("POST", "/v1/services/nope/web/credentials", None),
    ("PUT", "/v1/grants/nope/web", {"dns_names": "x"}),
    ("GET", "/v1/grants/nope/web", None),
    ("POST", "/v1/services/nope/web/credentials/refresh", None),
], ids=["declare-env", "declare-shape", "revoke", "renew-wait", "scan",
        "findings", "discovery-query", "audit-query", "mint-env", "grant-put", "grant-get",
        "refresh-env"])
@pytest.mark.parametrize("token", [None, "hvs.not-a-real-token"], ids=["none", "invalid"])
def test_an_unauthenticated_request_is_refused_before_its_input_is_read(
        certlocker_stack: CertlockerStack, method: str, path: str, payload: Any,
        token: str | None) -> None:
    """A 400 would tell a stranger what a valid request looks like (the configured
    environments, fields, issuers); no or a bad token is a 401 whatever the input."""
    headers = {"X-Vault-Token": token} if token else {}
    resp = requests.request(method, certlocker_stack.api_url + path, headers=headers,
                            timeout=30, **({} if payload is None else {"json": payload}))
    doc = assert_problem(resp, 401)
    assert "dev" not in doc["detail"] and "prod" not in doc["detail"], doc


def test_a_forged_service_credential_is_refused_before_the_bundle_request_is_read(
        certlocker_stack: CertlockerStack) -> None:
    resp = requests.post(certlocker_stack.api_url + "/v1/certificates/dev.badinput.x/bundle",
                         json={"format": "no-such-format", "extra": 1}, timeout=30,
                         headers={"Authorization": f"Bearer {FORGED_JWT}"})
    assert_problem(resp, 401)


@pytest.mark.parametrize("raw, key", [
    ('{"environment": "dev", "service": "badinput", "name": "%s", "name": "%s-2", '
     '"dns_names": ["%s.example.test"]}', "name"),
    ('{"environment": "dev", "service": "badinput", "name": "%s", '
     '"dns_names": ["%s.example.test"], "targets": [{"address": "127.0.0.1:1", '
     '"address": "127.0.0.2:1"}]}', "address"),
], ids=["top-level", "nested"])
def test_duplicate_json_keys_are_refused_naming_the_key(
        certlocker_stack: CertlockerStack, http: requests.Session, root: hvac.Client,
        unchanged: None, raw: str, key: str) -> None:
    name = fresh_name()
    data = raw.replace("%s", name).encode()
    resp = http.post(certlocker_stack.api_url + "/v1/certificates", data=data, timeout=30,
                     headers={"Content-Type": "application/json"})
    doc = assert_problem(resp, 400, key)
    assert "more than once" in doc["detail"]
    assert not spec_exists(root, "dev", "badinput", name)


OVERFLOWING = "55m86584d5705060s07m998981240w6m"  # the reviewer's: billions of weeks


@pytest.mark.parametrize("path, field", [
    (f"/v1/certificates?expiring_within={OVERFLOWING}", "expiring_within"),
    (f"/v1/discovery?expiring_within={OVERFLOWING}", "expiring_within"),
    ("/v1/audit?since=0001-01-01T00:00:00%2B01:00", "since"),
    ("/v1/audit?until=9999-12-31T23:59:59-01:00", "until"),
])
def test_overflowing_durations_and_times_in_queries_are_400(
        certlocker_stack: CertlockerStack, http: requests.Session, path: str,
        field: str) -> None:
    assert_problem(http.get(certlocker_stack.api_url + path, timeout=30), 400, field)


def test_a_finding_outside_the_years_utc_can_hold_is_400(
        certlocker_stack: CertlockerStack, http: requests.Session) -> None:
    finding = {"sha256_fingerprint": "ab" * 32, "subject": "CN=far.test",
               "dns_names": ["far.test"], "issuer": "CN=far.test", "serial": "0a",
               "not_before": "2020-01-01T00:00:00Z",
               "not_after": "9999-12-31T23:59:59-01:00", "source": "file:/etc/far.pem",
               "is_ca": False}
    resp = http.post(certlocker_stack.api_url + "/v1/discovery/findings", timeout=30,
                     json={"host": "far-1", "findings": [finding]})
    assert_problem(resp, 400, "findings/0/not_after")
    listing = http.get(certlocker_stack.api_url + "/v1/discovery?state=all", timeout=30)
    assert listing.status_code == 200, listing.text


def test_metrics_need_the_scrape_token(certlocker_stack: CertlockerStack) -> None:
    url = certlocker_stack.api_url + "/metrics"
    assert certlocker_stack.metrics_token, "the dev stack sets a metrics token"
    assert_problem(requests.get(url, timeout=30), 401)
    assert_problem(requests.get(url, headers={"Authorization": "Bearer wrong-token"},
                                timeout=30), 401)
    assert_problem(requests.get(url, timeout=30, headers={
        "X-Vault-Token": certlocker_stack.operator_token}), 401)
    ok = requests.get(url, headers=certlocker_stack.metrics_headers(), timeout=30)
    assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("text/plain")
    assert "certlocker_certificates" in ok.text


def _raw_http(certlocker_stack: CertlockerStack, request: bytes) -> tuple[int, dict, bytes]:
    import socket

    host, port = certlocker_stack.api_url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /v1/certificates?x=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
    (b"GARBAGE\r\n\r\n", 400),
], ids=["request-line", "header-size", "header-count", "not-http"])
def test_gunicorns_own_refusals_are_problem_documents(
        certlocker_stack: CertlockerStack, request_bytes: bytes, status: int) -> None:
    got, headers, body = _raw_http(certlocker_stack, request_bytes)
    assert got == status, body[:300]
    assert headers["content-type"] == "application/problem+json"
    doc = json.loads(body)
    assert PROBLEM_KEYS <= set(doc) and doc["status"] == status, doc
    assert b"aaaa" not in body and b"<html" not in body
