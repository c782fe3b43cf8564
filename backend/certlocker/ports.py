"""The contracts the lifecycle holds its outside systems to: storage, issuers, probes,
credentials and notifiers.

The lifecycle and discovery are written against these ports; ``vault``, ``issuance``,
``delivery``, ``credentials``, ``notify`` and ``metrics`` provide them, and the fakes in
``tests/support`` provide them too (``tests/unit/test_ports.py`` checks both). This
module is part of the domain: it imports only the domain records, so a port never drags
an adapter's library in.

Each docstring is the contract, in the manner of CertMagic's ``storage.go``: what a
method guarantees, what it raises, whether it may be repeated, who calls it. An
adapter that cannot keep a promise written here is wrong, not the caller that relies
on it. Errors are the domain's own (``certlocker.errors``); an adapter translates its
library's errors at its door and lets none through.

Every store method may also raise ``VaultUnavailable`` (the storage cannot be reached,
is sealed, or refuses for another reason than the ones named), ``Unauthenticated``
(the token is invalid or expired) and ``AccessDenied`` (the token's policy does not
allow the operation). Every store is safe for concurrent use by many threads, and
several processes and replicas share one storage: its check-and-set is what makes
them agree.

Optional capabilities are ports of their own, ``runtime_checkable`` and asked with
``isinstance`` (``Revoker``, ``RenewalInfoSource``): never probed by attribute name.
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import Any, Collection, Mapping, Protocol, Sequence, runtime_checkable

from .models import (Alert, CertificateInfo, Inflight, CertificateRef, CertificateSpec,
                     CertificateStatus, IssuedCertificate, IssueRequest, RenewalWindow,
                     Target, TargetStatus)
from .paths import VaultPaths

# -- storage -------------------------------------------------------------------------------


@runtime_checkable
class Store(Protocol):
    """Versioned documents at logical paths (KV v2 under the mount ``paths`` names), and
    the certificate records built on them.

    Implemented by ``vault.store.VaultStore`` (one Vault token) and by
    ``tests.support.memory_store.MemoryStore``. Every write makes a new version; a
    version number only grows, and 0 means "nothing stored". Writes that take ``cas``
    are check-and-set: ``cas=None`` writes whatever is there, ``cas=0`` writes only when
    nothing is stored, ``cas=n`` only when the current version is ``n``.
    """

    #: the layout of logical paths (and the mount) this store reads and writes
    paths: VaultPaths

    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]:
        """The latest document at ``logical`` and its version; ``(None, 0)`` when nothing
        is stored. A document written with ``write_json`` comes back as written; one
        written with ``write`` comes back as its fields. Reads change nothing."""
        ...

    def write_json(self, logical: str, document: dict[str, Any], cas: int | None) -> int:
        """Store ``document`` (JSON-serialisable) as a new version; returns that version.

        A write whose answer was lost is settled by the store (read back, written again at
        most once), so a retried check-and-set never fails on its own earlier success.

        :raises Conflict: the check-and-set did not match (someone else wrote first).
        :raises VaultWriteUncertain: it cannot be told whether the write landed.
        """
        ...

    def write(self, logical: str, data: dict[str, Any], cas: int | None) -> int:
        """Store ``data`` (string fields, as a Vault consumer reads them) as a new
        version; returns it. Same guarantees and errors as ``write_json``."""
        ...

    def destroy(self, logical: str) -> None:
        """Remove every version of ``logical`` and its metadata, for good. Repeating it
        is harmless; callers that may find nothing there also accept ``NotFound``."""
        ...

    def list(self, logical_dir: str) -> list[str]:
        """The names directly under ``logical_dir`` (folders end in ``/``), in no
        promised order; ``[]`` when there are none."""
        ...

    def read_spec(self, ref: CertificateRef) -> tuple[CertificateSpec, int] | None:
        """The spec at ``specs/<env>/<service>/<name>`` and its version, None when none is
        declared. Parsed by the one spec parser (``specs.from_record``): a record that
        does not parse comes back as a spec with ``problem`` set, never as an error."""
        ...

    def create_spec(self, spec: CertificateSpec) -> int:
        """Declare ``spec`` where none is; returns the version (1).

        :raises AlreadyExists: a spec is already declared at that path.
        """
        ...

    def read_status(self, ref: CertificateRef) -> tuple[CertificateStatus, int] | None:
        """The status certlocker keeps for ``ref`` and its version; None when none."""
        ...

    def write_status(self, ref: CertificateRef, status: CertificateStatus, cas: int) -> int:
        """Replace the status, check-and-set against the version read (0: none yet).
        Status writers read, change and write again on ``Conflict``.

        :raises Conflict: another writer changed the status since ``cas``.
        """
        ...

    def store_certificate(self, ref: CertificateRef, issued: IssuedCertificate,
                          expected_version: int | None = None) -> int:
        """Write the bundle (key, leaf, chain) to ``certs/<env>/<service>/<name>`` as ONE
        new version, so a consumer never reads a key of one issuance with the leaf of
        another; returns the version. ``expected_version`` is a hint: when unknown or
        stale the store finds the current version itself (only the holder of the
        certificate's lease calls this). A store may destroy versions older than the
        last few it keeps. Never reads the bundle back.
        """
        ...


@runtime_checkable
class VersionedStore(Store, Protocol):
    """A ``Store`` that can see and destroy single versions: revocation and retirement
    use it to take a compromised key out of every version a consumer could still read.
    Implemented by ``VaultStore``."""

    def live_versions(self, logical: str) -> builtins.list[int]:
        """The versions of ``logical`` whose data is not destroyed, ascending; ``[]`` when
        nothing is stored. Reads metadata only, never the data."""
        ...

    def destroy_versions(self, logical: str, versions: builtins.list[int]) -> None:
        """Destroy the data of ``versions`` for good (metadata keeps them, marked
        destroyed). Idempotent; an empty list does nothing."""
        ...


@runtime_checkable
class CallerStore(Protocol):
    """Storage asked on behalf of one caller: what may their token do?

    The storage's own policies are the only access lists certlocker knows
    (``certlocker.access``): ask, never guess."""

    def capabilities(self, api_path: str) -> set[str]:
        """The capabilities (``read``, ``update``, ``root``…) the caller's token has on
        ``api_path`` (a full API path, ``<mount>/data/...``); empty when none. Reads
        nothing else and changes nothing."""
        ...


@runtime_checkable
class OperatorStore(VersionedStore, CallerStore, Protocol):
    """The store bound to one operator's token (``VaultStore.for_token``): the API
    declares, edits and retires with it, so the storage's policies decide what this
    operator may do. Nothing here is done with certlocker's own token."""


@runtime_checkable
class Lister(Protocol):
    """Enough of a store to find which certificates a token may list
    (``lifecycle.visibility``). Implemented by ``VaultStore``."""

    paths: VaultPaths

    def list(self, logical_dir: str) -> list[str]:
        """As ``Store.list``.

        :raises AccessDenied: the token may not list ``logical_dir``: the caller falls
            back to the folders it may list.
        """
        ...

    def capabilities_of(self, api_paths: builtins.list[str]) -> dict[str, set[str]]:
        """``CallerStore.capabilities`` for many paths in one request: every path asked
        is a key of the answer (an empty set where the token may do nothing)."""
        ...


@runtime_checkable
class SpecSource(Protocol):
    """What the spec watch reads (``lifecycle.spec_watch``): every spec's version
    cheaply, or failing that a listing. Implemented by ``VaultStore`` and
    ``MemoryStore``."""

    paths: VaultPaths

    def spec_versions(self) -> Mapping[str, tuple[int, dt.datetime]] | None:
        """Every spec's current version and write time, keyed ``<env>/<service>/<name>``,
        in one request; None when the storage cannot answer that way (the caller then
        lists with ``list``). Changes nothing."""
        ...

    def list(self, logical_dir: str) -> list[str]:
        """As ``Store.list``."""
        ...


# -- what an issuer gets from storage ------------------------------------------------------


@runtime_checkable
class Journal(Protocol):
    """Durable in-flight state of one issuance (key PEM, order URL…), so any replica
    resumes an order another left. Only the holder of the certificate's lease uses it.
    Implemented by ``lifecycle.vault_adapters.StoreJournal``."""

    def load(self) -> Inflight | None:
        """The state last saved, None when there is nothing to resume."""
        ...

    def save(self, state: Inflight) -> None:
        """Replace the state. Durable before it returns: the issuer saves a new key
        before it asks the CA for anything, and the order URL before it finalizes.
        Repeating a save is harmless."""
        ...


@runtime_checkable
class ChallengeStore(Protocol):
    """http-01 answers the CA fetches from any replica (``/.well-known/acme-challenge``).
    Implemented by ``lifecycle.vault_adapters.StoreChallenges`` and
    ``lifecycle.local_challenges.LocalFirstChallenges``."""

    def put(self, token: str, key_authorization: str) -> None:
        """Publish the answer for ``token``; readable by every replica when this returns.
        A token's answer never changes, so putting it again is harmless."""
        ...

    def delete(self, token: str) -> None:
        """Withdraw the answer once the challenge is over. Idempotent."""
        ...


@runtime_checkable
class SharedChallenges(ChallengeStore, Protocol):
    """A ``ChallengeStore`` that also answers: the shared storage behind the local
    copy (``lifecycle.local_challenges``). Implemented by ``StoreChallenges``."""

    def get(self, token: str) -> str | None:
        """The answer put for ``token``; None when there is none (after waiting briefly
        for a replica that lags behind the writer)."""
        ...


@runtime_checkable
class AccountStore(Protocol):
    """The ACME account of one directory (its key and URL), shared by every replica so
    all of them order as one account. Implemented by ``StoreAccounts``."""

    def load(self) -> tuple[dict[str, Any] | None, int]:
        """The stored account document and its version; ``(None, 0)`` when none."""
        ...

    def save(self, document: dict[str, Any], cas: int) -> int:
        """Store the account, check-and-set against the version loaded (0: create).

        :raises Conflict: another replica stored an account first: load and use it.
        """
        ...


@runtime_checkable
class IssuerSecrets(Protocol):
    """An issuer's secrets, read from storage when needed (never from settings, never
    logged). Implemented by ``lifecycle.issuer_secrets.StoreIssuerSecrets``."""

    def eab(self) -> Mapping[str, Any] | None:
        """External account binding: ``kid``, ``hmac_key`` (base64url), optional
        ``alg`` (HS256/HS384/HS512); None when none is stored."""
        ...

    def dns(self) -> Mapping[str, Any]:
        """The dns-01 provider's secrets.

        :raises IssuanceFailed: when none are stored.
        """
        ...


# -- issuers -------------------------------------------------------------------------------


@runtime_checkable
class Issuer(Protocol):
    """A certificate authority certlocker orders from (``issuance.acme_issuer``,
    ``issuance.vault_pki``; ``tests.support.memory_issuer``). Only
    ``lifecycle.service`` calls ``issue``, under the certificate's lease, so one
    certificate has at most one issuance running across all replicas."""

    #: the name specs use in ``issuer`` (a key of the configured issuers)
    name: str

    def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
        """Obtain a certificate for ``request``, resuming from ``journal`` when it holds
        an order for the same names (else starting over, with a fresh key). Saves to the
        journal before each step a crash must not repeat. The key is made here and
        leaves only inside the returned bundle.

        :raises IssuanceFailed: (or ``RateLimited``) when the CA refuses or cannot be
            reached; ``retryable`` on the error says whether trying again may help.
        """
        ...


@runtime_checkable
class Revoker(Protocol):
    """Optional: an ``Issuer`` that can revoke what it issued (ACME). Asked with
    ``isinstance(issuer, Revoker)``; revocation and retirement report an issuer without
    it as unable to revoke."""

    def revoke(self, certificate_pem: str, reason: int) -> None:
        """Revoke the certificate (public PEM; the key is never needed) with the RFC 5280
        CRLReason code ``reason``. Idempotent: one already revoked counts as revoked.

        :raises RevocationFailed: when the CA refuses or cannot be reached.
        """
        ...


@runtime_checkable
class RenewalInfoSource(Protocol):
    """Optional: an ``Issuer`` whose CA may suggest renewal windows (ACME with
    ``renewalInfo``, RFC 9773). Asked with ``isinstance(issuer, RenewalInfoSource)``."""

    def renewal_info(self, certificate_pem: str) -> RenewalWindow | None:
        """The CA's window for this certificate; None when the CA offers none or cannot
        be asked now. ARI is advisory: never raises. Safe to repeat."""
        ...


# -- probes --------------------------------------------------------------------------------


class Probe(Protocol):
    """Connects to each target (every node of a pool) and tells what it serves against
    what it should: ``delivery.verify.verify_targets`` or, under the target allow-list,
    ``delivery.verify.under_policy``. Called by verification (on request and on a
    schedule), revocation and retirement.

    Read-only: a probe only connects and reads the handshake, so it may be repeated at
    will. A target that cannot be reached is a result (``unreachable``), not an error:
    a probe raises nothing for what a node does.
    """

    def __call__(self, expected: CertificateInfo, history: Collection[str],
                 targets: Sequence[Target], *, now: dt.datetime, timeout: float = ...,
                 parallelism: int = ..., anchors: Any = None) -> Sequence[TargetStatus]:
        """One ``TargetStatus`` per node probed, in no promised order. ``history``: the
        fingerprints (or serials) of earlier certificates, so a node serving an older one
        is told apart from a stranger; ``anchors``: the ``delivery.verify.TrustAnchors``
        to judge the chain by (None: the system's), opaque to the domain."""
        ...


# -- credentials ---------------------------------------------------------------------------


@runtime_checkable
class Credentials(Protocol):
    """A service's credentials, as retirement needs them: implemented by
    ``credentials.service.CredentialService``."""

    def generation(self, environment: str, service: str) -> int:
        """The service's current credential generation (1 when never revoked). Reads
        only."""
        ...

    def revoke(self, environment: str, service: str, actor: str = "operator") -> int:
        """Invalidate every credential of the service by moving to a new generation, and
        record it as ``actor``; returns the new generation. Each call revokes again
        (callers record the generation they revoked, so a resumed step does not).

        :raises InvalidInput: a malformed environment or service name.
        :raises Conflict: the generation kept changing under concurrent revocations.
        """
        ...


# -- notifiers -----------------------------------------------------------------------------


@runtime_checkable
class AlertSink(Protocol):
    """Where alerts for a human go (``notify.Notifier``); the reconciler sends one per
    kind and state change (``lifecycle.alerts``)."""

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` (no key material, no token in it) on every channel.

        :raises AlertDeliveryFailed: no channel accepted it; the caller keeps it unsent
            and tries again on a later pass (so a receiver may see it twice).
        """
        ...


@runtime_checkable
class IssuanceObserver(Protocol):
    """Told about the lifecycle's work without the lifecycle knowing who listens
    (``metrics.collector``). Must be quick and must not raise."""

    def issuance_finished(self, ref: CertificateRef, seconds: float, ok: bool) -> None:
        """One issuance attempt under the lease ended; ``ok`` is False when it failed
        (the failure is in the status's ``last_error``) or raised."""
        ...
