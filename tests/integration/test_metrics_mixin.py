"""/metrics on the real stack (two gunicorn workers, real Pebble), as cert-manager's
mixin reads it after one relabel (docs/observability.md):

- every certificate has its own ``name`` (six ``www`` certificates in six prod services
  are six series, not {prod, www});
- ACME requests are counted by scheme, host, path, method and status, the shape of
  ``certmanager_http_acme_client_request_count``;
- counters do not jump between the workers' values: the stack sets no
  ``PROMETHEUS_MULTIPROC_DIR``, and certlocker's gunicorn worker class shares one
  directory between the workers by itself.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration


def declare(stack: CertlockerStack, service: str, wait: int = 60) -> dict[str, Any]:
    resp = requests.post(stack.api_url + f"/v1/certificates?wait={wait}", timeout=120,
                         headers={"X-Vault-Token": stack.operator_token, "Connection": "close"},
                         json={"environment": "prod", "service": service, "name": "www",
                               "dns_names": [f"www.{service}.test"]})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def scrape(stack: CertlockerStack) -> list[Any]:
    """One scrape on a fresh connection (so successive scrapes reach both workers)."""
    resp = requests.get(stack.api_url + "/metrics", timeout=60,
                        headers={**stack.metrics_headers(), "Connection": "close"})
    assert resp.status_code == 200, resp.text
    return [s for f in text_string_to_metric_families(resp.text) for s in f.samples]


def total(samples: list[Any], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_each_certificate_has_its_own_name_and_acme_requests_are_counted(
        certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    for i in range(3):
        declare(stack, f"mixin-{i}")
    pebble = stack.directory_url.split("/")[2]
    deadline = time.monotonic() + 60  # the summary is rebuilt every refresh interval
    while True:
        samples = scrape(stack)
        names = {s.labels["name"] for s in samples
                 if s.name == "certlocker_certificate_expiration_timestamp_seconds"
                 and s.labels["service"].startswith("mixin-")}
        if len(names) == 3 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert names == {"prod.mixin-0.www", "prod.mixin-1.www", "prod.mixin-2.www"}
    ready = [s for s in samples if s.name == "certlocker_certificate_ready_status"
             and s.labels["name"] == "prod.mixin-0.www" and s.labels["condition"] == "True"]
    assert [s.value for s in ready] == [1.0] and ready[0].labels["certificate"] == "www"

    requests_total = "certlocker_http_acme_client_request_count_total"
    assert total(samples, requests_total, scheme="https", host=pebble, path="/order-plz",
                 method="POST", status="201") >= 3
    assert total(samples, requests_total, host=pebble, path="/finalize-order",
                 method="POST", status="200") >= 3
    assert total(samples, requests_total, host=pebble, path="/dir", method="GET",
                 status="200") >= 1
    paths = {s.labels["path"] for s in samples if s.name == requests_total}
    assert all(not any(c.isdigit() for c in p) for p in paths), paths  # no ids: bounded
    assert total(samples, "certlocker_http_acme_client_request_duration_seconds_count",
                 path="/order-plz") >= 3


def test_counters_never_go_back_between_scrapes_of_two_workers(
        certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    for i in range(4):  # fresh connections: issued in one worker or the other
        declare(stack, f"workers-{i}")
    seen = []
    for _ in range(12):
        samples = scrape(stack)
        seen.append((total(samples, "certlocker_issuance_duration_seconds_count",
                           outcome="success"),
                     total(samples, "certlocker_http_acme_client_request_count_total",
                           path="/order-plz", status="201")))
    issued = [s[0] for s in seen]
    orders = [s[1] for s in seen]
    assert issued == sorted(issued) and orders == sorted(orders), seen  # never back
    assert issued[0] >= 4 and orders[0] >= 4, seen
