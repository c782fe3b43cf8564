"""KV v2 access for certlocker: the only place certificates, specs and state meet Vault.

Every state change is a check-and-set write (``cas``) so two replicas never both win.
Docstrings name the logical path (under the KV mount) and the capability needed.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import json
from typing import Any, Callable

import hvac
import hvac.adapters
import hvac.exceptions as hx
from hvac.api.secrets_engines.kv_v2 import KvV2

from ..clock import parse_rfc3339
from ..errors import AccessDenied, AlreadyExists, Conflict, Unauthenticated, VaultWriteUncertain
from ..models import (CertificateRef, CertificateSpec, CertificateStatus, IssuedCertificate)
from ..paths import VaultPaths
from ..specs import PERMISSIVE, SpecRules, from_record
from .token_keeper import TokenLife
from . import hvac_compat
from .client import RetryingAdapter, make_client, translated


# A SCAN answers the whole subtree at once: at 100k specs OpenBao needs longer than the
# 10 s any other call is given (docs/performance.md, "Spec watch").
SCAN_TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True)
class Versioned:
    data: dict[str, Any]
    version: int


class VaultStore:
    """One Vault identity (a token) and the KV mount, with domain-level methods.

    ``VaultStore`` for certlocker's own token and ``for_token`` for an operator's token
    share this class: which of them may do what is decided by Vault's policies.
    """

    def __init__(self, client: hvac.Client | None, paths: VaultPaths, keep_versions: int = 3,
                 *, adapter: hvac.adapters.Adapter | None = None,
                 spec_rules: SpecRules = PERMISSIVE) -> None:
        """``client``, or only its ``adapter``: the full client (a few dozen engine
        objects, built per operator request otherwise) is then built on first use of
        anything but KV v2. ``spec_rules``: what a spec read back must satisfy (the
        deployment's environments and issuers)."""
        self._built = client
        self._adapter: hvac.adapters.Adapter
        if client is not None:
            self._adapter = client.adapter
            self._kv = client.secrets.kv.v2
        elif adapter is not None:
            self._adapter = adapter
            self._kv = KvV2(adapter)
        else:
            raise ValueError("a client or an adapter is needed")
        self.paths = paths
        self.keep_versions = keep_versions  # of certs/...: older versions are destroyed
        self.spec_rules = spec_rules
        #: applied to every spec read (``lifecycle.maintenance_defaults``: the service's
        #: or team's maintenance window); set by the composition root, shared by
        #: ``for_token`` stores
        self.spec_defaults: Callable[[CertificateSpec], CertificateSpec] | None = None

    @property
    def _client(self) -> hvac.Client:
        if self._built is None:
            self._built = _client_like(self._adapter, self._adapter.token)
        return self._built

    @classmethod
    def connect(cls, addr: str, token: str | None, paths: VaultPaths,
                ca_cert: str | None = None, keep_versions: int = 3,
                retry_seconds: float = 10.0, own_token: bool = False,
                token_file: str | None = None,
                spec_rules: SpecRules = PERMISSIVE) -> "VaultStore":
        """``own_token``: certlocker's own token, whose refusal is this deployment's
        fault (``OwnTokenRefused``, 503), not the caller's (``AccessDenied``, 403).
        ``token_file``: the file ``token`` was read from, followed when it is rotated."""
        return cls(make_client(addr, token, ca_cert, retry_seconds=retry_seconds,
                               own_token=own_token, token_file=token_file),
                   paths, keep_versions, spec_rules=spec_rules)

    def for_token(self, token: str) -> "VaultStore":
        """A store acting with another caller's token (same server, mount and retries)."""
        adapter = self._adapter
        theirs = type(adapter)(base_uri=adapter.base_uri, token=token, **_adapter_options(adapter))
        store = VaultStore(None, self.paths, self.keep_versions, adapter=theirs,
                           spec_rules=self.spec_rules)
        store.spec_defaults = self.spec_defaults
        return store

    # -- generic KV v2 -------------------------------------------------------------------
    def read(self, logical: str) -> Versioned | None:
        """Read the latest version at ``<mount>/data/<logical>`` (capability: read)."""
        with translated(self.paths.api_path(logical)):
            try:
                resp = self._kv.read_secret_version(
                    path=logical, mount_point=self.paths.mount, raise_on_deleted_version=True)
            except hx.InvalidPath:
                return None
        return Versioned(resp["data"]["data"] or {}, int(resp["data"]["metadata"]["version"]))

    def write(self, logical: str, data: dict[str, Any], cas: int | None) -> int:
        """Write a new version (capability: create/update). ``cas=0`` creates only if
        absent; ``cas=n`` succeeds only if the current version is ``n``.

        A write whose answer was lost (the node died or lost leadership mid-request) is
        settled by reading back: if our data is there, that is our version; if not, it is
        written again. So a retried check-and-set never fails on its own earlier success.

        :raises Conflict: when the check-and-set does not match.
        :raises VaultWriteUncertain: when it cannot be told whether the write landed (the
            token may not read the path back, or Vault stays away).
        """
        for attempt in range(3):
            try:
                return self._write_once(logical, data, cas)
            except VaultWriteUncertain as uncertain:
                try:
                    got = self.read(logical)
                except AccessDenied:
                    raise uncertain from None  # write-only (certs/): see store_certificate
                if got is not None and got.data == data:
                    return got.version
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _write_once(self, logical: str, data: dict[str, Any], cas: int | None) -> int:
        with translated(self.paths.api_path(logical)):
            resp = self._kv.create_or_update_secret(
                path=logical, secret=data, cas=cas, mount_point=self.paths.mount)
        return int(resp["data"]["version"])

    def current_version(self, logical: str) -> int:
        """Current version from ``<mount>/metadata/<logical>`` (capability: read on
        metadata, which does not expose secret data); 0 when absent."""
        with translated(self.paths.metadata_path(logical)):
            try:
                resp = self._kv.read_secret_metadata(
                    path=logical, mount_point=self.paths.mount)
            except hx.InvalidPath:
                return 0
        return int(resp["data"]["current_version"])

    def destroy(self, logical: str) -> None:
        """Delete every version and the metadata (capability: delete on metadata)."""
        with translated(self.paths.metadata_path(logical)):
            self._kv.delete_metadata_and_all_versions(
                path=logical, mount_point=self.paths.mount)

    def live_versions(self, logical: str) -> list[int]:
        """Versions at ``<mount>/metadata/<logical>`` whose data is not destroyed
        (capability: read on metadata); [] when absent."""
        with translated(self.paths.metadata_path(logical)):
            try:
                resp = self._kv.read_secret_metadata(
                    path=logical, mount_point=self.paths.mount)
            except hx.InvalidPath:
                return []
        return sorted(int(v) for v, meta in (resp["data"].get("versions") or {}).items()
                      if not meta.get("destroyed"))

    def destroy_versions(self, logical: str, versions: list[int]) -> None:
        """Permanently remove the data of ``versions`` (``<mount>/destroy/<logical>``,
        capability: update). The metadata keeps them, marked destroyed."""
        if not versions:
            return
        with translated(f"{self.paths.mount}/destroy/{logical}"):
            self._kv.destroy_secret_versions(
                path=logical, versions=sorted(versions), mount_point=self.paths.mount)

    def list(self, logical_dir: str) -> list[str]:
        """List keys under ``<mount>/metadata/<dir>`` (capability: list); [] if none."""
        with translated(self.paths.metadata_path(logical_dir)):
            try:
                resp = self._kv.list_secrets(
                    path=logical_dir, mount_point=self.paths.mount)
            except hx.InvalidPath:
                return []
        return list(resp["data"]["keys"])

    def spec_versions(self) -> dict[str, tuple[int, dt.datetime]] | None:
        """Every spec's current version and the time it was written, in ONE request:
        ``SCAN <mount>/detailed-metadata/specs/`` (OpenBao 2.2+; capability: scan).
        Keys are ``<env>/<service>/<name>``. None when the server cannot scan (HashiCorp
        Vault answers such a path with no data, or 405): the caller lists instead.

        The server reads every spec's metadata for this, and the answer is about half a
        kilobyte per spec: it is parsed keeping only the two fields, so a 100k answer
        never becomes 100k full dictionaries (docs/performance.md, "spec watch").
        """
        path = self.paths.detailed_metadata_path(self.paths.specs_dir())
        with translated(path):
            try:
                resp = self._adapter.request("GET", f"/v1/{path}", params={"scan": "true"},
                                             timeout=SCAN_TIMEOUT, **({"raw": True} if isinstance(
                                                 self._adapter, RetryingAdapter) else {}))
            except hx.UnsupportedOperation:
                return None
            except hx.InvalidPath as exc:
                if any("unsupported" in str(e) for e in exc.errors or ()):
                    return None
                return {}
        if isinstance(resp, dict):  # an adapter that parsed it already
            body: Any = _slim_metadata(resp)
        elif getattr(resp, "status_code", 200) == 204 or not getattr(resp, "content", b""):
            return {}
        else:
            body = json.loads(resp.content, object_pairs_hook=_slim_pairs)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return None  # not a listing: a path this server does not serve
        found: dict[str, tuple[int, dt.datetime]] = {}
        for key, meta in (data.get("key_info") or {}).items():
            if isinstance(meta, tuple) and meta[1]:
                try:
                    found[key] = (meta[0], parse_rfc3339(meta[1]))
                except ValueError:
                    continue
        return found

    # -- certificates ----------------------------------------------------------------------
    def read_spec(self, ref: CertificateRef) -> tuple[CertificateSpec, int] | None:
        """The spec at ``specs/<env>/<service>/<name>`` (capability: read), through the one
        spec parser: a record written with the Vault CLI that does not parse comes back
        as a spec with ``problem`` set, never as an exception."""
        got = self.read(self.paths.spec(ref))
        if got is None or not got.data:
            return None
        spec = from_record(got.data, ref, self.spec_rules)
        if self.spec_defaults is not None:
            spec = self.spec_defaults(spec)
        return spec, got.version

    def create_spec(self, spec: CertificateSpec) -> int:
        """Create ``specs/<env>/<service>/<name>`` if absent.

        :raises AlreadyExists: when a spec is already declared there.
        """
        try:
            return self.write(self.paths.spec(spec.ref), spec.to_json(), cas=0)
        except Conflict:
            raise AlreadyExists(f"certificate {spec.ref.id} is already declared") from None

    def read_status(self, ref: CertificateRef) -> tuple[CertificateStatus, int] | None:
        got = self.read(self.paths.status(ref))
        if got is None or not got.data:
            return None
        return CertificateStatus.from_json(got.data), got.version

    def write_status(self, ref: CertificateRef, status: CertificateStatus, cas: int) -> int:
        return self.write(self.paths.status(ref), status.to_json(), cas=cas)

    def store_certificate(self, ref: CertificateRef, issued: IssuedCertificate,
                          expected_version: int | None = None) -> int:
        """Write the bundle to ``certs/<env>/<service>/<name>`` as ONE new KV version,
        so a consumer never sees a key from one issuance with a leaf from another.
        ``expected_version`` (from the status) is the check-and-set; when it is unknown
        or stale the metadata says. Needs create/update on data and read on metadata
        (never read on data)."""
        path = self.paths.cert(ref)
        try:
            if expected_version is None:
                raise Conflict("version unknown")
            version = self._write_certificate(path, issued, expected_version)
        except Conflict:
            version = self._write_certificate(path, issued, self.current_version(path))
        # A consumer can read every live version of its path: keep only the newest few.
        if version > self.keep_versions:
            self.destroy_versions(path, [v for v in self.live_versions(path)
                                         if v <= version - self.keep_versions])
        return version

    def _write_certificate(self, path: str, issued: IssuedCertificate, cas: int) -> int:
        """certlocker cannot read ``certs/`` back, so a write whose answer was lost is
        settled from the metadata: the caller holds the certificate's lease, so the one
        version after ``cas`` can only be this write."""
        for _ in range(3):
            try:
                return self.write(path, issued.to_vault(), cas=cas)
            except VaultWriteUncertain:
                current = self.current_version(path)
                if current == cas + 1:
                    return current
                if current != cas:
                    raise Conflict(f"{path} was changed by another writer") from None
        raise VaultWriteUncertain(f"no answer from Vault to a write of {path}")

    # -- raw JSON documents under system/ --------------------------------------------------
    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]:
        got = self.read(logical)
        if got is None:
            return None, 0
        return json.loads(got.data["json"]) if "json" in got.data else got.data, got.version

    def write_json(self, logical: str, document: dict[str, Any], cas: int | None) -> int:
        return self.write(logical, {"json": json.dumps(document, sort_keys=True)}, cas=cas)

    # -- the caller ------------------------------------------------------------------------
    def lookup_self(self) -> dict[str, Any]:
        """``auth/token/lookup-self``: who is this token? (every token may.)

        :raises Unauthenticated: when the token is invalid.
        """
        with translated("auth/token/lookup-self"):
            try:
                return dict(self._client.auth.token.lookup_self()["data"])
            except hx.Forbidden as exc:  # Vault answers 403 for an unknown token
                raise Unauthenticated("the Vault token is invalid or expired") from exc

    def token_life(self) -> TokenLife:
        """This token's remaining lifetime (``auth/token/lookup-self``)."""
        data = self.lookup_self()
        return TokenLife(ttl=int(data.get("ttl") or 0), renewable=bool(data.get("renewable")),
                         full=int(data.get("period") or data.get("creation_ttl") or 0))

    def renew_self(self, increment: int) -> TokenLife:
        """``auth/token/renew-self``: a periodic token gets its period back whatever
        ``increment`` says; any other token ``increment`` seconds, up to its max TTL."""
        with translated("auth/token/renew-self"):
            try:
                self._client.auth.token.renew_self(increment=f"{increment}s")
            except hx.Forbidden as exc:
                raise Unauthenticated("the Vault token is invalid or expired") from exc
        return self.token_life()

    def capabilities(self, api_path: str) -> set[str]:
        """``sys/capabilities-self`` for one API path."""
        with translated("sys/capabilities-self"):
            resp = self._adapter.post("/v1/sys/capabilities-self", json={"paths": [api_path]})
        data = resp.get("data", resp) if isinstance(resp, dict) else resp.json()
        caps = data.get(api_path) or data.get("capabilities") or []
        return set(caps)

    def capabilities_of(self, api_paths: builtins.list[str]) -> dict[str, set[str]]:
        """``sys/capabilities-self`` for many API paths in one request: what this
        token may do on each (an empty set where nothing)."""
        if not api_paths:
            return {}
        with translated("sys/capabilities-self"):
            resp = self._adapter.post("/v1/sys/capabilities-self", json={"paths": api_paths})
        data = resp.get("data", resp) if isinstance(resp, dict) else resp.json()
        return {p: set(data.get(p) or ()) for p in api_paths}

    def health(self) -> bool:
        with translated("sys/health"):
            # A standby node serves clients (it forwards to the active node): ready too.
            status = self._client.sys.read_health_status(method="GET", standby_ok=True)
        if isinstance(status, dict):
            return not status.get("sealed", True)
        return getattr(status, "status_code", 500) == 200

    @property
    def hvac(self) -> hvac.Client:
        """The raw client, for the other modules of this package only."""
        return self._client


def _adapter_options(adapter: hvac.adapters.Adapter) -> dict[str, Any]:
    """Everything but the address and the token: the same server, pool and retries."""
    return {"verify": hvac_compat.adapter_verify(adapter),
            "timeout": hvac_compat.adapter_timeout(adapter), "session": adapter.session,
            "retry_seconds": getattr(adapter, "retry_seconds", 0.0)}


def _client_like(adapter: hvac.adapters.Adapter, token: str | None) -> hvac.Client:
    return hvac.Client(url=adapter.base_uri, token=token, adapter=type(adapter),
                       **_adapter_options(adapter))


def _slim_pairs(pairs: list[tuple[str, Any]]) -> Any:
    """``json`` hook: a KV metadata object becomes ``(current_version, updated_time)``."""
    keys = {k for k, _ in pairs}
    if "current_version" in keys and "updated_time" in keys:
        got = dict(pairs)
        try:
            return int(got["current_version"]), str(got["updated_time"] or "")
        except (TypeError, ValueError):
            return None
    return dict(pairs)


def _slim_metadata(body: dict[str, Any]) -> dict[str, Any]:
    """``_slim_pairs`` for an answer some adapter parsed whole already."""
    data = body.get("data")
    if not isinstance(data, dict):
        return body
    info = {k: _slim_pairs(list(v.items())) if isinstance(v, dict) else None
            for k, v in (data.get("key_info") or {}).items()}
    return {**body, "data": {**data, "key_info": info}}
