"""An in-memory DNS provider for unit tests: a real record set, no network."""

from __future__ import annotations


class MemoryDnsProvider:
    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.log: list[tuple[str, str, str]] = []

    def present(self, fqdn: str, value: str) -> None:
        self.log.append(("present", fqdn, value))
        values = self.records.setdefault(fqdn.rstrip(".").lower(), [])
        if value not in values:
            values.append(value)

    def cleanup(self, fqdn: str, value: str) -> None:
        self.log.append(("cleanup", fqdn, value))
        values = self.records.get(fqdn.rstrip(".").lower(), [])
        if value in values:
            values.remove(value)
