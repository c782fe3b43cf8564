"""State is true (issue #15), against real parts and a real reconciler process.

One private stack: OpenBao, Pebble, the API under gunicorn, and ``certlocker reconcile``
ticking every second (``reconcile_interval_seconds``) with a 10 s verification interval,
a 3 s retry base and a Vault PKI mount (``pki-true``) as a CA the tests can stop.

- A pool of six real nginx nodes serving a Pebble certificate: after a renewal through
  the API, with the new certificate rolled out to four nodes, the two old ones read
  ``stale`` within one verification interval, without anyone calling ``/verify``; no
  node ever reads ``ok`` while it serves anything but the current certificate.
- A short-lived certificate whose CA is stopped: past ``not_after`` it reads
  ``expired`` and failing (API, ``?status=``, dashboard, metrics), never ``valid``.
- A CA that refuses the first attempt: the retry comes after the retry base (seconds),
  not at the next hourly sweep.

Each test prints how long a node's or certificate's shown state was wrong (run with -s).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

import devstack
from certlocker.delivery.verify import probe
from tests.support.nginx_pool import NginxPool, free_port
from tests.support.observability import Api, ObservabilityStack
from tests.support.stack import SHARED_PEBBLE_ENV, log_events

pytestmark = pytest.mark.integration

VERIFY_INTERVAL = 10.0
TICK = 1.0
RETRY_BASE = 3
SLACK = 5.0  # a probe round, a Vault write and a loaded CI machine
PKI = "pki-true"
#: the "flaky" issuer's PKI engine, not mounted until the test says: a CA that is not
#: there yet (a deployment fault, retried), unlike a role that refuses (never retried)
FLAKY_PKI = "pki-flaky"
POOL_IPS = tuple(f"127.0.0.{i}" for i in range(12, 18))
STALE_IPS = (POOL_IPS[1], POOL_IPS[4])
NAME = "pool.true.test"
POOL_ID = "prod.true-web.www"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservabilityStack]:
    s = ObservabilityStack(tmp_path_factory.mktemp("true-state"), devstack.free_ports(),
                           pebble_env=SHARED_PEBBLE_ENV, extra_env={
                               "CERTLOCKER_VERIFY_INTERVAL_SECONDS": str(int(VERIFY_INTERVAL)),
                               "CERTLOCKER_RECONCILE_INTERVAL_SECONDS": str(int(TICK)),
                               "CERTLOCKER_RETRY_BASE_SECONDS": str(RETRY_BASE),
                               "CERTLOCKER_ISSUERS__SHORT__TYPE": "vault-pki",
                               "CERTLOCKER_ISSUERS__SHORT__PKI_MOUNT": PKI,
                               "CERTLOCKER_ISSUERS__SHORT__PKI_ROLE": "short",
                               "CERTLOCKER_ISSUERS__FLAKY__TYPE": "vault-pki",
                               "CERTLOCKER_ISSUERS__FLAKY__PKI_MOUNT": FLAKY_PKI,
                               "CERTLOCKER_ISSUERS__FLAKY__PKI_ROLE": "flaky",
                           })
    s.up()
    try:
        mount_ca(s, PKI)
        # Its start-up sweep is over: from here on only due-index hints bring it to a
        # certificate (the next sweep is an hour away), as in production.
        [reconciler] = [p for p in s.procs if p.name == "reconciler"]
        devstack.wait_until(lambda: log_events(reconciler, "reconcile.sweep_finished"), 60,
                            what="the reconciler's start-up sweep")
        yield s
    finally:
        s.down()


def mount_ca(stack: ObservabilityStack, path: str) -> None:
    root = root_client(stack)
    root.sys.enable_secrets_engine("pki", path=path, config={"max_lease_ttl": "87600h"})
    root.write_data(f"{path}/root/generate/internal", data={
        "common_name": "certlocker true-state test CA", "key_type": "ec",
        "key_bits": 256, "ttl": "87600h"})


def root_client(stack: ObservabilityStack) -> Any:
    return hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10)


def api(stack: ObservabilityStack) -> Api:
    assert stack.operator_token
    return Api(stack.api_url, stack.operator_token)


def role(stack: ObservabilityStack, name: str, mount: str = PKI, **extra: str) -> None:
    root_client(stack).write_data(f"{mount}/roles/{name}", data={
        "allowed_domains": ["internal.test"], "allow_subdomains": True,
        "allow_bare_domains": False, "key_type": "any", **extra})


def reconciler_log(stack: ObservabilityStack) -> str:
    [proc] = [p for p in stack.procs if p.name == "reconciler"]
    return proc.log_tail(40)


# -- 1. a pool after a renewal through the API --------------------------------------------

def bundle(stack: ObservabilityStack) -> tuple[bytes, bytes, str]:
    data = root_client(stack).secrets.kv.v2.read_secret_version(
        path="certs/prod/true-web/www", mount_point="certlocker",
        raise_on_deleted_version=True)["data"]["data"]
    return data["fullchain"].encode(), data["private_key"].encode(), data["sha256_fingerprint"]


def served_sha(ip: str, port: int) -> str | None:
    try:
        return probe(f"{NAME}:{port}", NAME, ip, 2.0).sha256
    except OSError:
        return None


class Watch:
    """Polls GET /v1/certificates/<id> (never /verify) and compares each node's shown
    status with what the test knows it serves; keeps the longest span of each kind:

    - ``wrong``: shown ``ok`` for a node not serving the current certificate (a lie);
    - ``behind``: shown anything but the truth (a check not yet made since the node
      changed, ``unverified`` included): bounded by the verification interval.

    A node whose fingerprint is None (being reloaded) is not judged."""

    def __init__(self, client: Api, port: int) -> None:
        self.client = client
        self.port = port
        self.serving: dict[str, str | None] = {}  # node -> fingerprint, as the test set it
        self.since: dict[str, float] = {}  # node -> when that became true
        self.wrong: dict[str, float] = {}
        self.behind: dict[str, float] = {}
        self.longest_wrong = 0.0
        self.longest_behind = 0.0

    def served(self, ip: str, fingerprint: str | None) -> None:
        node = f"{ip}:{self.port}"
        self.serving[node] = fingerprint
        self.since[node] = time.monotonic()

    def poll(self) -> tuple[dict[str, str], str]:
        cert = self.client("GET", f"/v1/certificates/{POOL_ID}").json()
        current = cert["current"]["sha256_fingerprint"]
        pool = next(t for t in cert["targets"] if t["ips"])
        shown = {n["address"]: n["status"] for n in pool["nodes"]}
        now = time.monotonic()
        for node, fingerprint in self.serving.items():
            if fingerprint is None:
                continue
            truth = "ok" if fingerprint == current else "stale"
            status = shown.get(node)
            is_wrong = status == "ok" and truth != "ok"
            for spans, bad in ((self.wrong, is_wrong), (self.behind, status != truth)):
                if bad:
                    spans.setdefault(node, max(self.since[node], now))
                else:
                    spans.pop(node, None)
            for spans, attr in ((self.wrong, "longest_wrong"),
                                (self.behind, "longest_behind")):
                if node in spans:
                    setattr(self, attr, max(getattr(self, attr), now - spans[node]))
        return shown, current

    def until(self, expected: dict[str, str], timeout: float, what: str) -> float:
        """Poll until the shown statuses are ``expected``; return the seconds it took."""
        start = time.monotonic()
        while True:
            shown, _ = self.poll()
            if shown == expected:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{what}: still {shown} after {timeout:.0f} s")
            time.sleep(0.2)


def test_after_a_renewal_the_old_nodes_are_flagged_stale_within_one_interval(
        stack: ObservabilityStack, tmp_path: Path) -> None:
    client = api(stack)
    port = free_port(POOL_IPS)
    resp = client("POST", "/v1/certificates?wait=90", json={
        "environment": "prod", "service": "true-web", "name": "www", "dns_names": [NAME],
        "targets": [{"address": f"{NAME}:{port}", "ips": list(POOL_IPS)}]})
    assert resp.status_code == 201, resp.text
    fullchain, key, first = bundle(stack)
    nginx = NginxPool(tmp_path / "nginx")
    sites = {ip: nginx.add(ip, port, fullchain, key) for ip in POOL_IPS}
    watch = Watch(client, port)
    nodes = [f"{ip}:{port}" for ip in POOL_IPS]
    with nginx:
        for ip in POOL_IPS:
            watch.served(ip, first)
        # Issued by an API worker: the reconciler verifies it on its own, in time.
        took_first = watch.until({n: "ok" for n in nodes}, VERIFY_INTERVAL + SLACK,
                                 "every node of a new certificate verified ok")

        resp = client("POST", f"/v1/certificates/{POOL_ID}/renew?wait=90")
        assert resp.status_code == 200, resp.text
        renewed_at = time.monotonic()
        fullchain, key, new = bundle(stack)
        assert new == resp.json()["current"]["sha256_fingerprint"] != first
        shown, current = watch.poll()
        assert current == new and "ok" not in shown.values(), shown  # judged on the old one
        # The renewal alone makes it due: every node is re-checked and found on the old one.
        took_renewal = watch.until({n: "stale" for n in nodes}, VERIFY_INTERVAL + SLACK,
                                   "every node stale after the renewal, before any rollout")

        for ip in POOL_IPS:
            if ip not in STALE_IPS:
                sites[ip] = nginx.replace(sites[ip], fullchain, key)
                watch.served(ip, None)
        nginx.reload()
        for ip in POOL_IPS:
            if ip not in STALE_IPS:
                devstack.wait_until(lambda ip=ip: served_sha(ip, port) == new, 20,
                                    what=f"{ip} to serve the renewed certificate")
                watch.served(ip, new)
        rolled_out = time.monotonic()
        expected = {n: "stale" if n.split(":")[0] in STALE_IPS else "ok" for n in nodes}
        took = watch.until(expected, VERIFY_INTERVAL + SLACK,
                           "the two old nodes stale, the four renewed ones ok")
        # Stays true on the following checks.
        deadline = time.monotonic() + VERIFY_INTERVAL + 2
        while time.monotonic() < deadline:
            assert watch.poll()[0] == expected
            time.sleep(0.5)
    print(f"\n[true-state pool] first verification {took_first:.1f} s after nginx start; "
          f"all stale {took_renewal:.1f} s after the renewal; "
          f"renewal->rolled out {rolled_out - renewed_at:.1f} s; right {took:.1f} s after "
          f"the rollout; longest shown-wrong {watch.longest_wrong:.1f} s, longest behind the "
          f"truth {watch.longest_behind:.1f} s (verify interval {VERIFY_INTERVAL:.0f} s)")
    assert watch.longest_wrong == 0.0, "a node read ok while serving another certificate"
    assert watch.longest_behind <= VERIFY_INTERVAL + SLACK


# -- 2. an expired certificate whose renewals fail ----------------------------------------

def login(stack: ObservabilityStack) -> requests.Session:
    session = requests.Session()
    resp = session.post(stack.api_url + "/login", data={"token": stack.operator_token},
                        allow_redirects=False, timeout=30)
    assert resp.status_code == 303, resp.text
    return session


def metric(stack: ObservabilityStack, name: str, **labels: str) -> list[float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(stack.api_url + "/metrics", timeout=30, headers={
        "Authorization": f"Bearer {stack.metrics_token}"}).text
    return [s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def test_an_expired_certificate_whose_ca_is_stopped_reads_expired_and_failing(
        stack: ObservabilityStack) -> None:
    role(stack, "short", ttl="20s", max_ttl="20s", not_before_duration="1s")
    client = api(stack)
    resp = client("POST", "/v1/certificates?wait=60", json={
        "environment": "prod", "service": "short", "name": "api",
        "dns_names": ["api.internal.test"], "issuer": "short"})
    assert resp.status_code == 201, resp.text
    root_client(stack).delete(f"{PKI}/roles/short")  # the CA refuses from now on
    not_after = dt.datetime.fromisoformat(resp.json()["current"]["not_after"])
    cert_id = "prod.short.api"

    def shown() -> dict[str, Any]:
        return client("GET", f"/v1/certificates/{cert_id}").json()

    def expired() -> dict[str, Any] | None:
        cert = shown()
        return cert if cert["status"] == "expired" else None

    seen_valid_after_expiry = 0.0
    while True:
        cert = shown()
        now = dt.datetime.now(dt.timezone.utc)
        end = dt.datetime.fromisoformat(cert["current"]["not_after"])
        if now >= end + dt.timedelta(seconds=1):
            assert cert["status"] == "expired", cert
            break
        if now >= end and cert["status"] == "valid":
            seen_valid_after_expiry = (now - end).total_seconds()
        assert (now - not_after) < dt.timedelta(seconds=90), "never expired?"
        time.sleep(0.3)
    cert = devstack.wait_until(lambda: (lambda c: c if c["renewal_failing"] else None)(
        shown()), 30, what="the failing renewal to show")
    assert cert["status"] == "expired" and cert["last_error"]
    assert cert["remaining_validity_seconds"] == 0
    # a role that refuses is not retried (retrying cannot fix it), and says so
    assert cert["next_attempt_at"] or cert["retryable"] is False, cert

    def ids(status: str) -> list[str]:
        resp = client("GET", "/v1/certificates", params={"status": status, "limit": 1000})
        assert resp.status_code == 200, resp.text
        return [c["id"] for c in resp.json()["items"]]

    assert cert_id in ids("expired") and cert_id in ids("failed")
    assert cert_id not in ids("valid")

    page = login(stack).get(stack.api_url + "/", timeout=30).text
    failing = page.split('<section id="failing">')[1].split("</section>")[0]
    assert cert_id in failing and "renewal failing" in failing and "expired" in failing

    devstack.wait_until(lambda: metric(stack, "certlocker_certificate_renewal_failing",
                                       id=cert_id) == [1.0]
                        and (metric(stack, "certlocker_certificates", state="expired")
                             or [0])[0] >= 1, 30, what="metrics to show it expired, failing")
    print(f"\n[true-state expiry] shown valid past not_after for at most "
          f"{seen_valid_after_expiry:.1f} s (the API derives it per request)")


# -- 3. the first retry, in the declaration's own minute ----------------------------------

def test_a_refused_first_attempt_is_retried_after_the_retry_base(
        stack: ObservabilityStack) -> None:
    client = api(stack)
    second = dt.datetime.now(dt.timezone.utc).second
    if second >= 50:  # the declaration and its first retry in one minute slot
        time.sleep(61 - second)
    resp = client("POST", "/v1/certificates?wait=30", json={
        "environment": "prod", "service": "flaky", "name": "api",
        "dns_names": ["flaky.internal.test"], "issuer": "flaky"})
    assert resp.status_code == 201, resp.text  # settled: the attempt failed
    failed = resp.json()
    assert failed["status"] == "failed" and failed["renewal_failing"], failed
    retry_at = dt.datetime.fromisoformat(failed["next_attempt_at"])
    mount_ca(stack, FLAKY_PKI)  # the CA is there from now on
    role(stack, "flaky", FLAKY_PKI, ttl="1h")
    started = time.monotonic()

    def issued() -> dict[str, Any] | None:
        cert = client("GET", "/v1/certificates/prod.flaky.api").json()
        return cert if cert["status"] == "valid" else None

    try:
        cert = devstack.wait_until(issued, RETRY_BASE * 2 + TICK + SLACK,
                                   what="the retry after the retry base")
    except Exception:
        print(reconciler_log(stack))
        raise
    took = time.monotonic() - started
    late = (dt.datetime.now(dt.timezone.utc) - retry_at).total_seconds()
    assert not cert["renewal_failing"] and cert["attempts"] == 0
    print(f"\n[true-state retry] valid {took:.1f} s after the failed answer; "
          f"{late:.1f} s after next_attempt_at (retry base {RETRY_BASE} s, tick {TICK:.0f} s)")
