"""The composition root: the one place that builds certlocker's services from settings.

The API (``app.create_app``) and the reconciler process (``reconcile_cmd``) both take
what they run from here, so the reconciler never imports Flask and no package below
builds its own collaborators. Every constructor of an adapter (Vault store, issuers,
audit lanes, credentials, discovery, metrics) is called in this module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Callable

from . import notify
from .acmeserver.bindings import Bindings
from .acmeserver.nonces import Nonces
from .acmeserver.secret import ServerSecret
from .acmeserver.server import AcmeServer, ServerOptions
from .audit.chain import AuditLog
from .audit.recorder import Auditor
from .clock import Clock, SystemClock
from .credentials.keys import KeyRing
from .credentials.service import CredentialService
from .credentials.tokens import TokenMinter
from .delivery import verify as probes
from .delivery.verify import under_policy
from .discovery.service import DiscoveryService
from .issuance.acme_issuer import AcmeIssuer
from .issuance.base import Issuer
from .issuance.vault_pki import VaultPkiIssuer
from .lifecycle import heartbeat
from .lifecycle.alerts import policy_from_settings as alert_policy
from .lifecycle.backoff import BackoffPolicy
from .lifecycle.due_index import DueIndex
from .lifecycle.heartbeat import Heartbeats
from .lifecycle.issuer_secrets import StoreIssuerSecrets
from .lifecycle.local_challenges import LocalFirstChallenges
from .lifecycle.ports import Store
from .lifecycle.reconciler import Options, Reconciler
from .lifecycle.retirement import RetiredRecords, RetirementService
from .lifecycle.revocation import RevocationService
from .lifecycle.service import HOLDER, CertificateService
from .lifecycle.spec_watch import SpecWatch, WatchOptions
from .lifecycle.target_allowlist import AllowList
from .lifecycle.vault_adapters import StoreAccounts, StoreChallenges
from .lifecycle.verification import (AlertOnDivergence, DivergenceHook, PolicySource, StatusChange,
                                     Verifier, load_anchors)
from .metrics.collector import AcmeRequestMetrics, InventoryCollector, IssuanceMetrics
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


def build_services(settings: Settings, actor: str = "certlocker") -> Services:
    clock = SystemClock()
    store = VaultStore.connect(settings.vault_addr, settings.vault_token, settings.paths,
                               settings.vault_ca_cert, keep_versions=settings.keep_versions,
                               retry_seconds=settings.vault_retry_seconds, own_token=True,
                               token_file=settings.vault_token_file,
                               spec_rules=SpecRules.from_settings(settings))
    audit = AuditLog(vault_audit_lanes(store), clock)
    challenges = LocalFirstChallenges(StoreChallenges(store))
    issuers: dict[str, Issuer] = {}
    for name, conf in settings.issuers.items():
        if conf.type == "acme":
            issuers[name] = AcmeIssuer(conf, StoreAccounts(store, conf.directory_url or ""),
                                       challenges, timeout=settings.issuance_timeout_seconds,
                                       secrets=StoreIssuerSecrets(store, name),
                                       audit=audit, actor=actor,
                                       request_observer=AcmeRequestMetrics())
        elif conf.type == "vault-pki":
            issuers[name] = VaultPkiIssuer(conf, PkiSigner(store.hvac, conf.pki_mount or "",
                                                           conf.pki_role or ""))
    verify_every = dt.timedelta(seconds=settings.verify_interval_seconds)
    certificates = CertificateService(store, issuers, clock=clock,
                                      workers=settings.issuance_workers,
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
        audit=audit)
    lease_ttl = settings.issuance_timeout_seconds + 60
    targets = AllowList(settings.targets, store,
                        refresh=float(settings.targets_refresh_seconds))
    revocation = RevocationService(store, certificates, under_policy(targets), audit=audit,
                                   actor=actor, replace_timeout=lease_ttl)
    return Services(
        settings, store, challenges, certificates, keyring, credentials, audit,
        verifier=build_verifier(settings, store, certificates.update_status, audit,
                                clock=clock, policy=targets),
        revocation=revocation,
        retirement=RetirementService(store, holder=HOLDER, lease_ttl=lease_ttl, audit=audit,
                                     issuers=issuers, credentials=credentials,
                                     probe=under_policy(targets), actor=actor,
                                     probe_timeout=float(settings.verify_timeout_seconds),
                                     names=certificates.ownership),
        targets=targets,
        discovery=DiscoveryService(store, audit=audit, policy=targets),
        service_login=ServiceLogin(store, settings.jwt_role),
        metrics=_inventory_metrics(settings, store, clock),
        acme=_acme_server(settings, store, certificates, revocation, issuers, credentials,
                          audit, clock))


def _acme_server(settings: Settings, store: VaultStore, certificates: CertificateService,
                 revocation: RevocationService, issuers: dict[str, Issuer],
                 credentials: CredentialService, audit: AuditLog,
                 clock: Clock) -> AcmeServer:
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
        nonces=Nonces(store, lambda: secret.key("nonce")), audit=audit, clock=clock)



def build_verifier(settings: Settings, store: Store,
                   update_status: Callable[[CertificateRef, StatusChange], CertificateStatus],
                   audit: Auditor | None = None, *, clock: Clock | None = None,
                   on_divergence: DivergenceHook | None = None,
                   policy: PolicySource | None = None) -> Verifier:
    """A ``Verifier`` from the settings (timeouts, parallelism, grace, each issuer's
    ``trust_roots``) and the target allow-list: ``policy``, else the settings' extended
    by the administrator's Vault document."""
    policy = policy or AllowList(settings.targets, store,
                                 refresh=float(settings.targets_refresh_seconds))
    return Verifier(
        store, update_status, probe=probes.under_policy(policy), policy=policy,
        anchors=load_anchors({n: i.trust_roots for n, i in settings.issuers.items()}),
        audit=audit, clock=clock, timeout=float(settings.verify_timeout_seconds),
        parallelism=settings.verify_parallelism,
        grace=dt.timedelta(seconds=settings.verify_grace_seconds),
        on_divergence=on_divergence)


def _inventory_metrics(settings: Settings, store: VaultStore,
                       clock: Clock) -> InventoryCollector:
    refresh = settings.metrics_refresh_seconds
    return InventoryCollector(
        SummaryCache(lambda: load_rows(store, clock.now()), refresh),
        SummaryCache(lambda: store.token_life().expires_at(clock.now()), refresh),
        SummaryCache(lambda: heartbeat.recorded(
            store, since=clock.now() - dt.timedelta(days=1)), refresh))


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
                              services.audit, policy=services.targets,
                              on_divergence=AlertOnDivergence(notifier)
                              if notifier is not None else None)  # alerts, unlike the API's
    verify_interval = dt.timedelta(seconds=settings.verify_interval_seconds)
    kwargs: dict[str, Any] = {"notifier": notifier, "options": options, "policy": policy,
                              "verifier": verifier, "verify_interval": verify_interval,
                              "revocations": services.revocation,
                              "retirements": services.retirement,
                              "heartbeats": Heartbeats(store)}
    if settings.reconcile_watch_seconds > 0:
        kwargs["watch"] = SpecWatch(store, dt.datetime.now(dt.timezone.utc), WatchOptions(
            interval=settings.reconcile_watch_seconds,
            fallback_interval=settings.reconcile_watch_fallback_seconds))
    kwargs.update(overrides)
    return (Reconciler(store, services.certificates,
                       DueIndex(store, policy, verify_interval=verify_interval), **kwargs),
            TokenKeeper(store))
