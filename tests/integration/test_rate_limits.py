"""Rate limits and the fallback issuer against two real Pebbles and a real OpenBao.

- nine certificates under "3 orders per 10 s" never put more than three orders in any
  10 s at the CA, and finish when the ETA said (within 10 %);
- the primary Pebble stopped: the certificates come from the fallback Pebble, and the
  status says which issuer issued them and why; the primary takes them back only at
  their next normal renewal;
- a CA's ``rateLimited`` with a Retry-After: the retry waits at least that long, or the
  fallback issues the certificate when the wait is beyond the certificate's slack.

Pebble 2.4 (Debian) has no rate limits of its own and no ACME profiles: the
``rateLimited`` answers here come from a transport in front of the real Pebble that
answers ``newOrder`` with RFC 8555's problem and a Retry-After (every other request,
and the certificate in the end, is the real Pebble's).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import secrets
import threading
import time
from typing import Any, Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter

from certlocker import settings as settings_module
from certlocker.api.certificates import render
from certlocker.audit.recorder import NoAudit
from certlocker.clock import SystemClock
from certlocker.composition import build_issuers
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.lifecycle.governed_issuer import GovernedIssuer, Governance, eta
from certlocker.lifecycle.policy import planning
from certlocker.lifecycle.policy.ratelimits import Limit
from certlocker.lifecycle.records.rate_books import RateBooks
from certlocker.lifecycle.records.vault_adapters import StoreAccounts
from certlocker.lifecycle.service import CertificateService
from certlocker.lifecycle.views import CertificateView
from certlocker.models import CertificateRef, CertificateSpec, KeyType, State
from certlocker.settings import IssuerSettings
from devstack import free_port
from tests.support.acme_helpers import Http01Responder, http01_responder, root_store
from tests.support.memory_store import grant
from tests.support.pools import certificate_pools
from tests.support.stack import Pebble, running_pebble

pytestmark = pytest.mark.integration

WINDOW = 10.0
MARGIN = 0.5


@pytest.fixture(scope="module")
def responder() -> Iterator[Http01Responder]:
    with http01_responder(free_port()) as answers:
        yield answers


@pytest.fixture(scope="module")
def backup_pebble(tmp_path_factory: pytest.TempPathFactory,
                  responder: Http01Responder) -> Iterator[Pebble]:
    with running_pebble(tmp_path_factory.mktemp("pebble-backup"), http01_port=responder.port,
                        env={"PEBBLE_WFE_NONCEREJECT": "0"}) as server:
        yield server


@pytest.fixture()
def primary_pebble(tmp_path_factory: pytest.TempPathFactory,
                   responder: Http01Responder) -> Iterator[Pebble]:
    """A Pebble of the test's own: some tests stop it."""
    with running_pebble(tmp_path_factory.mktemp("pebble-primary"), http01_port=responder.port,
                        env={"PEBBLE_WFE_NONCEREJECT": "0"}) as server:
        yield server


class OrderClock(HTTPAdapter):
    """A real transport that notes when each newOrder reached the CA, and can answer
    the next ``refuse`` newOrders itself with ``rateLimited`` and a Retry-After."""

    def __init__(self, retry_after: int | None = None, refuse: int = 0) -> None:
        super().__init__()
        self.orders: list[float] = []
        self.refused = 0
        self._retry_after = retry_after
        self._refuse = refuse
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if request.method == "POST" and (request.url or "").endswith("/order-plz"):
            with self._lock:
                refuse = self.refused < self._refuse
                self.refused += refuse
                if not refuse:
                    self.orders.append(time.monotonic())
            if refuse:
                return self._rate_limited(request, **kwargs)
        return super().send(request, **kwargs)

    def _rate_limited(self, request: requests.PreparedRequest,
                      **kwargs: Any) -> requests.Response:
        """RFC 8555 section 6.6's answer, with a fresh nonce from the real Pebble."""
        url = (request.url or "").rsplit("/", 1)[0] + "/nonce-plz"
        nonce = super().send(requests.Request("HEAD", url).prepare(), **kwargs)
        response = requests.Response()
        response.status_code = 429
        response.url = request.url or ""
        response.request = request
        response.headers["Content-Type"] = "application/problem+json"
        response.headers["Replay-Nonce"] = nonce.headers["Replay-Nonce"]
        if self._retry_after is not None:
            response.headers["Retry-After"] = str(self._retry_after)
        response._content = json.dumps({  # noqa: SLF001 - building a Response by hand
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many new orders recently", "status": 429}).encode()
        return response


def conf(pebble: Pebble, name: str, **extra: Any) -> IssuerSettings:
    return IssuerSettings(name=name, directory_url=pebble.directory_url,
                          ca_bundle=str(pebble.ca_bundle), **extra)


def specs(store: Any, issuer: str, n: int, tag: str) -> list[CertificateRef]:
    refs = []
    for i in range(n):
        ref = CertificateRef("dev", f"rl-{tag}", f"c{i}")
        spec = CertificateSpec(ref, (f"c{i}.{tag}.rl.test",), issuer, KeyType.EC_P256)
        store.create_spec(spec)
        grant(store, spec)
        refs.append(ref)
    return refs


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


# -- (1) inside the limit, with an honest ETA ------------------------------------------------
def test_nine_certificates_stay_inside_three_orders_per_ten_seconds_and_meet_the_eta(
        primary_pebble: Pebble, responder: Http01Responder, openbao: Any) -> None:
    store = root_store(openbao)
    name, tag = "rl-" + secrets.token_hex(3), secrets.token_hex(3)
    orders = OrderClock()
    account = AcmeIssuer(conf(primary_pebble, name), StoreAccounts(store, name + "-url"),
                         responder, timeout=120, transport=orders)
    books = RateBooks(store, name, orders=Limit(3, dt.timedelta(seconds=WINDOW + MARGIN)))
    issuer = GovernedIssuer(name, [account], books, clock=SystemClock(),
                            governance=Governance(max_wait=dt.timedelta(seconds=60)))
    refs = specs(store, name, 10, tag)
    service = CertificateService(store, {name: issuer}, pools=certificate_pools(10))
    try:
        # One certificate first: the ETA then knows how long an issuance takes here.
        assert service.issue(refs[0]).state is State.VALID
        start = dt.datetime.now(dt.timezone.utc)
        expected = eta(service.issuers, name, 9, start)
        with cf.ThreadPoolExecutor(9) as pool:
            statuses = list(pool.map(service.issue, refs[1:]))
        finished = dt.datetime.now(dt.timezone.utc)
    finally:
        service.shutdown()

    assert [s.state for s in statuses] == [State.VALID] * 9, [s.last_error for s in statuses]
    assert len(orders.orders) == 10
    # What the CA saw: never more than three new orders in any 10 s.
    assert most_in_any_window(orders.orders, WINDOW) == 3
    took, promised = (finished - start).total_seconds(), (expected - start).total_seconds()
    print(f"rate-limit ETA {promised:.2f} s, finished in {took:.2f} s, orders at "
          f"{[round(t - orders.orders[1], 2) for t in orders.orders[1:]]}")
    assert promised > 2 * WINDOW  # the limit did hold them back
    assert abs(took - promised) <= 0.1 * promised, (took, promised)


# -- (2) the primary down: the fallback issues, and says so ------------------------------------
def test_with_the_primary_pebble_stopped_the_fallback_issues_and_the_status_says_why(
        primary_pebble: Pebble, backup_pebble: Pebble, responder: Http01Responder,
        openbao: Any) -> None:
    store = root_store(openbao)
    primary, backup = "pri-" + secrets.token_hex(3), "bak-" + secrets.token_hex(3)
    settings = settings_module.from_mapping({
        "vault_addr": openbao.addr, "vault_token": openbao.root_token, "kv_mount": "secret",
        "issuance_timeout_seconds": 60, "default_issuer": primary, "issuers": {
            primary: {"directory_url": primary_pebble.directory_url,
                      "ca_bundle": str(primary_pebble.ca_bundle), "fallback": backup,
                      "accounts": 2,
                      "limits": {"orders_per_window": 100, "order_window_seconds": 60}},
            backup: {"directory_url": backup_pebble.directory_url,
                     "ca_bundle": str(backup_pebble.ca_bundle)}}})
    issuers = build_issuers(settings, store, responder, NoAudit(), "test",  # type: ignore[arg-type]
                            SystemClock())
    assert isinstance(issuers[primary], GovernedIssuer)
    refs = specs(store, primary, 3, secrets.token_hex(3))
    service = CertificateService(store, issuers, pools=certificate_pools(4))
    try:
        first = service.issue(refs[0])  # the primary is up: it issues
        for proc in primary_pebble.procs:
            proc.stop()
        rest = [service.issue(ref) for ref in refs[1:]]
    finally:
        service.shutdown()

    assert first.state is State.VALID and first.current is not None
    assert first.current.issuer_name == primary and first.current.fallback_for is None
    for ref, status in zip(refs[1:], rest, strict=True):
        assert status.state is State.VALID, status.last_error
        assert status.current is not None
        assert status.current.issuer_name == backup
        assert status.current.fallback_for == primary
        assert "connection" in (status.current.fallback_reason or "")
        # the status document and the API's answer say the same
        shown = status.to_json()["current"]
        assert shown["issuer_name"] == backup and shown["fallback_for"] == primary
        answer = render(CertificateView(store.read_spec(ref)[0], status), store.paths)
        assert answer["issuer"] == primary  # the spec's issuer is unchanged
        assert answer["current"]["issued_by"] == backup
        assert answer["current"]["fallback_for"] == primary
        assert "connection" in answer["current"]["fallback_reason"]
        # issued by the backup's CA, not the primary's
        stored = store.read(store.paths.cert(ref))
        assert stored is not None and "Pebble" in stored.data["issuer"]
        # not reissued by the primary at once: only at its normal renewal
        spec = store.read_spec(ref)[0]
        assert not planning.decide(spec, status, dt.datetime.now(dt.timezone.utc)).needed
    # the primary's first account was registered and stored in Vault
    assert store.read_json(store.paths.acme_account(primary_pebble.directory_url, 0))[0]


# -- (3) a CA's rateLimited and Retry-After ----------------------------------------------------
def test_a_retry_after_from_the_ca_holds_the_next_attempt_back(
        primary_pebble: Pebble, responder: Http01Responder, openbao: Any) -> None:
    store = root_store(openbao)
    name = "ra-" + secrets.token_hex(3)
    refusing = OrderClock(retry_after=5400, refuse=1)
    issuer = AcmeIssuer(conf(primary_pebble, name), StoreAccounts(store, name + "-url"),
                        responder, timeout=60, transport=refusing)
    ref = specs(store, name, 1, secrets.token_hex(3))[0]
    service = CertificateService(store, {name: issuer}, pools=certificate_pools(1))
    try:
        before = dt.datetime.now(dt.timezone.utc)
        status = service.issue(ref)
    finally:
        service.shutdown()
    assert status.state is State.FAILED
    assert "too many new orders" in (status.last_error or "")
    assert status.next_attempt_at is not None
    # the CA said 90 minutes; the normal first backoff is 5 minutes
    assert status.next_attempt_at >= before + dt.timedelta(seconds=5400)


def test_a_retry_after_beyond_the_slack_sends_the_certificate_to_the_fallback(
        primary_pebble: Pebble, backup_pebble: Pebble, responder: Http01Responder,
        openbao: Any) -> None:
    store = root_store(openbao)
    name, backup_name = "rf-" + secrets.token_hex(3), "rb-" + secrets.token_hex(3)
    refusing = OrderClock(retry_after=7200, refuse=1)
    primary = AcmeIssuer(conf(primary_pebble, name), StoreAccounts(store, name + "-url"),
                         responder, timeout=60, transport=refusing)
    backup = AcmeIssuer(conf(backup_pebble, backup_name),
                        StoreAccounts(store, backup_name + "-url"), responder, timeout=60)
    governed = GovernedIssuer(name, [primary], RateBooks(store, name), clock=SystemClock(),
                              governance=Governance(fallback_after=dt.timedelta(hours=1)),
                              fallback=backup)
    ref = specs(store, name, 1, secrets.token_hex(3))[0]
    service = CertificateService(store, {name: governed, backup_name: backup},
                                 pools=certificate_pools(1))
    try:
        status = service.issue(ref)
    finally:
        service.shutdown()
    assert refusing.refused == 1
    assert status.state is State.VALID and status.current is not None
    assert status.current.issuer_name == backup_name
    assert "Retry-After 2h" in (status.current.fallback_reason or "")


# -- past the limit: scheduled, not failed -----------------------------------------------------
def test_a_certificate_past_the_limit_waits_for_its_slot_with_the_time_in_its_status(
        primary_pebble: Pebble, responder: Http01Responder, openbao: Any) -> None:
    from certlocker.lifecycle.records.due_index import DueIndex

    store = root_store(openbao)
    name = "wt-" + secrets.token_hex(3)
    account = AcmeIssuer(conf(primary_pebble, name), StoreAccounts(store, name + "-url"),
                         responder, timeout=60)
    issuer = GovernedIssuer(name, [account], RateBooks(store, name, orders=Limit(
        1, dt.timedelta(hours=1))), clock=SystemClock(), governance=Governance(
        max_wait=dt.timedelta(seconds=5), fallback_after=dt.timedelta(days=1)))
    first, second = specs(store, name, 2, secrets.token_hex(3))
    due = DueIndex(store)
    service = CertificateService(store, {name: issuer}, pools=certificate_pools(2),
                                 due_index=due)
    try:
        before = dt.datetime.now(dt.timezone.utc)
        assert service.issue(first).state is State.VALID
        waiting = service.issue(second)
    finally:
        service.shutdown()

    # Not a failure: no attempt counted, no error; the time of its slot and why.
    assert waiting.state is State.PENDING and waiting.attempts == 0
    assert waiting.last_error is None
    assert waiting.waiting is not None and name in waiting.waiting
    assert waiting.next_attempt_at is not None
    assert before + dt.timedelta(hours=1) <= waiting.next_attempt_at \
        <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1, seconds=5)
    stored = store.read_status(second)
    assert stored is not None and stored[0].to_json()["waiting"] == waiting.waiting
    answer = render(CertificateView(store.read_spec(second)[0], stored[0]), store.paths)
    assert answer["status"] == "pending" and answer["waiting"] == waiting.waiting
    assert answer["next_attempt_at"] is not None and answer["last_error"] is None
    # The reconciler is told to come back at that time, and not before.
    spec = store.read_spec(second)[0]
    decision = planning.decide(spec, waiting, dt.datetime.now(dt.timezone.utc))
    assert not decision.needed and "scheduled for" in decision.message
    assert planning.next_action_at(spec, waiting, dt.datetime.now(dt.timezone.utc)) \
        == waiting.next_attempt_at
    hints = due.due(waiting.next_attempt_at + dt.timedelta(minutes=1), 1000)
    assert second in [h.ref for h in hints]
    assert second not in [h.ref for h in due.due(dt.datetime.now(dt.timezone.utc), 1000)]


def test_orders_are_spread_over_several_acme_accounts_each_with_its_own_limit(
        primary_pebble: Pebble, responder: Http01Responder, openbao: Any) -> None:
    store = root_store(openbao)
    name = "ac-" + secrets.token_hex(3)
    url = name + "-url"
    clocks = [OrderClock(), OrderClock()]
    accounts = [AcmeIssuer(conf(primary_pebble, name), StoreAccounts(store, url, i),
                           responder, timeout=60, transport=clocks[i]) for i in range(2)]
    issuer = GovernedIssuer(name, accounts, RateBooks(store, name, accounts=2, orders=Limit(
        2, dt.timedelta(hours=1))), clock=SystemClock())
    refs = specs(store, name, 5, secrets.token_hex(3))
    service = CertificateService(store, {name: issuer}, pools=certificate_pools(2))
    try:
        statuses = [service.issue(ref) for ref in refs]
    finally:
        service.shutdown()
    # two per account per hour: four issued now, the fifth scheduled
    assert [s.state for s in statuses] == [State.VALID] * 4 + [State.PENDING]
    assert [len(c.orders) for c in clocks] == [2, 2]
    uris = [store.read_json(store.paths.acme_account(url, i))[0]["uri"] for i in range(2)]
    assert uris[0] != uris[1]  # two accounts at the CA


def test_two_replicas_share_one_limit_through_vault(
        primary_pebble: Pebble, responder: Http01Responder, openbao: Any) -> None:
    """Two certlocker replicas (own issuers, own clients, own threads; one Vault) at
    once: three orders per hour between them, not three each."""
    name = "rp-" + secrets.token_hex(3)
    tag = secrets.token_hex(3)
    refs = specs(root_store(openbao), name, 6, tag)
    clocks, services = [], []
    for _ in range(2):
        store = root_store(openbao)  # a replica's own Vault client
        transport = OrderClock()
        account = AcmeIssuer(conf(primary_pebble, name), StoreAccounts(store, name + "-url"),
                             responder, timeout=60, transport=transport)
        issuer = GovernedIssuer(name, [account], RateBooks(store, name, orders=Limit(
            3, dt.timedelta(hours=1))), clock=SystemClock())
        clocks.append(transport)
        services.append(CertificateService(store, {name: issuer}, pools=certificate_pools(3)))
    try:
        with cf.ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda i: services[i % 2].issue(refs[i]), range(6)))
    finally:
        for service in services:
            service.shutdown()
    assert sum(len(c.orders) for c in clocks) == 3
    assert sorted(s.state.value for s in statuses) == ["pending"] * 3 + ["valid"] * 3
