"""The record of one unmanaged (shadow) certificate, as kept at ``discovered/<sha256>``.

Pure data and pure merging: a certificate seen again (on another port, in another file,
by a later scan) adds or refreshes a *source*; its public facts never change because the
fingerprint names them. Nothing here holds key material: discovery never reads keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ..clock import parse_rfc3339, rfc3339
from .files import FoundCertificate

MAX_SOURCES = 100
UNMANAGED, ADOPTED = "unmanaged", "adopted"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a certificate was seen: ``tls:host:port`` or ``file://host/path``."""

    source: str
    first_seen: dt.datetime
    last_seen: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "first_seen": rfc3339(self.first_seen),
                "last_seen": rfc3339(self.last_seen)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Source":
        return cls(data["source"], parse_rfc3339(data["first_seen"]),
                   parse_rfc3339(data["last_seen"]))


@dataclasses.dataclass(frozen=True)
class Adoption:
    certificate_id: str
    by: str
    at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"certificate_id": self.certificate_id, "by": self.by, "at": rfc3339(self.at)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Adoption":
        return cls(data["certificate_id"], data["by"], parse_rfc3339(data["at"]))


@dataclasses.dataclass(frozen=True)
class Discovery:
    sha256_fingerprint: str
    subject: str
    dns_names: tuple[str, ...]
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    is_ca: bool
    sources: tuple[Source, ...]
    owner: str | None = None  # unknown until someone adopts it
    adoption: Adoption | None = None

    @property
    def state(self) -> str:
        return ADOPTED if self.adoption else UNMANAGED

    @property
    def last_seen(self) -> dt.datetime:
        return max(s.last_seen for s in self.sources)

    @property
    def first_seen(self) -> dt.datetime:
        return min(s.first_seen for s in self.sources)

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256_fingerprint": self.sha256_fingerprint,
            "subject": self.subject,
            "dns_names": list(self.dns_names),
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "is_ca": self.is_ca,
            "owner": self.owner,
            "sources": [s.to_json() for s in self.sources],
            "adoption": self.adoption.to_json() if self.adoption else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Discovery":
        return cls(
            sha256_fingerprint=data["sha256_fingerprint"], subject=data["subject"],
            dns_names=tuple(data.get("dns_names") or ()), issuer=data["issuer"],
            serial=data["serial"], not_before=parse_rfc3339(data["not_before"]),
            not_after=parse_rfc3339(data["not_after"]), is_ca=bool(data.get("is_ca")),
            sources=tuple(Source.from_json(s) for s in data.get("sources") or ()),
            owner=data.get("owner"),
            adoption=Adoption.from_json(data["adoption"]) if data.get("adoption") else None)

    def view(self, now: dt.datetime, expiring_within: dt.timedelta) -> dict[str, Any]:
        """What the API shows: the record plus flags computed at ``now`` (a stored flag
        would go stale as time passes)."""
        return {**self.to_json(), "state": self.state,
                "first_seen": rfc3339(self.first_seen), "last_seen": rfc3339(self.last_seen),
                "expiring_soon": self.not_after - now <= expiring_within,
                "expired": self.not_after <= now}


def merge(existing: Discovery | None, found: FoundCertificate, seen_at: dt.datetime,
          ) -> Discovery:
    """``existing`` with ``found.source`` added (or its ``last_seen`` moved to
    ``seen_at``); a new record when there is none. Keeps the ``MAX_SOURCES`` most
    recently seen sources."""
    if existing is None:
        return Discovery(
            sha256_fingerprint=found.sha256_fingerprint.lower(), subject=found.subject,
            dns_names=found.dns_names, issuer=found.issuer, serial=found.serial,
            not_before=found.not_before, not_after=found.not_after, is_ca=found.is_ca,
            sources=(Source(found.source, seen_at, seen_at),))
    sources = {s.source: s for s in existing.sources}
    old = sources.get(found.source)
    sources[found.source] = Source(found.source, old.first_seen if old else seen_at,
                                   seen_at)
    kept = sorted(sources.values(), key=lambda s: s.last_seen, reverse=True)[:MAX_SOURCES]
    return dataclasses.replace(existing, sources=tuple(sorted(kept, key=lambda s: s.source)))
