"""Frozen domain records. Pure data: no I/O, no Flask, no hvac.

A certificate is declared by a ``CertificateSpec`` (desired state, written by operators)
and observed through a ``CertificateStatus`` (written by certlocker), like a Kubernetes
resource. ``IssuedCertificate`` is the bundle stored at the service's Vault path; it is
the only record that carries a private key, and it never goes to disk, logs, status or
audit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any, Mapping

from .clock import parse_rfc3339, rfc3339
from .maintenance import MaintenanceWindow
from .maintenance import parse as parse_window


class KeyType(str, enum.Enum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"


class State(str, enum.Enum):
    PENDING = "pending"  # declared, not yet issued
    ISSUING = "issuing"  # an issuance is in flight
    VALID = "valid"  # a current certificate is stored
    FAILED = "failed"  # the last attempt failed; see last_error / next_attempt_at
    REVOKED = "revoked"
    RETIRED = "retired"
    INVALID = "invalid"  # the spec stored in Vault does not parse: never ordered
    REFUSED = "refused"  # the service is not granted every name: never ordered
    EXPIRED = "expired"  # never stored: shown when now is past not_after (lifecycle.shown)


@dataclasses.dataclass(frozen=True)
class CertificateRef:
    """Names one certificate: ``<environment>/<service>/<name>``; id joins them with dots."""

    environment: str
    service: str
    name: str

    @property
    def id(self) -> str:
        return f"{self.environment}.{self.service}.{self.name}"

    @classmethod
    def parse_id(cls, cert_id: str) -> "CertificateRef":
        from .errors import InvalidInput, NotFound
        from .names import component

        parts = cert_id.split(".")
        if len(parts) != 3:
            raise NotFound(f"no certificate with id {cert_id[:200]!r}")
        env, service, name = parts
        try:
            return cls(component("environment", env), component("service", service),
                       component("name", name))
        except InvalidInput:  # no certificate can have this id
            raise NotFound(f"no certificate with id {cert_id[:200]!r}") from None


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a certificate is served: ``address`` is host:port; ``ips`` pins pool nodes."""

    address: str
    sni: str | None = None
    ips: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "sni": self.sni, "ips": list(self.ips)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Target":
        return cls(data["address"], data.get("sni"), tuple(data.get("ips") or ()))


@dataclasses.dataclass(frozen=True)
class CertificateSpec:
    ref: CertificateRef
    dns_names: tuple[str, ...]
    issuer: str
    key_type: KeyType = KeyType.EC_P256
    renew_before: str | None = None  # a duration ("720h", "30d") or a fraction ("0.33")
    targets: tuple[Target, ...] = ()
    owner: str | None = None
    contact: str | None = None
    # A client-held key (the ACME server, or a team that keeps its key on the node): the
    # PEM CSR certlocker orders with; it never sees the key. ``acme_order`` names the ACME
    # order the CSR came with (the certificate for it answers that order).
    csr: str | None = dataclasses.field(default=None, repr=False)
    acme_order: str | None = None
    # When it may be rotated (``maintenance``); None: any time.
    maintenance_window: MaintenanceWindow | None = None
    # The window of its service or team (the administrator's document), set when read;
    # never stored with the spec, and not part of its identity.
    inherited_window: MaintenanceWindow | None = dataclasses.field(default=None,
                                                                   compare=False)
    # The ACME profile to order ("shortlived", "tlsserver"); None: the issuer's profile
    profile: str | None = None
    # Why the record stored for this certificate is not a valid spec (``specs.from_record``):
    # such a spec has no names and is never ordered. None for every valid spec.
    problem: str | None = None

    @classmethod
    def invalid(cls, ref: CertificateRef, problem: str) -> "CertificateSpec":
        return cls(ref=ref, dns_names=(), issuer="", problem=problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.ref.environment,
            "service": self.ref.service,
            "name": self.ref.name,
            "dns_names": list(self.dns_names),
            "issuer": self.issuer,
            "key_type": self.key_type.value,
            "renew_before": self.renew_before,
            "targets": [t.to_json() for t in self.targets],
            "owner": self.owner,
            "contact": self.contact,
            **({"csr": self.csr} if self.csr else {}),
            **({"acme_order": self.acme_order} if self.acme_order else {}),
            **({"maintenance_window": self.maintenance_window.to_json()}
               if self.maintenance_window else {}),
            **({"profile": self.profile} if self.profile else {}),
        }

    @property
    def key_held_by_client(self) -> bool:
        return self.csr is not None

    @property
    def window(self) -> MaintenanceWindow | None:
        """The maintenance window in force: its own, else its service's or team's."""
        return self.maintenance_window or self.inherited_window

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CertificateSpec":
        return cls(
            ref=CertificateRef(data["environment"], data["service"], data["name"]),
            dns_names=tuple(data["dns_names"]),
            issuer=data["issuer"],
            key_type=KeyType(data.get("key_type") or KeyType.EC_P256.value),
            renew_before=data.get("renew_before"),
            targets=tuple(Target.from_json(t) for t in data.get("targets") or ()),
            owner=data.get("owner"),
            contact=data.get("contact"),
            csr=data.get("csr"),
            acme_order=data.get("acme_order"),
            maintenance_window=parse_window("maintenance_window",
                                            data.get("maintenance_window")),
            profile=data.get("profile"),
        )


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    """Public facts about one issued certificate: safe for status, logs and audit."""

    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256_fingerprint: str
    issuer: str
    dns_names: tuple[str, ...] = ()
    vault_version: int | None = None
    key_type: str | None = None  # what was requested at issuance (None in older records)
    issuer_name: str | None = None  # the configured issuer that issued it (ditto)
    # The public leaf PEM, so certlocker (which cannot read certs/ back) can revoke it
    # and ask for its renewal window; None in records from before it was kept here.
    leaf_pem: str | None = dataclasses.field(default=None, repr=False, compare=False)
    # Public too: the intermediates, kept only where certlocker must hand the chain out
    # itself (a certificate ordered through its ACME server), with that order's id.
    chain_pem: str | None = dataclasses.field(default=None, repr=False, compare=False)
    acme_order: str | None = None
    # Issued by ``issuer_name`` standing in for the spec's issuer ``fallback_for`` (its
    # fallback), and why. Not an issuer change: the primary takes the certificate back
    # at its next normal renewal (lifecycle/policy/planning.py).
    fallback_for: str | None = None
    fallback_reason: str | None = None
    # SHA-256 (hex) of the issuing intermediate's DER, the chain's first certificate:
    # what a mass replacement selects by (``issuing_intermediate``); None when unknown.
    issuer_sha256: str | None = None
    # The ACME profile the spec asked for at issuance ("" for none; sent only where the
    # CA advertises profiles); None in records from before it was kept.
    profile: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "sha256_fingerprint": self.sha256_fingerprint,
            "issuer": self.issuer,
            "dns_names": list(self.dns_names),
            "vault_version": self.vault_version,
            "key_type": self.key_type,
            "issuer_name": self.issuer_name,
            **({"leaf_pem": self.leaf_pem} if self.leaf_pem else {}),
            **({"chain_pem": self.chain_pem} if self.chain_pem is not None else {}),
            **({"acme_order": self.acme_order} if self.acme_order else {}),
            **({"fallback_for": self.fallback_for,
                "fallback_reason": self.fallback_reason} if self.fallback_for else {}),
            **({"issuer_sha256": self.issuer_sha256} if self.issuer_sha256 else {}),
            **({"profile": self.profile} if self.profile is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CertificateInfo":
        return cls(
            serial=data["serial"],
            not_before=parse_rfc3339(data["not_before"]),
            not_after=parse_rfc3339(data["not_after"]),
            sha256_fingerprint=data["sha256_fingerprint"],
            issuer=data["issuer"],
            dns_names=tuple(data.get("dns_names") or ()),
            vault_version=data.get("vault_version"),
            key_type=data.get("key_type"),
            issuer_name=data.get("issuer_name"),
            leaf_pem=data.get("leaf_pem") if isinstance(data.get("leaf_pem"), str) else None,
            chain_pem=data.get("chain_pem") if isinstance(data.get("chain_pem"), str) else None,
            acme_order=data.get("acme_order") if isinstance(data.get("acme_order"), str)
            else None,
            fallback_for=_text(data.get("fallback_for")),
            fallback_reason=_text(data.get("fallback_reason")),
            issuer_sha256=_text(data.get("issuer_sha256")),
            profile=_text(data.get("profile")),
        )


@dataclasses.dataclass(frozen=True)
class IssuedCertificate:
    """A certificate with its key, as written to ``certs/<env>/<service>/<name>``."""

    info: CertificateInfo
    certificate: str  # leaf PEM
    chain: str  # intermediates PEM
    # PKCS#8 PEM; never logged. Empty when the key is held by the client (a CSR order):
    # then the secret has no ``private_key`` field at all.
    private_key: str = dataclasses.field(repr=False)

    @property
    def fullchain(self) -> str:
        return self.certificate + self.chain

    def to_vault(self) -> dict[str, str]:
        """The secret layout DESIGN.md promises to consumers."""
        info = self.info.to_json()
        return {
            "certificate": self.certificate,
            "chain": self.chain,
            "fullchain": self.fullchain,
            **({"private_key": self.private_key} if self.private_key else {}),
            "serial": info["serial"],
            "not_before": info["not_before"],
            "not_after": info["not_after"],
            "sha256_fingerprint": info["sha256_fingerprint"],
            "issuer": info["issuer"],
        }


@dataclasses.dataclass(frozen=True)
class TargetStatus:
    address: str
    status: str  # ok | stale | mismatch | expired | unreachable | chain-incomplete | unknown
    served_sha256: str | None = None
    checked_at: dt.datetime | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "status": self.status,
            "served_sha256": self.served_sha256,
            "checked_at": rfc3339(self.checked_at) if self.checked_at else None,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TargetStatus":
        checked = data.get("checked_at")
        return cls(data["address"], data["status"], data.get("served_sha256"),
                   parse_rfc3339(checked) if checked else None, data.get("detail"))


@dataclasses.dataclass(frozen=True)
class Revocation:
    """The last revocation of a certificate and how far its follow-up got.

    ``phase``: replacing | removing | destroying | verifying | done | verify-timeout.
    ``targets`` maps each target address to serving-revoked | clear | unreachable.
    """

    serial: str
    sha256_fingerprint: str
    reason: str
    revoked_at: dt.datetime
    replace: bool
    vault_version: int | None = None
    phase: str = "done"
    targets: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "sha256_fingerprint": self.sha256_fingerprint,
                "reason": self.reason, "revoked_at": rfc3339(self.revoked_at),
                "replace": self.replace, "vault_version": self.vault_version,
                "phase": self.phase, "targets": dict(self.targets)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Revocation":
        return cls(data["serial"], data["sha256_fingerprint"], data["reason"],
                   parse_rfc3339(data["revoked_at"]), bool(data.get("replace")),
                   data.get("vault_version"), data.get("phase") or "done",
                   tuple((data.get("targets") or {}).items()))


@dataclasses.dataclass(frozen=True)
class AriWindow:
    """The CA's suggested renewal window (RFC 9773) for the certificate ``serial``,
    fetched at ``checked_at``; not asked again before ``next_check_at``."""

    serial: str
    start: dt.datetime
    end: dt.datetime
    checked_at: dt.datetime
    next_check_at: dt.datetime
    explanation_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "start": rfc3339(self.start),
                "end": rfc3339(self.end), "checked_at": rfc3339(self.checked_at),
                "next_check_at": rfc3339(self.next_check_at),
                "explanation_url": self.explanation_url}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AriWindow":
        return cls(data["serial"], parse_rfc3339(data["start"]), parse_rfc3339(data["end"]),
                   parse_rfc3339(data["checked_at"]), parse_rfc3339(data["next_check_at"]),
                   data.get("explanation_url"))


@dataclasses.dataclass(frozen=True)
class RenewalRequest:
    """A forced renewal an operator asked for (``POST .../renew``), kept in the status
    until an issuance that started after it stores a certificate: the request, not a
    process's queue, is what makes the renewal happen, so a crash cannot lose it."""

    at: dt.datetime
    by: str

    def to_json(self) -> dict[str, Any]:
        return {"at": rfc3339(self.at), "by": self.by}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RenewalRequest":
        return cls(parse_rfc3339(data["at"]), str(data.get("by") or ""))


@dataclasses.dataclass(frozen=True)
class CertificateStatus:
    state: State
    current: CertificateInfo | None = None
    last_error: str | None = None
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    targets: tuple[TargetStatus, ...] = ()
    history: tuple[str, ...] = ()  # SHA-256 fingerprints of earlier certificates, newest first
    alerted: str | None = None  # the alert last sent for this certificate (lifecycle.alerts)
    revocation: Revocation | None = None  # the last revocation (lifecycle.revocation)
    retired_at: dt.datetime | None = None  # set with state retired (a tombstone)
    ari: AriWindow | None = None  # the CA's renewal window (lifecycle.renewal_info)
    retryable: bool = True  # False: the last failure is a refusal that retrying won't fix
    renewal_request: RenewalRequest | None = None  # a forced renewal not yet done
    # Scheduled, not failed: what the next attempt (at ``next_attempt_at``) waits for
    # (an issuer's rate limits, lifecycle/governed_issuer.py).
    waiting: str | None = None
    # The ACME order (certlocker's ACME server) whose issuance failed last: that order
    # ends invalid and is not tried again; its client places a new one.
    failed_acme_order: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "revocation": self.revocation.to_json() if self.revocation else None,
            "retired_at": rfc3339(self.retired_at) if self.retired_at else None,
            "state": self.state.value,
            "current": self.current.to_json() if self.current else None,
            "last_error": self.last_error,
            "attempts": self.attempts,
            "next_attempt_at": rfc3339(self.next_attempt_at) if self.next_attempt_at else None,
            "updated_at": rfc3339(self.updated_at) if self.updated_at else None,
            "targets": [t.to_json() for t in self.targets],
            "history": list(self.history),
            "alerted": self.alerted,
            "ari": self.ari.to_json() if self.ari else None,
            "retryable": self.retryable,
            "renewal_request": (self.renewal_request.to_json() if self.renewal_request
                                else None),
            **({"waiting": self.waiting} if self.waiting else {}),
            **({"failed_acme_order": self.failed_acme_order} if self.failed_acme_order
               else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CertificateStatus":
        nxt = data.get("next_attempt_at")
        upd = data.get("updated_at")
        return cls(
            state=State(data["state"]),
            current=CertificateInfo.from_json(data["current"]) if data.get("current") else None,
            last_error=data.get("last_error"),
            attempts=int(data.get("attempts") or 0),
            next_attempt_at=parse_rfc3339(nxt) if nxt else None,
            updated_at=parse_rfc3339(upd) if upd else None,
            targets=tuple(TargetStatus.from_json(t) for t in data.get("targets") or ()),
            history=tuple(data.get("history") or ()),
            alerted=data.get("alerted"),
            revocation=(Revocation.from_json(data["revocation"])
                        if data.get("revocation") else None),
            retired_at=parse_rfc3339(data["retired_at"]) if data.get("retired_at") else None,
            ari=AriWindow.from_json(data["ari"]) if data.get("ari") else None,
            retryable=data.get("retryable") is not False,
            renewal_request=(RenewalRequest.from_json(data["renewal_request"])
                             if data.get("renewal_request") else None),
            waiting=_text(data.get("waiting")),
            failed_acme_order=_text(data.get("failed_acme_order")),
        )

    def replace(self, **changes: Any) -> "CertificateStatus":
        return dataclasses.replace(self, **changes)


# -- records the ports carry (``certlocker.ports``) ------------------------------------------

@dataclasses.dataclass(frozen=True)
class IssueRequest:
    """What the lifecycle asks an ``Issuer`` for: one certificate for ``dns_names``."""

    ref: CertificateRef
    dns_names: tuple[str, ...]
    key_type: KeyType
    replaces: str | None = None  # ARI certificate id of the certificate being renewed
    # The client's CSR (PEM) when the key is held by the client: sent as is, no key made.
    csr_pem: str | None = dataclasses.field(default=None, repr=False)
    # When the certificate in service expires (None: there is none): how long this
    # issuance may wait for a rate limit before a fallback issuer takes it.
    not_after: dt.datetime | None = None
    # The ACME profile the certificate asks for (None: the issuer's, if any)
    profile: str | None = None


@dataclasses.dataclass(frozen=True)
class RenewalWindow:
    """A CA's suggested renewal window (RFC 9773 section 4.2) and when to ask again
    (its ``Retry-After``, None when it sent none)."""

    start: dt.datetime
    end: dt.datetime
    explanation_url: str | None = None
    retry_after: dt.timedelta | None = None


@dataclasses.dataclass(frozen=True)
class Alert:
    """Everything a notifier sends (``lifecycle.alerts`` decides when, ``notify`` how).
    Holds no key material and no token."""

    certificate: str
    kind: str
    summary: str
    attempts: int
    last_error: str | None
    not_after: dt.datetime | None
    next_attempt_at: dt.datetime | None
    at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "certificate": self.certificate,
            "kind": self.kind,
            "summary": self.summary,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "not_after": rfc3339(self.not_after) if self.not_after else None,
            "next_attempt_at": rfc3339(self.next_attempt_at) if self.next_attempt_at else None,
            "at": rfc3339(self.at),
        }


@dataclasses.dataclass(frozen=True)
class Inflight:
    """The in-flight state of one issuance: the key made for it (before the CA heard of
    it), the names and key type it was made for, the issuer, and the ACME order once
    one exists. Stored as JSON (``to_json``) at ``system/inflight/...``; a field that is
    None is left out, so each issuer's record keeps its shape. The key is never shown
    in a ``repr``."""

    private_key: str | None = dataclasses.field(default=None, repr=False)
    dns_names: tuple[str, ...] = ()
    issuer: str | None = None
    key_type: str | None = None
    order_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"private_key": self.private_key,
                                "order_url": self.order_url,
                                "dns_names": list(self.dns_names), "issuer": self.issuer,
                                "key_type": self.key_type}
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Inflight | None:
        """None for no record; fields of the wrong type (a record from elsewhere) read
        as absent, so such a journal is never resumed."""
        if not isinstance(data, Mapping):
            return None
        names = data.get("dns_names")

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        return cls(private_key=text("private_key"),
                   dns_names=tuple(n for n in names if isinstance(n, str))
                   if isinstance(names, list) else (),
                   issuer=text("issuer"), key_type=text("key_type"),
                   order_url=text("order_url"))

    def for_names(self, dns_names: tuple[str, ...]) -> bool:
        """Made for the same names (in any order) as a request for ``dns_names``."""
        return sorted(self.dns_names) == sorted(dns_names)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
