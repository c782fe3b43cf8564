"""An honest in-memory ``lifecycle.ports.Store``: KV v2 semantics kept in a dict.

Every path keeps its versions; ``cas=0`` writes only when nothing is stored, ``cas=n``
only when the current version is ``n`` (else ``Conflict``); ``destroy`` removes the
path with its metadata, as ``delete_metadata_and_all_versions`` does; ``list`` answers
the immediate children of a directory, sub-directories with a trailing ``/``, as a KV
v2 LIST does. ``calls`` counts operations per kind (and ``paths_read`` records what was
read), so tests can check how much work something did. ``spec_versions`` answers as
OpenBao's ``SCAN detailed-metadata/specs/`` does (each spec's current version and the
time it was last written, by ``clock``), or None as HashiCorp Vault would when
``scans`` is False.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import threading
from typing import Any

from certlocker.clock import Clock, SystemClock
from certlocker.errors import AlreadyExists, Conflict, NotFound
from certlocker.models import (CertificateRef, CertificateSpec, CertificateStatus,
                               IssuedCertificate)
from certlocker.paths import VaultPaths
from certlocker.specs import PERMISSIVE, SpecRules, from_record


class MemoryStore:
    def __init__(self, paths: VaultPaths | None = None, clock: Clock | None = None,
                 spec_rules: SpecRules = PERMISSIVE) -> None:
        self.paths = paths or VaultPaths()
        self.spec_rules = spec_rules
        self.clock: Clock = clock or SystemClock()
        self.scans = True
        self._written: dict[str, dt.datetime] = {}
        self._lock = threading.RLock()
        self._data: dict[str, list[str]] = {}  # path -> versions, as JSON (as Vault keeps)
        self.calls: collections.Counter[str] = collections.Counter()
        self.paths_read: list[str] = []

    def capabilities(self, api_path: str) -> set[str]:
        """A memory store has no policies: it may do anything, as Vault's root token."""
        return {"root"}

    # -- generic KV v2 ---------------------------------------------------------------
    def read(self, logical: str) -> tuple[dict[str, Any] | None, int]:
        with self._lock:
            self.calls["read"] += 1
            self.paths_read.append(logical)
            versions = self._data.get(logical)
            if not versions:
                return None, 0
            return json.loads(versions[-1]), len(versions)

    def write(self, logical: str, data: dict[str, Any], cas: int | None) -> int:
        with self._lock:
            self.calls["write"] += 1
            versions = self._data.setdefault(logical, [])
            if cas is not None and cas != len(versions):
                if not versions:
                    del self._data[logical]
                raise Conflict(f"{logical} was changed by another writer")
            versions.append(json.dumps(data))
            self._written[logical] = self.clock.now()
            return len(versions)

    def seed(self, logical: str, document_json: str) -> None:
        """Store one version from ready JSON text: for building large inventories fast."""
        with self._lock:
            self._data.setdefault(logical, []).append(document_json)
            self._written[logical] = self.clock.now()

    def versions(self, logical: str) -> int:
        with self._lock:
            return len(self._data.get(logical, []))

    def destroy(self, logical: str) -> None:
        with self._lock:
            self.calls["destroy"] += 1
            self._data.pop(logical, None)
            self._written.pop(logical, None)

    def list(self, logical_dir: str) -> list[str]:
        with self._lock:
            self.calls["list"] += 1
            prefix = logical_dir if logical_dir.endswith("/") else logical_dir + "/"
            children = set()
            for path in self._data:
                if path.startswith(prefix):
                    rest = path[len(prefix):]
                    head, sep, _ = rest.partition("/")
                    children.add(head + sep)
            return sorted(children)

    def spec_versions(self) -> dict[str, tuple[int, dt.datetime]] | None:
        with self._lock:
            self.calls["spec_versions"] += 1
            if not self.scans:
                return None
            return {path[len("specs/"):]: (len(versions), self._written[path])
                    for path, versions in self._data.items()
                    if path.startswith("specs/") and versions}

    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]:
        data, version = self.read(logical)
        if data is None:
            return None, 0
        return (json.loads(data["json"]) if "json" in data else data), version

    def write_json(self, logical: str, document: dict[str, Any], cas: int | None) -> int:
        return self.write(logical, {"json": json.dumps(document, sort_keys=True)}, cas=cas)

    # -- certificates ------------------------------------------------------------------
    def read_spec(self, ref: CertificateRef) -> tuple[CertificateSpec, int] | None:
        self.calls["read_spec"] += 1
        data, version = self.read(self.paths.spec(ref))
        return (from_record(data, ref, self.spec_rules), version) if data else None

    def create_spec(self, spec: CertificateSpec) -> int:
        try:
            return self.write(self.paths.spec(spec.ref), spec.to_json(), cas=0)
        except Conflict:
            raise AlreadyExists(f"certificate {spec.ref.id} is already declared") from None

    def read_status(self, ref: CertificateRef) -> tuple[CertificateStatus, int] | None:
        self.calls["read_status"] += 1
        data, version = self.read(self.paths.status(ref))
        return (CertificateStatus.from_json(data), version) if data else None

    def write_status(self, ref: CertificateRef, status: CertificateStatus, cas: int) -> int:
        return self.write(self.paths.status(ref), status.to_json(), cas=cas)

    def store_certificate(self, ref: CertificateRef, issued: IssuedCertificate,
                          expected_version: int | None = None) -> int:
        path = self.paths.cert(ref)
        if expected_version is not None:
            try:
                return self.write(path, issued.to_vault(), cas=expected_version)
            except Conflict:
                pass
        return self.write(path, issued.to_vault(), cas=self.versions(path))

    def require(self, logical: str) -> dict[str, Any]:
        data, _ = self.read(logical)
        if data is None:
            raise NotFound(logical)
        return data


def grant(store: Any, *specs: CertificateSpec) -> None:
    """An administrator grants each spec's service the spec's names (``grants/<env>/
    <service>``, merged with what was granted before), as `bao kv put` would: for tests
    that write specs straight into the store, where no declaration grants them."""
    for spec in specs:
        path = store.paths.grant(spec.ref.environment, spec.ref.service)
        doc, version = store.read_json(path)
        names = list(dict.fromkeys([*((doc or {}).get("dns_names") or []), *spec.dns_names]))
        store.write(path, {**(doc or {}), "dns_names": names}, cas=version)
