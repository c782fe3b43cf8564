"""Prometheus metrics: the only importer of ``prometheus_client``.

Two kinds, kept apart on purpose:

- **State gauges** (expiry, renewal time, readiness, served-cert verification) come from
  Vault through ``SummaryCache``: a custom collector turns the cached summary into
  metric families at scrape time. Every process computes them from the same records, so
  it does not matter which gunicorn worker answers, and no scrape walks the inventory.
- **Event counters** (renewal failures, issuance duration) are counted in the process
  where the issuance ran. With several gunicorn workers (and a reconciler) they are
  shared through prometheus_client's multiprocess mode: set ``PROMETHEUS_MULTIPROC_DIR``
  to an empty directory for every certlocker process on the host before they start, and
  ``/metrics`` sums the files of all of them. Without it (one process) they live in
  memory.

Names follow cert-manager's where one exists (``certmanager_certificate_*`` ->
``certlocker_certificate_*``).
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..lifecycle.records.heartbeat import Heartbeat
from ..lifecycle.verification import SEVERITY
from ..models import CertificateRef
from .summary import CertificateRow, SummaryCache

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: ``name`` is the certificate's id (``prod.api.www``), unique per certificate as
#: cert-manager's ``name`` is within a namespace, so its mixin's ``by (name)`` alerts
#: never merge two certificates; ``certificate`` is the last part of the id alone.
CERT_LABELS = ["id", "environment", "service", "certificate", "name", "issuer"]
ACME_LABELS = ["scheme", "host", "path", "method", "status"]
READY_CONDITIONS = ("True", "False", "Unknown")

RENEWAL_FAILURES = Counter(
    "certlocker_renewal_failures_total",
    "Issuance attempts (first issuance or renewal) that failed.",
    ["id", "environment", "service", "certificate", "name"], registry=None)
ACME_REQUESTS = Counter(
    "certlocker_http_acme_client_request_count",
    "HTTP requests to ACME CAs by scheme, host, endpoint path (ids removed), method and "
    "status (0: no answer; 429: the CA's rate limit), as cert-manager's "
    "certmanager_http_acme_client_request_count.", ACME_LABELS, registry=None)
ACME_REQUEST_DURATION = Histogram(
    "certlocker_http_acme_client_request_duration_seconds",
    "Time taken by HTTP requests to ACME CAs, by the same labels.", ACME_LABELS,
    registry=None, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ISSUANCE_DURATION = Histogram(
    "certlocker_issuance_duration_seconds",
    "Wall time of one issuance attempt under its lease, from order to stored bundle.",
    ["outcome"], registry=None,
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600))


class IssuanceMetrics:
    """``lifecycle.observe.IssuanceObserver`` that counts into the metrics above."""

    def issuance_finished(self, ref: CertificateRef, seconds: float, ok: bool) -> None:
        ISSUANCE_DURATION.labels("success" if ok else "failure").observe(seconds)
        if not ok:
            RENEWAL_FAILURES.labels(ref.id, ref.environment, ref.service, ref.name,
                                    ref.id).inc()


class AcmeRequestMetrics:
    """``issuance.http.RequestObserver`` that counts into the ACME request metrics."""

    def acme_request(self, scheme: str, host: str, path: str, method: str, status: str,
                     seconds: float) -> None:
        ACME_REQUESTS.labels(scheme, host, path, method, status).inc()
        ACME_REQUEST_DURATION.labels(scheme, host, path, method, status).observe(seconds)


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    return {
        "expiration": GaugeMetricFamily(
            "certlocker_certificate_expiration_timestamp_seconds",
            "The date after which the current certificate expires (Unix seconds).",
            labels=CERT_LABELS),
        "renewal": GaugeMetricFamily(
            "certlocker_certificate_renewal_timestamp_seconds",
            "The time the current certificate becomes due for renewal (Unix seconds).",
            labels=CERT_LABELS),
        "ready": GaugeMetricFamily(
            "certlocker_certificate_ready_status",
            "1 for the certificate's current Ready condition (True, False, Unknown).",
            labels=CERT_LABELS + ["condition"]),
        "targets": GaugeMetricFamily(
            "certlocker_target_verification_state",
            "1 for the state in which each target node was last found serving the "
            "certificate (only the current state is exported, to bound series).",
            labels=["id", "address", "state"]),
        "failing": GaugeMetricFamily(
            "certlocker_certificate_renewal_failing",
            "1 while the certificate's last issuance attempt (first or renewal) failed "
            "and certlocker is retrying, else 0.", labels=CERT_LABELS),
        "certificates": GaugeMetricFamily(
            "certlocker_certificates", "Managed certificates by lifecycle state.",
            labels=["state"]),
        "age": GaugeMetricFamily(
            "certlocker_inventory_summary_age_seconds",
            "Age of the inventory summary the gauges above were computed from."),
        "tick": GaugeMetricFamily(
            "certlocker_reconciler_last_tick_timestamp_seconds",
            "When each reconciler process last finished a tick (Unix seconds); processes "
            "silent for a day drop out.", labels=["reconciler"]),
        "sweep": GaugeMetricFamily(
            "certlocker_reconciler_last_sweep_timestamp_seconds",
            "When each reconciler process last finished a full sweep of the inventory.",
            labels=["reconciler"]),
        "reconciler_failures": CounterMetricFamily(
            "certlocker_reconciler_failures",
            "Failures in each reconciler process since it started, by kind: issuance "
            "(attempts that failed), certificate (handling broke), alert-delivery, "
            "vault-unavailable, tick; from its heartbeat in Vault.",
            labels=["reconciler", "kind"]),
        "token": GaugeMetricFamily(
            "certlocker_vault_token_expiry_timestamp_seconds",
            "When certlocker's own Vault token expires unless renewed (Unix seconds; "
            "absent for a token that never expires). certlocker renews it."),
    }


class InventoryCollector(Collector):
    """Certificate state gauges from the cached summary; the expiry of certlocker's own
    token (a cached Unix time, 0 for a token that never expires); the reconcilers'
    heartbeats."""

    def __init__(self, cache: SummaryCache[list[CertificateRow]],
                 token_expiry: SummaryCache[float] | None = None,
                 reconcilers: SummaryCache[list[Heartbeat]] | None = None,
                 extra: Sequence[Collector] = ()) -> None:
        self._cache = cache
        self._extra = tuple(extra)  # more gauges from cached summaries (replacements)
        self._token_expiry = token_expiry
        self._reconcilers = reconcilers

    def describe(self) -> Iterable[Metric]:
        return list(_families().values())  # without samples: registering reads no Vault

    def collect(self) -> Iterator[Metric]:
        rows = self._cache.value()
        families = _families()
        states: dict[str, int] = {}
        for r in rows or ():
            _add(families, r)
            states[r.state] = states.get(r.state, 0) + 1
        for state, count in sorted(states.items()):
            families["certificates"].add_metric([state], count)
        age = self._cache.age()
        if age is not None:
            families["age"].add_metric([], age)
        expiry = self._token_expiry.value() if self._token_expiry is not None else None
        if expiry:
            families["token"].add_metric([], expiry)
        beats = self._reconcilers.value() if self._reconcilers is not None else None
        for beat in beats or ():
            families["tick"].add_metric([beat.name], beat.last_tick_at.timestamp())
            if beat.last_sweep_at is not None:
                families["sweep"].add_metric([beat.name], beat.last_sweep_at.timestamp())
            for kind, count in sorted(beat.failures.items()):
                families["reconciler_failures"].add_metric([beat.name, kind], count)
        yield from families.values()
        for collector in self._extra:
            yield from collector.collect()


def _add(families: dict[str, GaugeMetricFamily | CounterMetricFamily],
         r: CertificateRow) -> None:
    labels = [r.ref.id, r.ref.environment, r.ref.service, r.ref.name, r.ref.id, r.issuer]
    if r.not_after is not None:
        families["expiration"].add_metric(labels, r.not_after.timestamp())
    if r.renewal_at is not None:
        families["renewal"].add_metric(labels, r.renewal_at.timestamp())
    families["failing"].add_metric(labels, 1.0 if r.renewal_failing else 0.0)
    for condition in READY_CONDITIONS:
        families["ready"].add_metric(labels + [condition],
                                     1.0 if condition == r.ready else 0.0)
    for address, state in r.targets:
        families["targets"].add_metric([r.ref.id, address, state if state in SEVERITY
                                        else "unknown"], 1.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(inventory: InventoryCollector) -> bytes:
    """The text exposition of every certlocker metric, for one scrape.

    A fresh registry per scrape is prometheus_client's multiprocess recipe: it reads
    every process's files at collection time.
    """
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        # prometheus_client leaves this constructor unannotated.
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in (RENEWAL_FAILURES, ISSUANCE_DURATION, ACME_REQUESTS,
                       ACME_REQUEST_DURATION):
            registry.register(metric)
    registry.register(inventory)
    return generate_latest(registry)
