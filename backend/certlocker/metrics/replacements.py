"""The mass-replacement gauge: certificates per state over every running replacement
operation (``lifecycle.replacements``), from a cached summary so a scrape reads no
Vault."""

from __future__ import annotations

from typing import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .summary import SummaryCache

NAME = "certlocker_replacement_certificates"
HELP = ("Certificates of running mass replacements by state (pending, awaiting-client, "
        "failing, issued, verified, revoked, revoke-failed, gone).")


class ReplacementCollector(Collector):
    def __init__(self, cache: SummaryCache[dict[str, int]]) -> None:
        self._cache = cache

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(NAME, HELP, labels=["state"])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(NAME, HELP, labels=["state"])
        for state, count in sorted((self._cache.value() or {}).items()):
            family.add_metric([state], count)
        yield family
