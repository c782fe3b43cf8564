"""The Flask application factory and the wiring of every service.

``create_app(settings)`` builds everything once per process; gunicorn calls
``create_app()`` (settings from the file named by ``CERTLOCKER_CONFIG`` and the
environment). Nothing below the API reads Flask globals.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from flask import Flask

from . import logs
from . import settings as settings_mod
from .audit.chain import AuditLog
from .clock import SystemClock
from .credentials.keys import KeyRing
from .credentials.service import CredentialService
from .credentials.tokens import TokenMinter
from .delivery.verify import under_policy
from .issuance.acme_issuer import AcmeIssuer
from .issuance.base import Issuer
from .issuance.vault_pki import VaultPkiIssuer
from .lifecycle.alerts import policy_from_settings as alert_policy
from .lifecycle.backoff import BackoffPolicy
from .lifecycle.due_index import DueIndex
from .lifecycle.issuer_secrets import StoreIssuerSecrets
from .lifecycle.retirement import RetiredRecords, RetirementService
from .lifecycle.revocation import RevocationService
from .lifecycle.service import HOLDER, CertificateService
from .lifecycle.target_allowlist import AllowList
from .lifecycle.local_challenges import LocalFirstChallenges
from .lifecycle.vault_adapters import StoreAccounts, StoreChallenges
from .lifecycle.verification import Verifier, verifier_for
from .metrics.collector import AcmeRequestMetrics, IssuanceMetrics
from .settings import Settings
from .token_keeper import TokenKeeper
from .vault.audit_store import vault_audit_lanes
from .vault.identity import ServiceIdentities
from .vault.pki import PkiSigner
from .specs import SpecRules
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
    return Services(
        settings, store, challenges, certificates, keyring, credentials, audit,
        verifier=verifier_for(settings, store, certificates.update_status, audit, clock=clock,
                              policy=targets),
        revocation=RevocationService(store, certificates, under_policy(targets), audit=audit,
                                     actor=actor, replace_timeout=lease_ttl),
        retirement=RetirementService(store, holder=HOLDER, lease_ttl=lease_ttl, audit=audit,
                                     issuers=issuers, credentials=credentials,
                                     probe=under_policy(targets), actor=actor,
                                     probe_timeout=float(settings.verify_timeout_seconds),
                                     names=certificates.ownership),
        targets=targets)


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or settings_mod.load()
    logs.configure(settings.log_format, settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if services is None:
        services = build_services(settings)
        # Each worker keeps the token alive too, so an API without a long-running
        # reconciler does not lapse; a renewal by one leaves the others nothing to do.
        TokenKeeper(services.store).start()
    app.extensions["certlocker"] = services

    from .api import (audit, bundles, certificates, credentials, dashboard, discovery,
                      grants, lifecycle_actions, metrics, openapi, problems, system,
                      verification, wellknown)

    problems.init_app(app)
    for module in (wellknown, certificates, lifecycle_actions, verification, bundles,
                   credentials, grants, system, audit, discovery, metrics, openapi,
                   dashboard):
        app.register_blueprint(module.bp)
    return app
