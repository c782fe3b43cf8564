"""GET /v1/certificates filters and cursor paging, through the real API and Vault."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Iterator

import pytest
import requests

from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def http(certlocker_stack: CertlockerStack) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["X-Vault-Token"] = certlocker_stack.operator_token
        yield session


@pytest.fixture(scope="module")
def service(certlocker_stack: CertlockerStack, http: requests.Session) -> str:
    """Three issued certificates (Pebble) and one that failed, in a service of their own."""
    name = f"inv{random.randrange(10**8)}"
    for cert in ("a", "b", "c"):
        resp = http.post(f"{certlocker_stack.api_url}/v1/certificates?wait=60", json={
            "environment": "dev", "service": name, "name": cert,
            "dns_names": [f"{cert}.{name}.example.test"]}, timeout=90)
        assert resp.json()["status"] == "valid", resp.text
    # http-01 for this name goes to 127.0.0.2, where nothing listens: the order fails.
    bad_host = f"bad.{name}.example.test"
    cts = f"http://127.0.0.1:{certlocker_stack.stack.ports['challtestsrv_mgmt']}/add-a"
    requests.post(cts, json={"host": bad_host + ".", "addresses": ["127.0.0.2"]},
                  timeout=5).raise_for_status()
    resp = http.post(f"{certlocker_stack.api_url}/v1/certificates?wait=60", json={
        "environment": "prod", "service": name, "name": "bad", "dns_names": [bad_host]},
        timeout=90)
    assert resp.json()["status"] == "failed", resp.text
    return name


def ids(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [item["id"] for item in resp.json()["items"]]


def test_filters(certlocker_stack: CertlockerStack, http: requests.Session,
                 service: str) -> None:
    url = certlocker_stack.api_url + "/v1/certificates"
    every = [f"dev.{service}.a", f"dev.{service}.b", f"dev.{service}.c",
             f"prod.{service}.bad"]
    assert ids(http.get(url, params={"service": service})) == every
    assert ids(http.get(url, params={"service": service, "environment": "prod"})) == every[3:]
    assert ids(http.get(url, params={"service": service, "status": "failed"})) == every[3:]
    assert ids(http.get(url, params={"service": service, "issuer": "pebble"})) == every
    assert ids(http.get(url, params={"service": service, "issuer": "other"})) == []
    # Pebble's certificates last years: none expires within a day, all within 10 years.
    assert ids(http.get(url, params={"service": service, "expiring_within": "24h"})) == []
    assert ids(http.get(url, params={"service": service,
                                     "expiring_within": "3650d"})) == every[:3]


def test_cursor_paging(certlocker_stack: CertlockerStack, http: requests.Session,
                       service: str) -> None:
    url = certlocker_stack.api_url + "/v1/certificates"
    first = http.get(url, params={"service": service, "limit": "3"}).json()
    assert [i["id"] for i in first["items"]] == [f"dev.{service}.{c}" for c in "abc"]
    assert first["next_cursor"] == f"dev.{service}.c"
    second = http.get(url, params={"service": service, "limit": "3",
                                   "cursor": first["next_cursor"]}).json()
    assert [i["id"] for i in second["items"]] == [f"prod.{service}.bad"]
    assert second["next_cursor"] is None


@pytest.mark.parametrize("param, value", [
    ("environment", "../x"), ("service", "a/b"), ("status", "great"), ("issuer", "a b"),
    ("expiring_within", "soon"), ("limit", "0"), ("cursor", "nope"), ("frobnicate", "1")])
def test_invalid_filters_are_400_naming_the_parameter(
        certlocker_stack: CertlockerStack, http: requests.Session, param: str,
        value: str) -> None:
    resp = http.get(certlocker_stack.api_url + "/v1/certificates", params={param: value})
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["field"] == param


def test_the_expiry_index_names_its_days_in_vault(certlocker_stack: CertlockerStack,
                                                  http: requests.Session,
                                                  service: str) -> None:
    """The listing walks only the day folders named in ``system/index-days/expiry``
    (lifecycle/day_folders.py): certlocker's own policy lets it keep that document, and
    the day each issued certificate expires on is in it."""
    url = certlocker_stack.api_url + "/v1/certificates"
    assert ids(http.get(url, params={"service": service, "expiring_within": "7d"})) == []
    root = certlocker_stack.client(certlocker_stack.root_token)
    stored = root.secrets.kv.v2.read_secret_version(
        path="system/index-days/expiry", mount_point="certlocker",
        raise_on_deleted_version=True)["data"]["data"]
    days = set(json.loads(stored["json"])["days"])
    for cert in "abc":
        current = http.get(f"{url}/dev.{service}.{cert}").json()["current"]
        expires = dt.datetime.fromisoformat(current["not_after"].replace("Z", "+00:00"))
        assert expires.astimezone(dt.timezone.utc).strftime("%Y%m%d") in days
