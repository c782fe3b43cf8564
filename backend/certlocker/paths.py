"""The only code that builds a Vault path.

Every component is validated (``names.component``) before it becomes part of a path, so
no caller input can climb out of its subtree. KV v2 paths here are *logical* (relative to
the mount, as hvac's kv.v2 API takes them); ``api_path`` gives the full HTTP API path a
consumer uses (``<mount>/data/<logical>``), which is what policies name.
"""

from __future__ import annotations

import dataclasses
import hashlib

from .models import CertificateRef
from .names import component

# The audit trail is this many hash chains ("lanes"); each writing process appends to one
# of them, so writers do not contend for one chain's next seq. See
# docs/decisions/0005-audit-lanes.md. Readers walk every lane, so the number is fixed.
AUDIT_LANES = 16


@dataclasses.dataclass(frozen=True)
class VaultPaths:
    mount: str = "certlocker"
    auth_prefix: str = "certlocker-"  # one JWT auth mount per environment: <prefix><env>

    # -- per certificate ----------------------------------------------------------------
    def spec(self, ref: CertificateRef) -> str:
        return "specs/" + self._ref(ref)

    def status(self, ref: CertificateRef) -> str:
        return "status/" + self._ref(ref)

    def cert(self, ref: CertificateRef) -> str:
        return "certs/" + self._ref(ref)

    def inflight(self, ref: CertificateRef) -> str:
        """Key and order of an issuance in flight: certlocker may read these, and deletes
        them when the certificate is stored."""
        return "system/inflight/" + self._ref(ref)

    def lease(self, ref: CertificateRef) -> str:
        return "system/leases/" + self._ref(ref)

    def leaf(self, ref: CertificateRef) -> str:
        """The current leaf PEM (public, no key): certlocker cannot read certs/ back,
        and revoking at the CA needs the certificate."""
        return "system/leaves/" + self._ref(ref)

    # -- name ownership (ownership.py) ----------------------------------------------------
    def grant(self, environment: str, service: str) -> str:
        """The names an administrator granted a service (plain KV fields)."""
        return (f"grants/{component('environment', environment)}/"
                f"{component('service', service)}")

    def name_claim(self, key: str) -> str:
        """Which service holds a name (``ownership.claim_key`` gives ``key``)."""
        if not key or len(key) > 253 or not all(c.isalnum() or c in "-._" for c in key):
            raise ValueError(f"not a claim key: {key[:64]!r}")
        return "system/names/" + key

    def retirement(self, ref: CertificateRef) -> str:
        """The retirement record (phase, steps, the spec as it was): kept for good."""
        return "system/retirements/" + self._ref(ref)

    def retiring(self, ref: CertificateRef) -> str:
        """Present while a retirement is unfinished: what the reconciler follows up."""
        return "system/retiring/" + self._ref(ref)

    # -- listings -------------------------------------------------------------------------
    def specs_dir(self, environment: str | None = None, service: str | None = None) -> str:
        return self._dir("specs", environment, service)

    def status_dir(self, environment: str | None = None, service: str | None = None) -> str:
        return self._dir("status", environment, service)

    def inflight_dir(self, environment: str | None = None, service: str | None = None) -> str:
        return self._dir("system/inflight", environment, service)

    def retirements_dir(self, environment: str | None = None,
                        service: str | None = None) -> str:
        return self._dir("system/retirements", environment, service)

    def retiring_dir(self, environment: str | None = None, service: str | None = None) -> str:
        return self._dir("system/retiring", environment, service)

    # -- mass replacement (lifecycle/replacements.py) -------------------------------------
    def replacement(self, op_id: str) -> str:
        """One replacement operation's record (selector, state, chunk count)."""
        return "system/replacements/" + _hex("replacement", op_id, 32)

    def replacement_chunk(self, op_id: str, index: int) -> str:
        """The ``index``-th chunk of an operation's selected certificates."""
        if not isinstance(index, int) or not 0 <= index < 100_000:
            raise ValueError("a chunk index is 0..99999")
        return f"{self.replacement(op_id)}-items/{index:05d}"

    def replacements_dir(self) -> str:
        return "system/replacements/"

    def replacement_running(self, op_id: str) -> str:
        """Present while the operation runs: what the reconciler follows each tick, so
        finished operations cost it nothing."""
        return "system/replacements-running/" + _hex("replacement", op_id, 32)

    def replacements_running_dir(self) -> str:
        return "system/replacements-running/"

    # -- system -------------------------------------------------------------------------
    def acme_account(self, directory_url: str, index: int = 0) -> str:
        """The account ``index`` of a directory (several when an issuer spreads its
        orders over accounts; the first keeps the path it always had)."""
        key = directory_url if index == 0 else f"{directory_url}#account-{int(index)}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return f"system/acme/accounts/{digest}"

    def rate_book(self, issuer: str, kind: str, key: str) -> str:
        """``system/ratelimits/<issuer>/<kind>/<key>``: one issuer's reservations under
        one limit (``orders``/``account-<n>``, ``domains``/<hex digest of a registered
        domain>), updated with check-and-set by every worker and replica."""
        if kind not in ("orders", "domains"):
            raise ValueError(f"unknown rate-limit kind {kind!r}")
        return (f"system/ratelimits/{component('issuer', issuer)}/{kind}/"
                f"{component('rate-limit key', key)}")

    def acme_eab(self, issuer: str) -> str:
        return f"system/acme/eab/{component('issuer', issuer)}"

    # -- the ACME server (acmeserver/) ----------------------------------------------------
    def acme_server_secret(self) -> str:
        """The key the ACME server's nonces and EAB keys are derived from."""
        return "system/acme-server/secret"

    def acme_binding(self, kid: str) -> str:
        """An External Account Binding: which service an ``eab_kid`` stands for (its
        HMAC key is derived, never stored)."""
        return "system/acme-server/bindings/" + _hex("eab_kid", kid, 32)

    def acme_client_account(self, environment: str, account: str) -> str:
        return (f"system/acme-server/accounts/{component('environment', environment)}/"
                + _hex("account", account, 32))

    def acme_account_key(self, thumbprint: str) -> str:
        """Which account a key (its RFC 7638 thumbprint, hex) belongs to."""
        return "system/acme-server/account-keys/" + _hex("account key", thumbprint, 64)

    def acme_order(self, environment: str, account: str, order: str) -> str:
        return self.acme_orders_dir(environment, account) + _hex("order", order, 32)

    def acme_orders_dir(self, environment: str, account: str) -> str:
        return (f"system/acme-server/orders/{component('environment', environment)}/"
                f"{_hex('account', account, 32)}/")

    def acme_nonce(self, window: str, nonce: str) -> str:
        """A redeemed nonce, filed by the window it was issued in (pruned later)."""
        return self.acme_nonces_dir(window) + _hex("nonce", nonce, 32)

    def acme_nonces_dir(self, window: str | None = None) -> str:
        root = "system/acme-server/nonces/"
        return root if window is None else root + _digits("window", window, 10) + "/"

    def acme_serial(self, serial: str) -> str:
        """Which certificate and order a serial (hex) issued through the ACME server is."""
        if not 1 <= len(serial) <= 40 or not all(c in "0123456789abcdef" for c in serial):
            from .errors import NotFound

            raise NotFound("no such certificate")
        return "system/acme-server/serials/" + serial

    def dns_credentials(self, issuer: str) -> str:
        """Secrets of an issuer's dns-01 provider (e.g. the RFC 2136 TSIG key)."""
        return f"system/dns/{component('issuer', issuer)}"

    def http01(self, token: str) -> str:
        # ACME tokens are base64url (RFC 8555 section 8.3): check before using as a path.
        if not token or len(token) > 256 or not all(c.isalnum() or c in "-_" for c in token):
            from .errors import NotFound

            raise NotFound("no such challenge")
        return f"system/challenges/http-01/{token}"

    def signing_keys(self) -> str:
        return "system/jwt/signing-keys"

    def audit_event(self, seq: int, lane: int = 0) -> str:
        """One event of an audit lane (zero-padded so listings sort by seq)."""
        if not isinstance(seq, int) or seq < 1:
            raise ValueError("audit seq starts at 1")
        return f"{self.audit_events_dir(lane)}{seq:012d}"

    def audit_events_dir(self, lane: int = 0) -> str:
        """Lane 0 is ``audit/events/``, the one chain of releases before lanes, so an
        existing trail simply continues as lane 0; lane N is ``audit/events-NN/``."""
        return "audit/events/" if _lane(lane) == 0 else f"audit/events-{lane:02d}/"

    def audit_head_hint(self, lane: int = 0) -> str:
        return "system/audit-head" if _lane(lane) == 0 else f"system/audit-head-{lane:02d}"

    # -- due index (docs/decisions/0002-due-index.md) ----------------------------------
    def schedule_dir(self, day: str | None = None, minute: str | None = None) -> str:
        """``system/schedule/[<YYYYMMDD>/[<HHMM>/]]``: days, then minutes, then ids."""
        parts = ["system/schedule"]
        if day is not None:
            parts.append(_digits("day", day, 8))
            if minute is not None:
                parts.append(_digits("minute", minute, 4))
        return "/".join(parts) + "/"

    def schedule_entry(self, day: str, minute: str, ref: CertificateRef) -> str:
        self._ref(ref)  # validates every component; the id then joins them with dots
        return self.schedule_dir(day, minute) + ref.id

    def expiry_dir(self, day: str | None = None) -> str:
        """``system/expiry/[<YYYYMMDD>/]``: the day a certificate expires, then ids."""
        return "system/expiry/" + (_digits("day", day, 8) + "/" if day is not None else "")

    def expiry_entry(self, day: str, ref: CertificateRef) -> str:
        self._ref(ref)
        return self.expiry_dir(day) + ref.id

    def index_days(self, index: str) -> str:
        """``system/index-days/<index>``: the days of that index that may hold entries
        (lifecycle/day_folders.py)."""
        if index not in ("schedule", "expiry"):
            raise ValueError(f"unknown index {index!r}")
        return f"system/index-days/{index}"

    def alerting_secrets(self) -> str:
        """SMTP password and webhook token for alert delivery (certlocker reads them)."""
        return "system/alerting"

    def service_generation(self, environment: str, service: str) -> str:
        return (f"system/credentials/{component('environment', environment)}/"
                f"{component('service', service)}")

    def credential_grant(self, environment: str, service: str) -> str:
        """The path whose ``update`` capability lets an operator mint or revoke a
        service's credentials (checked with the operator's own token). Certificate names
        cannot start with '_', so it never collides with a certificate."""
        return self.api_path(
            f"specs/{component('environment', environment)}/"
            f"{component('service', service)}/_credentials")

    def signing_key_grant(self) -> str:
        """The path whose ``update`` capability lets an operator rotate the JWT signing
        key. Nothing is stored there; no environment can be named '_system'."""
        return self.api_path("specs/_system/signing-keys")

    # -- discovery (docs/discovery.md) ----------------------------------------------------
    def discovered(self, sha256: str) -> str:
        """An unmanaged (shadow) certificate found by a scan, keyed by its fingerprint."""
        return "discovered/" + _hex("sha256", sha256.lower(), 64)

    def discovered_dir(self) -> str:
        return "discovered/"

    def discovery_scan(self, scan_id: str) -> str:
        """Progress and result of one endpoint scan (any worker or replica answers)."""
        return "system/discovery/scans/" + _hex("scan id", scan_id, 32)

    def discovery_grant(self) -> str:
        """The path whose ``update`` capability lets an operator run scans, report file
        findings and adopt discoveries. Nothing is stored there; no environment can be
        named '_system'."""
        return self.api_path("specs/_system/discovery")

    def target_policy(self) -> str:
        """The administrator's extension of the target allow-list (``allowed_networks``,
        ``allowed_ports``, ``allowed_hosts``). Under ``specs/_system/`` so the admin
        policy's ``specs/*`` writes it and certlocker's reads it, and no team operator's
        ``specs/+/team-*`` reaches it; listings skip ``_`` entries."""
        return "specs/_system/target-policy"

    def reconciler_heartbeat(self, name: str) -> str:
        """When the reconciler process ``name`` (``<host>-<pid>``) last ticked."""
        return "system/reconcilers/" + component("reconciler", name)

    def reconciler_heartbeats_dir(self) -> str:
        return "system/reconcilers/"

    def dashboard_secret(self) -> str:
        """The key that signs dashboard session cookies, shared by every worker."""
        return "system/dashboard/session-secret"

    # -- auth -----------------------------------------------------------------------------
    def auth_mount(self, environment: str) -> str:
        return self.auth_prefix + component("environment", environment)

    # -- rendering ------------------------------------------------------------------------
    def api_path(self, logical: str) -> str:
        """``certs/prod/api/www`` -> ``certlocker/data/certs/prod/api/www``."""
        return f"{self.mount}/data/{logical}"

    def metadata_path(self, logical: str) -> str:
        return f"{self.mount}/metadata/{logical}"

    def detailed_metadata_path(self, logical: str) -> str:
        """OpenBao's listing that carries each entry's metadata (2.2+; none in Vault)."""
        return f"{self.mount}/detailed-metadata/{logical}"

    @staticmethod
    def _ref(ref: CertificateRef) -> str:
        return "/".join((component("environment", ref.environment),
                         component("service", ref.service),
                         component("name", ref.name)))

    @staticmethod
    def _dir(root: str, environment: str | None, service: str | None) -> str:
        parts = [root]
        if environment is not None:
            parts.append(component("environment", environment))
            if service is not None:
                parts.append(component("service", service))
        return "/".join(parts) + "/"


def _lane(lane: int) -> int:
    if not isinstance(lane, int) or not 0 <= lane < AUDIT_LANES:
        raise ValueError(f"audit lane must be 0 to {AUDIT_LANES - 1}")
    return lane


def _digits(field: str, value: str, length: int) -> str:
    if len(value) != length or not value.isascii() or not value.isdigit():
        raise ValueError(f"{field} must be {length} digits, got {value[:20]!r}")
    return value


def _hex(field: str, value: str, length: int) -> str:
    if len(value) != length or not all(c in "0123456789abcdef" for c in value):
        from .errors import NotFound

        raise NotFound(f"no such {field}")
    return value
