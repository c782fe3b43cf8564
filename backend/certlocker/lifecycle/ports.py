"""What the lifecycle layer needs from storage: a Protocol, implemented by
``certlocker.vault.store.VaultStore`` and by the in-memory fake in tests."""

from __future__ import annotations

from typing import Any, Protocol

from ..models import CertificateRef, CertificateSpec, CertificateStatus, IssuedCertificate
from ..paths import VaultPaths


class Store(Protocol):
    paths: VaultPaths

    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]: ...

    def write_json(self, logical: str, document: dict[str, Any], cas: int | None) -> int: ...

    def write(self, logical: str, data: dict[str, Any], cas: int | None) -> int: ...

    def destroy(self, logical: str) -> None: ...

    def list(self, logical_dir: str) -> list[str]: ...

    def read_spec(self, ref: CertificateRef) -> tuple[CertificateSpec, int] | None: ...

    def create_spec(self, spec: CertificateSpec) -> int: ...

    def read_status(self, ref: CertificateRef) -> tuple[CertificateStatus, int] | None: ...

    def write_status(self, ref: CertificateRef, status: CertificateStatus, cas: int) -> int: ...

    def store_certificate(self, ref: CertificateRef, issued: IssuedCertificate,
                          expected_version: int | None = None) -> int: ...
