"""One frozen settings object, read once from a TOML file and the environment.

Precedence: environment over file over defaults. Environment names are ``CERTLOCKER_``
plus the upper-cased key; issuers nest with ``__``, e.g.
``CERTLOCKER_ISSUERS__PEBBLE__DIRECTORY_URL``. ``load`` validates everything and raises
``ConfigurationError`` naming the bad key, so a bad deployment fails at start, not on
the first request.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from .delivery.target_policy import KEYS as TARGET_KEYS, TargetPolicy
from .errors import ConfigurationError
from .models import KeyType
from .names import component
from .paths import VaultPaths

ISSUER_TYPES = ("acme", "vault-pki")
CLIENT_VARIABLES = ("url",)  # CERTLOCKER_URL: where the CLI finds the API
CHALLENGES = ("http-01", "dns-01")


@dataclasses.dataclass(frozen=True)
class IssuerSettings:
    name: str
    type: str = "acme"
    directory_url: str | None = None
    contact: str | None = None
    ca_bundle: str | None = None  # PEM file trusted for the directory's TLS
    profile: str | None = None
    preferred_chain: str | None = None
    eab: bool = False  # kid + HMAC key are read from Vault (system/acme/eab/<name>)
    challenge: str = "http-01"
    ip_addresses: bool = False  # may this CA issue for IP identifiers?
    pki_mount: str | None = None  # vault-pki only
    pki_role: str | None = None
    caa_identities: tuple[str, ...] = ()  # issuer domain names this CA accepts in CAA
    trust_roots: str | None = None  # PEM file: roots of a private CA, for served-cert checks
    caa_resolver: str | None = None  # "host[:port]" asked for CAA; None: system resolver
    # dns-01 provider options ({"provider": "rfc2136", "server": ..., "zone": ...}); its
    # secrets (TSIG key, API tokens) are read from Vault at system/dns/<name>, never here.
    dns: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Rate limits kept by certlocker across every worker and replica ([issuers.<n>.limits],
    # see RateLimitSettings), the ACME accounts orders are spread over, and the issuer
    # that takes over when this one fails or is exhausted (lifecycle/governed_issuer.py).
    limits: "RateLimitSettings | None" = None
    accounts: int = 1
    fallback: str | None = None
    # How long a certificate may wait for this issuer (its own limits, or the CA's
    # Retry-After) before the fallback issues it instead; never more than half the time
    # left on the certificate in service.
    fallback_after_seconds: int = 3600

    def validate(self) -> None:
        where = f"issuers.{self.name}"
        if not 1 <= self.accounts <= 32:
            raise ConfigurationError(f"{where}.accounts must be between 1 and 32")
        if self.accounts > 1 and self.type != "acme":
            raise ConfigurationError(f"{where}.accounts: only an ACME issuer has accounts")
        if self.limits is not None and self.type != "acme":
            raise ConfigurationError(f"{where}.limits: only ACME issuers are rate limited")
        if (self.limits is not None or self.accounts > 1) and not re.fullmatch(
                r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", self.name):
            # Its reservations live at system/ratelimits/<name>/...
            raise ConfigurationError(f"{where}: an issuer with limits or several accounts "
                                     "needs a name of lowercase letters, digits and '-'")
        if self.fallback == self.name:
            raise ConfigurationError(f"{where}.fallback must name another issuer")
        if not 0 <= self.fallback_after_seconds <= 30 * 86400:
            raise ConfigurationError(f"{where}.fallback_after_seconds must be 0..2592000")
        if self.type not in ISSUER_TYPES:
            raise ConfigurationError(f"{where}.type must be one of {ISSUER_TYPES}")
        if self.type == "acme":
            _require_url(f"{where}.directory_url", self.directory_url)
        if self.type == "vault-pki" and not (self.pki_mount and self.pki_role):
            raise ConfigurationError(f"{where}: vault-pki needs pki_mount and pki_role")
        # Both become a Vault path and are rendered into certlocker's policy (HCL).
        if self.type == "vault-pki" and not (
                re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", self.pki_mount or "")
                and re.fullmatch(r"[A-Za-z0-9_.-]+", self.pki_role or "")
                and ".." not in f"{self.pki_mount}/{self.pki_role}"):
            raise ConfigurationError(f"{where}: pki_mount/pki_role must be plain Vault path "
                                     "segments (letters, digits, '_', '.', '-')")
        if self.challenge not in CHALLENGES:
            raise ConfigurationError(f"{where}.challenge must be one of {CHALLENGES}")
        if not isinstance(self.dns, Mapping):
            raise ConfigurationError(f"{where}.dns must be a table of provider options")
        if self.challenge == "dns-01" and self.type == "acme" and not self.dns.get("provider"):
            raise ConfigurationError(f"{where}.dns.provider is required for dns-01")
        if {"secret", "tsig_secret", "token", "password"} & set(self.dns):
            raise ConfigurationError(f"{where}.dns: secrets belong in Vault "
                                     f"(system/dns/{self.name}), not in settings")
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise ConfigurationError(f"{where}.ca_bundle: no file at {self.ca_bundle}")
        if self.trust_roots and not Path(self.trust_roots).is_file():
            raise ConfigurationError(f"{where}.trust_roots: no file at {self.trust_roots}")


LIMIT_KEYS = ("orders_per_window", "order_window_seconds", "certificates_per_domain",
              "domain_window_seconds", "requests_per_second", "max_wait_seconds",
              "margin_seconds")


@dataclasses.dataclass(frozen=True)
class RateLimitSettings:
    """``[issuers.<name>.limits]``: what certlocker keeps every issuance inside.

    ``orders_per_window`` new orders per ACME account in any ``order_window_seconds``
    (sliding); ``certificates_per_domain`` certificates per registered domain in any
    ``domain_window_seconds`` (default a week); ``requests_per_second`` HTTP requests to
    the CA per process. A certificate whose slot is at most ``max_wait_seconds`` away
    waits for it in its worker; a later one is scheduled for its slot. ``margin_seconds``
    is added to each window for the time between a slot and the CA seeing the order.
    """

    orders_per_window: int | None = None
    order_window_seconds: int = 3 * 3600
    certificates_per_domain: int | None = None
    domain_window_seconds: int = 7 * 86400
    requests_per_second: float | None = None
    max_wait_seconds: int = 30
    margin_seconds: float = 2.0

    @classmethod
    def parse(cls, where: str, table: Any) -> "RateLimitSettings":
        """:raises ConfigurationError: naming the bad key."""
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{where} must be a table of {', '.join(LIMIT_KEYS)}")
        unknown = set(table) - set(LIMIT_KEYS)
        if unknown:
            raise ConfigurationError(f"unknown settings: {where}."
                                     + f", {where}.".join(sorted(unknown)))
        values: dict[str, Any] = {}
        for key, value in table.items():
            try:
                number = float(value) if key in ("requests_per_second",
                                                 "margin_seconds") else int(value)
            except (TypeError, ValueError):
                raise ConfigurationError(f"{where}.{key} must be a number") from None
            values[key] = number
        limits = cls(**values)
        limits.validate(where)
        return limits

    def validate(self, where: str) -> None:
        for key in ("orders_per_window", "certificates_per_domain"):
            value = getattr(self, key)
            if value is not None and not 1 <= value <= 1_000_000:
                raise ConfigurationError(f"{where}.{key} must be between 1 and 1000000")
        for key in ("order_window_seconds", "domain_window_seconds"):
            if not 1 <= getattr(self, key) <= 366 * 86400:
                raise ConfigurationError(f"{where}.{key} must be between 1 and 31622400")
        if self.requests_per_second is not None and not 0.01 <= self.requests_per_second <= 10000:
            raise ConfigurationError(f"{where}.requests_per_second must be 0.01..10000")
        if not 0 <= self.max_wait_seconds <= 3600:
            raise ConfigurationError(f"{where}.max_wait_seconds must be 0..3600")
        if not 0 <= self.margin_seconds <= 3600:
            raise ConfigurationError(f"{where}.margin_seconds must be 0..3600")


@dataclasses.dataclass(frozen=True)
class Settings:
    vault_addr: str
    vault_token: str = dataclasses.field(repr=False)
    # Where vault_token was read from (None when given directly): a rotated file is
    # picked up by every process without a restart.
    vault_token_file: str | None = None
    public_url: str = "http://127.0.0.1:8080"
    vault_ca_cert: str | None = None
    kv_mount: str = "certlocker"
    auth_prefix: str = "certlocker-"
    environments: tuple[str, ...] = ("dev",)
    jwt_audience: str = "certlocker"
    jwt_role: str = "service"
    jwt_ttl_seconds: int = 3600
    issuers: Mapping[str, IssuerSettings] = dataclasses.field(default_factory=dict)
    default_issuer: str | None = None
    default_key_type: KeyType = KeyType.EC_P256
    issuance_workers: int = 8
    issuance_timeout_seconds: int = 300
    # How long one Vault call rides out a Raft leader election or a restart before it
    # fails with 503 (the reconciler then backs off as a whole); a seal is not waited for.
    vault_retry_seconds: int = 10
    # First delay after a failed issuance; doubles per failure, capped by the lifetime.
    retry_base_seconds: int = 300
    keep_versions: int = 3  # KV versions of certs/... kept; older ones are destroyed
    max_request_bytes: int = 64 * 1024
    log_format: str = "json"
    log_level: str = "INFO"
    verify_timeout_seconds: int = 5  # connect + handshake, per node
    verify_parallelism: int = 32
    verify_grace_seconds: int = 3600  # divergence after delivery tolerated this long
    verify_interval_seconds: int = 900  # the reconciler re-checks every target this often
    # How long the fleet takes to pick a new certificate up (the agents'
    # static_secret_render_interval: 30 s in templates/agent.hcl): a mass replacement's
    # ETA under rate limits counts it after the last issuance.
    delivery_seconds: int = 30
    metrics_refresh_seconds: int = 60  # the /metrics inventory summary is at most this old
    # When set, GET /metrics needs "Authorization: Bearer <metrics_token>": the metrics
    # name every team's certificates and target addresses. Read from metrics_token_file
    # at start when given.
    metrics_token: str | None = dataclasses.field(default=None, repr=False)
    metrics_token_file: str | None = None
    # reconciler and alerts (lifecycle/reconciler.py, lifecycle/alerts.py, notify.py)
    reconcile_sweep_seconds: int = 3600  # a sweep pass (repairs hints) at most this often
    # Vault requests per minute the rolling sweep makes, all reconcilers together: the
    # idle load is flat in the inventory, a pass over 100k takes about 11 h at 600.
    # 0: a full sweep every reconcile_sweep_seconds (docs/decisions/0007-steady-sweep.md).
    reconcile_sweep_budget_per_minute: int = 600
    # Seconds between reconciler ticks: how late a due retry or verification can start.
    reconcile_interval_seconds: int = 60
    # Specs written straight into Vault: looked for this often (0: only by the sweep);
    # with HashiCorp Vault, which cannot scan, new ones only, every fallback interval.
    reconcile_watch_seconds: int = 20
    reconcile_watch_fallback_seconds: int = 300
    alert_max_attempts: int = 5  # consecutive failures before a human is told
    alert_expiry_floor_seconds: int = 7 * 86400  # alert when expiry is closer than this
    # ... and, while renewal is failing, when it is closer than this (however short the
    # certificate: a 6-day one's own floor would be 14.4 h; lifecycle/policy/alerts.py)
    alert_failing_floor_seconds: int = 48 * 3600
    alert_webhook_url: str | None = dataclasses.field(default=None, repr=False)
    alert_webhook_slack: bool = False  # send {"text": ...} (Slack-compatible) instead
    alert_webhook_token: str | None = dataclasses.field(default=None, repr=False)
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_to: tuple[str, ...] = ()
    smtp_username: str | None = None
    smtp_password: str | None = dataclasses.field(default=None, repr=False)
    smtp_starttls: bool = False
    # Where verification, revocation checks and discovery scans may connect ([targets]
    # allowed_networks, allowed_ports, allowed_hosts; delivery/target_policy.py). Empty:
    # nowhere. An administrator's Vault document can extend it (lifecycle/target_allowlist.py),
    # re-read at most every targets_refresh_seconds.
    targets: TargetPolicy = TargetPolicy()
    targets_refresh_seconds: int = 30
    # The ACME server (<public_url>/acme/<env>/directory): which issuer its orders go to
    # (None: default_issuer), and how long a finalize waits for the certificate before
    # answering "processing" (the client polls the order after that).
    acme_server_issuer: str | None = None
    acme_server_finalize_wait_seconds: int = 30
    # Signs dashboard session cookies; None: generated once and kept in Vault
    # (system/dashboard/session-secret) so every worker and replica agrees.
    session_secret: str | None = dataclasses.field(default=None, repr=False)

    @property
    def paths(self) -> VaultPaths:
        return VaultPaths(self.kv_mount, self.auth_prefix)

    @property
    def jwt_issuer(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def jwks_url(self) -> str:
        return self.jwt_issuer + "/.well-known/jwks.json"

    def issuer(self, name: str) -> IssuerSettings:
        return self.issuers[name]

    def validate(self) -> "Settings":
        _require_url("vault_addr", self.vault_addr)
        _require_url("public_url", self.public_url)
        if not self.vault_token:
            raise ConfigurationError(
                "vault_token is empty: set CERTLOCKER_VAULT_TOKEN or vault_token_file")
        for env in self.environments:
            try:
                component("environments", env)
            except Exception as exc:
                raise ConfigurationError(f"environments: {env!r} is not a valid name") from exc
        if not self.environments:
            raise ConfigurationError("environments must name at least one environment")
        # Vault accepts JWTs with no or decade-long exp: the limit must be ours.
        if not 60 <= self.jwt_ttl_seconds <= 86400:
            raise ConfigurationError("jwt_ttl_seconds must be between 60 and 86400")
        if not 1 <= self.keep_versions <= 100:
            raise ConfigurationError("keep_versions must be between 1 and 100")
        if not 1 <= self.issuance_workers <= 256:
            raise ConfigurationError("issuance_workers must be between 1 and 256")
        if not 1 <= self.verify_parallelism <= 256 or not 1 <= self.verify_timeout_seconds <= 60:
            raise ConfigurationError("verify_parallelism must be 1..256 and "
                                     "verify_timeout_seconds 1..60")
        if not 10 <= self.verify_interval_seconds <= 7 * 86400:
            raise ConfigurationError("verify_interval_seconds must be 10..604800")
        if not 0 <= self.delivery_seconds <= 86400:
            raise ConfigurationError("delivery_seconds must be 0..86400")
        if not 0 <= self.vault_retry_seconds <= 600:
            raise ConfigurationError("vault_retry_seconds must be between 0 and 600")
        if not 1 <= self.retry_base_seconds <= 86400:
            raise ConfigurationError("retry_base_seconds must be between 1 and 86400")
        if self.metrics_refresh_seconds < 0 or self.verify_grace_seconds < 0:
            raise ConfigurationError("metrics_refresh_seconds and verify_grace_seconds "
                                     "must not be negative")
        for issuer in self.issuers.values():
            issuer.validate()
            if issuer.fallback is not None and issuer.fallback not in self.issuers:
                raise ConfigurationError(f"issuers.{issuer.name}.fallback: "
                                         f"{issuer.fallback!r} is not configured")
            limits = issuer.limits
            if (limits is not None and limits.max_wait_seconds * 2
                    > self.issuance_timeout_seconds):
                # The wait happens under the certificate's lease, inside its timeout.
                raise ConfigurationError(f"issuers.{issuer.name}.limits.max_wait_seconds "
                                         "must be at most half issuance_timeout_seconds")
        if self.acme_server_issuer and self.acme_server_issuer not in self.issuers:
            raise ConfigurationError(f"acme_server_issuer {self.acme_server_issuer!r} is "
                                     "not configured")
        if not 0 <= self.acme_server_finalize_wait_seconds <= 300:
            raise ConfigurationError("acme_server_finalize_wait_seconds must be 0..300")
        if self.default_issuer and self.default_issuer not in self.issuers:
            raise ConfigurationError(f"default_issuer {self.default_issuer!r} is not configured")
        if self.metrics_token is not None and not (
                16 <= len(self.metrics_token) <= 4096 and self.metrics_token.isascii()
                and self.metrics_token.isprintable() and " " not in self.metrics_token):
            raise ConfigurationError("metrics_token must be 16 to 4096 printable ASCII "
                                     "characters without spaces")
        if self.session_secret is not None and len(self.session_secret) < 32:
            raise ConfigurationError("session_secret must be at least 32 characters")
        if not 0 <= self.targets_refresh_seconds <= 3600:
            raise ConfigurationError("targets.refresh_seconds must be between 0 and 3600")
        if self.log_format not in ("json", "text"):
            raise ConfigurationError("log_format must be json or text")
        return self


def load(path: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``path`` (or ``$CERTLOCKER_CONFIG``) and the environment.

    :raises ConfigurationError: if any value is missing or invalid.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("CERTLOCKER_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read settings file {path}: {exc}") from exc
    _overlay_environment(raw, environ)
    return from_mapping(raw)


def from_mapping(raw: Mapping[str, Any]) -> Settings:
    raw = dict(raw)
    token_file = raw.pop("vault_token_file", None)
    if token_file and not raw.get("vault_token"):
        try:
            raw["vault_token"] = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"vault_token_file: {exc.strerror}") from exc
        raw["vault_token_file"] = str(token_file)
    metrics_file = raw.get("metrics_token_file")
    if metrics_file and not raw.get("metrics_token"):
        try:
            raw["metrics_token"] = Path(metrics_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"metrics_token_file: cannot read {metrics_file}") from exc
    issuers_raw = raw.pop("issuers", {}) or {}
    issuers = {}
    for name, conf in issuers_raw.items():
        conf = dict(conf)
        if "caa_identities" in conf:
            conf["caa_identities"] = tuple(_as_list(conf["caa_identities"]))
        for flag in ("eab", "ip_addresses"):
            if flag in conf:
                conf[flag] = _as_bool(f"issuers.{name}.{flag}", conf[flag])
        if "limits" in conf:
            conf["limits"] = RateLimitSettings.parse(f"issuers.{name}.limits", conf["limits"])
        for key in ("accounts", "fallback_after_seconds"):
            if key in conf:
                try:
                    conf[key] = int(conf[key])
                except (TypeError, ValueError):
                    raise ConfigurationError(f"issuers.{name}.{key} must be an integer") from None
        try:
            issuers[name] = IssuerSettings(name=name, **conf)
        except TypeError as exc:
            raise ConfigurationError(f"issuers.{name}: {exc}") from exc
    _target_settings(raw)
    fields = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(raw) - fields
    if unknown:
        raise ConfigurationError(f"unknown settings: {', '.join(sorted(unknown))}")
    if "environments" in raw:
        raw["environments"] = tuple(_as_list(raw["environments"]))
    for key in ("jwt_ttl_seconds", "issuance_workers", "issuance_timeout_seconds", "keep_versions",
                "max_request_bytes", "verify_timeout_seconds", "verify_parallelism",
                "verify_grace_seconds", "metrics_refresh_seconds", "verify_interval_seconds",
                "vault_retry_seconds", "retry_base_seconds", "targets_refresh_seconds",
                "acme_server_finalize_wait_seconds", "delivery_seconds"):
        if key in raw:
            try:
                raw[key] = int(raw[key])
            except (TypeError, ValueError):
                raise ConfigurationError(f"{key} must be an integer") from None
    _alert_settings(raw)
    if "default_key_type" in raw:
        try:
            raw["default_key_type"] = KeyType(raw["default_key_type"])
        except ValueError:
            raise ConfigurationError("default_key_type is not a known key type") from None
    if "vault_addr" not in raw:
        raise ConfigurationError("vault_addr is required (CERTLOCKER_VAULT_ADDR)")
    raw.setdefault("vault_token", "")
    if not raw.get("default_issuer") and len(issuers) == 1:
        raw["default_issuer"] = next(iter(issuers))
    return Settings(issuers=issuers, **raw).validate()


def _target_settings(raw: dict[str, Any]) -> None:
    """``[targets]`` (or ``CERTLOCKER_TARGETS__*``) into ``targets`` and
    ``targets_refresh_seconds``; every entry is validated here, at start."""
    table = raw.pop("targets", None)
    if table is None:
        return
    if not isinstance(table, Mapping):
        raise ConfigurationError("targets must be a table: allowed_networks, allowed_ports, "
                                 "allowed_hosts, refresh_seconds")
    unknown = set(table) - {*TARGET_KEYS, "refresh_seconds"}
    if unknown:
        raise ConfigurationError(f"unknown settings: targets.{', targets.'.join(sorted(unknown))}")
    try:
        raw["targets"] = TargetPolicy.parse(*(_as_list(table.get(key) or [])
                                              for key in TARGET_KEYS))
    except ValueError as exc:
        raise ConfigurationError(f"targets.{exc}") from None
    if "refresh_seconds" in table:
        raw["targets_refresh_seconds"] = table["refresh_seconds"]


def _alert_settings(raw: dict[str, Any]) -> None:
    for key in ("reconcile_sweep_seconds", "reconcile_interval_seconds", "alert_max_attempts",
                "alert_expiry_floor_seconds", "smtp_port", "reconcile_watch_seconds",
                "reconcile_watch_fallback_seconds", "alert_failing_floor_seconds",
                "reconcile_sweep_budget_per_minute"):
        if key in raw:
            try:
                raw[key] = int(raw[key])
            except (TypeError, ValueError):
                raise ConfigurationError(f"{key} must be an integer") from None
            if raw[key] < (0 if key in ("alert_expiry_floor_seconds",
                                        "alert_failing_floor_seconds",
                                        "reconcile_watch_seconds",
                                        "reconcile_sweep_budget_per_minute") else 1):
                raise ConfigurationError(f"{key} is out of range")
    for key in ("alert_webhook_slack", "smtp_starttls"):
        if key in raw:
            raw[key] = _as_bool(key, raw[key])
    if "smtp_to" in raw:
        raw["smtp_to"] = tuple(_as_list(raw["smtp_to"]))
    if raw.get("alert_webhook_url"):
        parsed = urlparse(str(raw["alert_webhook_url"]))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            # The URL itself may carry a token (Slack's do): never echo it.
            raise ConfigurationError("alert_webhook_url must be an http(s) URL")
    if raw.get("smtp_host") and not (raw.get("smtp_from") and raw.get("smtp_to")):
        raise ConfigurationError("smtp_host needs smtp_from and smtp_to")


def _overlay_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for key, value in environ.items():
        if not key.startswith("CERTLOCKER_") or key == "CERTLOCKER_CONFIG":
            continue
        parts = key[len("CERTLOCKER_"):].lower().split("__")
        if parts[0] in CLIENT_VARIABLES or parts[0].startswith("dev_"):
            continue  # the CLI's and the dev stack's variables, not service settings
        target = raw
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    # The standard Vault variables work as well as ours.
    if "vault_addr" not in raw and environ.get("VAULT_ADDR"):
        raw["vault_addr"] = environ["VAULT_ADDR"]
    if "vault_ca_cert" not in raw and environ.get("VAULT_CACERT"):
        raw["vault_ca_cert"] = environ["VAULT_CACERT"]


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{key} must be true or false")


def _require_url(key: str, value: str | None) -> None:
    parsed = urlparse(value or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigurationError(f"{key} must be an http(s) URL, got {value!r}")
