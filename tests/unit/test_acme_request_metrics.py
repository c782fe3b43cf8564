"""ACME requests are counted as cert-manager counts them
(``certmanager_http_acme_client_request_count{scheme,host,path,method,status}``), so its
mixin's ``CertManagerHittingRateLimits`` (``status="429"``) works after a relabel. The
CA here is a ``requests`` transport answering as a rate-limited CA does."""

from __future__ import annotations

import json
from typing import Any

import josepy as jose
import pytest
import requests
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families
from requests.adapters import BaseAdapter

from certlocker.issuance import acme_issuer
from certlocker.transport.acme_session import path_label
from certlocker.metrics.collector import AcmeRequestMetrics, InventoryCollector, exposition
from certlocker.metrics.summary import SummaryCache


class RateLimitedCa(BaseAdapter):
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 429
        response.headers["Content-Type"] = "application/problem+json"
        response.headers["Retry-After"] = "3600"
        response._content = json.dumps({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many new orders recently"}).encode()
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


def counted(path: str, status: str) -> float:
    text = exposition(InventoryCollector(SummaryCache(lambda: [], max_age=60))).decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "certlocker_http_acme_client_request_count_total"
               and s.labels == {"scheme": "https", "host": "ca.test:14000", "path": path,
                                "method": "GET", "status": status})


def test_a_rate_limited_request_is_counted_with_its_status_and_path() -> None:
    net = acme_issuer._Network(key=jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1())),
                               alg=jose.ES256)
    net.session = requests.Session()
    net.session.mount("https://", RateLimitedCa())
    net.observer = AcmeRequestMetrics()
    before = counted("/acme/new-order", "429")
    with pytest.raises(messages.Error) as refused:
        net.get("https://ca.test:14000/acme/new-order/8713/x1Y2", content_type=None)
    assert refused.value.code == "rateLimited"
    assert counted("/acme/new-order", "429") == before + 1


@pytest.mark.parametrize("path, label", [
    ("/acme/new-order", "/acme/new-order"),
    ("/acme/authz/123456/987654321", "/acme/authz"),
    ("/acme/chall/123/456/AbCd", "/acme/chall"),
    ("/finalize-order/V2x3rTqSWn0", "/finalize-order"),
    ("/my-order/KJ-klsjdfoiwejrlkwejrlkwejr", "/my-order"),
    ("/dir", "/dir"),
    ("/", "/"),
    ("/acme/renewal-info/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", "/acme/renewal-info"),
])
def test_ids_are_cut_from_the_path_label(path: str, label: str) -> None:
    assert path_label(path) == label
