"""The composition root: the one place that builds certlocker's services from settings.

The API (``app.create_app``) and the reconciler process (``reconcile_cmd``) both take
what they run from here, so the reconciler never imports Flask and no package below
builds its own collaborators. Every constructor of an adapter (Vault store, issuers,
audit lanes, credentials, discovery, metrics) is called in this module.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import os
import threading
from typing import Any, Callable, TypeVar

from . import notify
from .acmeserver.bindings import Bindings
from .acmeserver.nonces import Nonces
from .acmeserver.secret import ServerSecret
from .acmeserver.server import AcmeServer, ServerOptions
from .audit.chain import AuditLog
from .audit.recorder import Auditor
from .clock import Clock, SystemClock
from .credentials.keys import KeyRing
from .credentials.service import LOOKUP_THREADS, CredentialService
from .credentials.tokens import TokenMinter
from .delivery import verify
from .delivery.verify import under_policy
from .discovery.service import DiscoveryPools, DiscoveryService
from .issuance.acme_issuer import AcmeIssuer, Pacer
from .issuance.base import Issuer
from .issuance.vault_pki import VaultPkiIssuer
from .lifecycle.governed_issuer import GovernedIssuer, Governance
from .lifecycle.policy.ratelimits import Limit
from .lifecycle.records import heartbeat
from .lifecycle.records.rate_books import RateBooks
from .lifecycle.maintenance_defaults import WindowDefaults
from .lifecycle.policy.alerts import policy_from_settings as alert_policy
from .lifecycle.policy.backoff import BackoffPolicy
from .lifecycle.records.due_index import DueIndex
from .lifecycle.records.heartbeat import Heartbeats
from .lifecycle.records.issuer_secrets import StoreIssuerSecrets
from .lifecycle.local_challenges import LocalFirstChallenges
from .lifecycle.ports import Store
from .lifecycle.reconciler import Options, Reconciler
from .lifecycle.retirement import RetiredRecords, RetirementService
from .lifecycle.replacements import ReplacementService
from .lifecycle.revocation import RevocationService
from .lifecycle.service import HOLDER, CertificatePools, CertificateService
from .lifecycle.spec_watch import SpecWatch, WatchOptions
from .lifecycle.target_allowlist import AllowList
from .lifecycle.records.vault_adapters import StoreAccounts, StoreChallenges
from .lifecycle.verification import (AlertOnDivergence, DivergenceHook, PolicySource, StatusChange,
                                     Verifier, load_anchors)
from .metrics.collector import AcmeRequestMetrics, InventoryCollector, IssuanceMetrics
from .metrics.replacements import ReplacementCollector
from .metrics.summary import SummaryCache, load_rows
from .models import CertificateRef, CertificateStatus
from .settings import Settings
from .specs import SpecRules
from .vault.token_keeper import TokenKeeper
from .vault.audit_store import vault_audit_lanes
from .vault.identity import ServiceIdentities
from .vault.pki import PkiSigner
from .vault.service_login import ServiceLogin
from .vault.store import VaultStore


T = TypeVar("T")
E = TypeVar("E", bound=cf.Executor)


class ProcessPool(cf.Executor):
    """A thread pool that belongs to one process.

    gunicorn may import the app before forking its workers (``--preload``); a forked
    child inherits the parent's pool object but none of its threads. A ``ProcessPool``
    makes its executor on first use in each process.
    """

    def __init__(self, threads: int, name: str) -> None:
        self._threads = threads
        self._name = name
        self._lock = threading.Lock()
        self._pool: tuple[int, cf.ThreadPoolExecutor] | None = None

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> cf.Future[T]:
        pool = self._pool
        if pool is None or pool[0] != os.getpid():
            with self._lock:
                pool = self._pool
                if pool is None or pool[0] != os.getpid():
                    pool = (os.getpid(), cf.ThreadPoolExecutor(
                        self._threads, thread_name_prefix=self._name))
                    self._pool = pool
        return pool[1].submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pool = self._pool
        if pool is not None and pool[0] == os.getpid():
            pool[1].shutdown(wait=wait, cancel_futures=cancel_futures)


class Pools:
    """Every thread pool of one process: made here and nowhere else, and shut down
    together. A service that is given a pool of its own (the issuance queue, the
    reconciler's workers) still stops it from its ``shutdown``/``close``, as before."""

    def __init__(self) -> None:
        self._made: list[cf.Executor] = []
        self._lock = threading.Lock()

    def threads(self, workers: int, name: str) -> cf.ThreadPoolExecutor:
        """A pool of up to ``workers`` threads named ``name-N`` (made as work comes)."""
        return self._keep(cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name))

    def per_process(self, workers: int, name: str) -> ProcessPool:
        """A pool used before gunicorn forks and in every worker after."""
        return self._keep(ProcessPool(workers, name))

    def _keep(self, pool: E) -> E:
        with self._lock:
            self._made.append(pool)
        return pool

    def shutdown(self, wait: bool = False) -> None:
        """Stop every pool made here; queued work is cancelled."""
        with self._lock:
            made, self._made = self._made, []
        for pool in made:
            pool.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> "Pools":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _SigningKeyStore:
    """KeyRing's persistence on the certlocker KV mount."""

    def __init__(self, store: VaultStore) -> None:
        self._store = store

    def load(self) -> tuple[dict[str, Any] | None, int]:
        return self._store.read_json(self._store.paths.signing_keys())

    def save(self, document: dict[str, Any], cas: int) -> int:
        return self._store.write_json(self._store.paths.signing_keys(), document, cas=cas)

    def version(self) -> int:
        return self._store.current_version(self._store.paths.signing_keys())


@dataclasses.dataclass
class Services:
    settings: Settings
    store: VaultStore
    challenges: LocalFirstChallenges
    certificates: CertificateService
    keyring: KeyRing
    credentials: CredentialService
    audit: AuditLog
    verifier: Verifier
    revocation: RevocationService
    retirement: RetirementService
    #: the target allow-list in force (settings + the administrator's Vault document)
    targets: AllowList
    discovery: DiscoveryService
    #: logs in with a service's own credential (bundles are read with its token)
    service_login: ServiceLogin
    #: what /metrics exports (refreshed in the background while scraped)
    metrics: InventoryCollector
    #: the ACME server for stock clients (/acme/<env>/...)
    acme: AcmeServer
    #: every thread pool the services run on (``shutdown`` stops them all)
    pools: Pools
    #: the TLS handshakes of target verification, shared by every verifier and prober
    probes: cf.Executor
    #: mass replacement operations (``POST /v1/replacements``)
    replacements: ReplacementService


#: the reads an operator's listing keeps in flight (``CertificateReads``)
READ_THREADS = 8
#: background revocation follow-ups at once
REVOCATION_THREADS = 2
#: whole discovery scans at once, and the most handshakes one scan asks for (the API's cap)
SCAN_THREADS, SCAN_PARALLELISM_MAX = 2, 256
#: discovery's record reads in flight per call, and the calls served at once at that pace
DISCOVERY_READ_WORKERS, DISCOVERY_READ_CALLS = 8, 8
#: the ACME server's reads and writes of one request made side by side
ACME_THREADS = 16
#: the status and spec reads of one metrics summary
METRICS_THREADS = 8
#: a replacement's reads and renewal requests in flight; operations followed at once
#: by the API process that started them (the reconciler follows every one, each tick)
REPLACEMENT_THREADS, REPLACEMENT_FOLLOWERS = 8, 4


def build_services(settings: Settings, actor: str = "certlocker") -> Services:
    clock = SystemClock()
    pools = Pools()
    store = VaultStore.connect(settings.vault_addr, settings.vault_token, settings.paths,
                               settings.vault_ca_cert, keep_versions=settings.keep_versions,
                               retry_seconds=settings.vault_retry_seconds, own_token=True,
                               token_file=settings.vault_token_file,
                               spec_rules=SpecRules.from_settings(settings))
    # one thread for every lane's head hint, made in each process (used before a fork)
    audit = AuditLog(vault_audit_lanes(store, pools.per_process(1, "audit-head-hint")), clock)
    challenges = LocalFirstChallenges(StoreChallenges(store))
    issuers = build_issuers(settings, store, challenges, audit, actor, clock)
    verify_every = dt.timedelta(seconds=settings.verify_interval_seconds)
    workers = settings.issuance_workers
    certificates = CertificateService(store, issuers, clock=clock,
                                      pools=CertificatePools(
                                          issuance=pools.threads(workers, "issuance"),
                                          reads=pools.threads(READ_THREADS, "reads"),
                                          side=pools.threads(max(4, workers), "side-writes"),
                                          wakeups=pools.per_process(1, "wakeups")),
                                      issuance_timeout=settings.issuance_timeout_seconds,
                                      audit=audit, actor=actor, observer=IssuanceMetrics(),
                                      due_index=DueIndex(store, alert_policy(settings),
                                                         verify_interval=verify_every),
                                      backoff_policy=BackoffPolicy(
                                          base=dt.timedelta(seconds=settings.retry_base_seconds)),
                                      retired=RetiredRecords(store))
    # track_version: a rotation by any gunicorn worker or replica is used by all at once.
    # on_first_use: a worker starts (and answers 503) while Vault is down.
    keyring = KeyRing.on_first_use(_SigningKeyStore(store), clock, track_version=True)
    credentials = CredentialService(
        store, settings.paths.service_generation,
        ServiceIdentities(store.hvac, settings.paths),
        lambda generation: TokenMinter(keyring, clock, issuer=settings.jwt_issuer,
                                       current_generation=generation,
                                       audience=settings.jwt_audience,
                                       default_ttl=settings.jwt_ttl_seconds),
        audit=audit, lookups=pools.per_process(LOOKUP_THREADS, "credential-lookup"))
    lease_ttl = settings.issuance_timeout_seconds + 60
    targets = AllowList(settings.targets, store,
                        refresh=float(settings.targets_refresh_seconds))
    # Service and team maintenance windows, applied to every spec read (same refresh).
    store.spec_defaults = WindowDefaults(
        store, refresh=float(settings.targets_refresh_seconds)).apply
    # Each verification keeps up to ``verify_parallelism`` handshakes in flight; as many
    # run at once as the reconciler has workers, plus revocations and the API's.
    probes = pools.threads(settings.verify_parallelism * (workers + 4), "verify")
    revocation = RevocationService(store, certificates, under_policy(targets, probes),
                                   audit=audit, actor=actor, replace_timeout=lease_ttl,
                                   pool=pools.threads(REVOCATION_THREADS, "revocation"))
    verifier = build_verifier(settings, store, certificates.update_status, audit,
                              probes=probes, clock=clock, policy=targets)
    replacements = ReplacementService(
        store, views=certificates.views,
        refs=lambda caller, env, svc: certificates.refs(caller, env, svc),
        renew=lambda ref, who, serial: certificates.request_renewal(
            ref, who, unless_replaced=serial),
        issuers=lambda: certificates.issuers,
        pool=pools.per_process(REPLACEMENT_THREADS, "replacements"), clock=clock,
        audit=audit, actor=actor, verifier=verifier,
        follow=pools.per_process(REPLACEMENT_FOLLOWERS, "replacement-follow"),
        delivery=dt.timedelta(seconds=settings.delivery_seconds))
    return Services(
        settings, store, challenges, certificates, keyring, credentials, audit,
        verifier=verifier,
        revocation=revocation,
        retirement=RetirementService(store, holder=HOLDER, lease_ttl=lease_ttl, audit=audit,
                                     issuers=issuers, credentials=credentials,
                                     probe=under_policy(targets, probes), actor=actor,
                                     probe_timeout=float(settings.verify_timeout_seconds),
                                     names=certificates.ownership),
        targets=targets,
        discovery=DiscoveryService(store, DiscoveryPools(
            scans=pools.threads(SCAN_THREADS, "discovery-scan"),
            handshakes=pools.threads(SCAN_THREADS * SCAN_PARALLELISM_MAX, "discovery-probe"),
            reads=pools.threads(DISCOVERY_READ_WORKERS * DISCOVERY_READ_CALLS,
                                "discovery-read")),
            audit=audit, policy=targets, read_workers=DISCOVERY_READ_WORKERS),
        service_login=ServiceLogin(store, settings.jwt_role),
        metrics=_inventory_metrics(settings, store, clock,
                                   pools.threads(METRICS_THREADS, "metrics"), replacements),
        pools=pools, probes=probes, replacements=replacements,
        acme=_acme_server(settings, store, certificates, revocation, issuers, credentials,
                          audit, clock, pools.per_process(ACME_THREADS, "acme-server")))


def build_issuers(settings: Settings, store: VaultStore, challenges: LocalFirstChallenges,
                  audit: Auditor, actor: str, clock: Clock) -> dict[str, Issuer]:
    """Every configured issuer; one with limits, several accounts or a fallback is a
    ``GovernedIssuer`` over its accounts (its fallback ungoverned by it: the fallback's
    own limits, if any, are kept by its own entry)."""
    plain: dict[str, list[Issuer]] = {}
    for name, conf in settings.issuers.items():
        if conf.type == "acme":
            limits = conf.limits
            pacer = (Pacer(limits.requests_per_second)
                     if limits is not None and limits.requests_per_second else None)
            plain[name] = [AcmeIssuer(conf, StoreAccounts(store, conf.directory_url or "", i),
                                      challenges, timeout=settings.issuance_timeout_seconds,
                                      secrets=StoreIssuerSecrets(store, name),
                                      audit=audit, actor=actor,
                                      request_observer=AcmeRequestMetrics(), pacer=pacer)
                           for i in range(conf.accounts)]
        elif conf.type == "vault-pki":
            plain[name] = [VaultPkiIssuer(conf, PkiSigner(store.hvac, conf.pki_mount or "",
                                                          conf.pki_role or ""))]
    issuers: dict[str, Issuer] = {name: found[0] for name, found in plain.items()}
    governed = {name: conf for name, conf in settings.issuers.items()
                if name in plain and (conf.limits is not None or conf.accounts > 1
                                      or conf.fallback)}
    for name, conf in governed.items():
        limits = conf.limits
        margin = dt.timedelta(seconds=limits.margin_seconds if limits else 0)
        books = RateBooks(
            store, name, accounts=conf.accounts,
            orders=Limit(limits.orders_per_window, dt.timedelta(
                seconds=limits.order_window_seconds) + margin)
            if limits and limits.orders_per_window else None,
            per_domain=Limit(limits.certificates_per_domain, dt.timedelta(
                seconds=limits.domain_window_seconds) + margin)
            if limits and limits.certificates_per_domain else None)
        issuers[name] = GovernedIssuer(
            name, plain[name], books, clock=clock,
            governance=Governance(
                max_wait=dt.timedelta(seconds=limits.max_wait_seconds if limits else 0),
                fallback_after=dt.timedelta(seconds=conf.fallback_after_seconds)))
    # A fallback is the other issuer as built above, without a fallback of its own: one
    # hop, so two issuers that name each other never pass a certificate back and forth.
    alone = dict(issuers)
    for name, conf in governed.items():
        if conf.fallback and conf.fallback in alone:
            found = issuers[name]
            assert isinstance(found, GovernedIssuer)
            issuers[name] = found.with_fallback(alone[conf.fallback])
    return issuers


def _acme_server(settings: Settings, store: VaultStore, certificates: CertificateService,
                 revocation: RevocationService, issuers: dict[str, Issuer],
                 credentials: CredentialService, audit: AuditLog,
                 clock: Clock, side: cf.Executor) -> AcmeServer:
    issuer = settings.acme_server_issuer or settings.default_issuer or next(
        iter(settings.issuers), "")
    conf = settings.issuers.get(issuer)
    secret = ServerSecret(store)
    return AcmeServer(
        store, ServerOptions(public_url=settings.public_url,
                             environments=tuple(settings.environments), issuer=issuer,
                             challenge=conf.challenge if conf else "http-01",
                             finalize_wait=float(settings.acme_server_finalize_wait_seconds)),
        rules=SpecRules.from_settings(settings), certificates=certificates,
        ownership=certificates.ownership, revocation=revocation, issuers=issuers,
        credentials=credentials, bindings=Bindings(store, secret),
        nonces=Nonces(store, lambda: secret.key("nonce")), audit=audit, clock=clock,
        side=side)



def build_verifier(settings: Settings, store: Store,
                   update_status: Callable[[CertificateRef, StatusChange], CertificateStatus],
                   audit: Auditor | None = None, *, probes: cf.Executor,
                   clock: Clock | None = None,
                   on_divergence: DivergenceHook | None = None,
                   policy: PolicySource | None = None) -> Verifier:
    """A ``Verifier`` from the settings (timeouts, parallelism, grace, each issuer's
    ``trust_roots``) and the target allow-list: ``policy``, else the settings' extended
    by the administrator's Vault document; its handshakes run on ``probes``."""
    policy = policy or AllowList(settings.targets, store,
                                 refresh=float(settings.targets_refresh_seconds))
    return Verifier(
        store, update_status, probe=verify.under_policy(policy, probes), policy=policy,
        anchors=load_anchors({n: i.trust_roots for n, i in settings.issuers.items()}),
        audit=audit, clock=clock, timeout=float(settings.verify_timeout_seconds),
        parallelism=settings.verify_parallelism,
        grace=dt.timedelta(seconds=settings.verify_grace_seconds),
        on_divergence=on_divergence)


def _inventory_metrics(settings: Settings, store: VaultStore, clock: Clock,
                       pool: cf.Executor,
                       replacements: ReplacementService | None = None) -> InventoryCollector:
    refresh = settings.metrics_refresh_seconds
    extra = [ReplacementCollector(SummaryCache(replacements.counts, refresh))] \
        if replacements is not None else []
    return InventoryCollector(
        SummaryCache(lambda: load_rows(store, clock.now(), pool, METRICS_THREADS), refresh),
        SummaryCache(lambda: store.token_life().expires_at(clock.now()), refresh),
        SummaryCache(lambda: heartbeat.recorded(
            store, since=clock.now() - dt.timedelta(days=1)), refresh), extra=extra)


def build_reconciler(settings: Settings, options: Options,
                     **overrides: Any) -> tuple[Reconciler, TokenKeeper]:
    """The reconciler over the services built for the actor ``reconciler``, with the
    alerts, verification and spec watch the settings ask for, and the keeper of the token
    it uses. ``overrides`` replace any of the reconciler's keyword arguments (tests)."""
    services = build_services(settings, actor="reconciler")
    store = services.store
    secrets = notify.load_secrets(store.read_json, store.paths.alerting_secrets())
    policy = alert_policy(settings)
    notifier = notify.from_settings(settings, secrets, audit=services.audit, actor="reconciler")
    verifier = build_verifier(settings, store, services.certificates.update_status,
                              services.audit, probes=services.probes,
                              policy=services.targets,
                              on_divergence=AlertOnDivergence(notifier)
                              if notifier is not None else None)  # alerts, unlike the API's
    verify_interval = dt.timedelta(seconds=settings.verify_interval_seconds)
    kwargs: dict[str, Any] = {"pool": services.pools.threads(options.workers, "reconcile"),
                              "notifier": notifier, "options": options, "policy": policy,
                              "verifier": verifier, "verify_interval": verify_interval,
                              "revocations": services.revocation,
                              "retirements": services.retirement,
                              "replacements": services.replacements,
                              "heartbeats": Heartbeats(store)}
    if settings.reconcile_watch_seconds > 0:
        kwargs["watch"] = SpecWatch(store, dt.datetime.now(dt.timezone.utc), WatchOptions(
            interval=settings.reconcile_watch_seconds,
            fallback_interval=settings.reconcile_watch_fallback_seconds))
    kwargs.update(overrides)
    return (Reconciler(store, services.certificates,
                       DueIndex(store, policy, verify_interval=verify_interval), **kwargs),
            TokenKeeper(store))
