"""The served OpenAPI document is valid OpenAPI 3.1 and describes every /v1 route."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from flask import Flask
from openapi_spec_validator import validate

from certlocker import settings as settings_mod
from certlocker.app import create_app
from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration

IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def app(certlocker_stack: CertlockerStack) -> Flask:
    """The app as gunicorn builds it, with real services over the shared stack's Vault."""
    settings = settings_mod.load(environ=certlocker_stack.stack.service_env())
    return create_app(settings)


@pytest.fixture(scope="module")
def doc(certlocker_stack: CertlockerStack) -> dict:
    with urllib.request.urlopen(certlocker_stack.api_url + "/openapi.json",
                                timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() == "application/json"
        return json.loads(resp.read())


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z0-9_]+:)?([a-z0-9_]+)>", r"{\1}", rule)


def test_document_is_valid_openapi_3_1(doc: dict) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_v1_route_and_method_is_documented(app: Flask, doc: dict) -> None:
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        path = _openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            if method.lower() not in doc["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from api/openapi.py: {missing}"


def test_documented_v1_paths_exist(app: Flask, doc: dict) -> None:
    served = {_openapi_path(r.rule) for r in app.url_map.iter_rules()}
    assert {p for p in doc["paths"] if p not in served} == set()


def test_every_error_response_is_a_problem_document(doc: dict) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if int(status) >= 400 and "$ref" in response:
                    name = response["$ref"].rsplit("/", 1)[1]
                    content = doc["components"]["responses"][name]["content"]
                    assert list(content) == ["application/problem+json"], (path, method)


def test_certificate_schema_carries_the_design_contract(doc: dict) -> None:
    cert = doc["components"]["schemas"]["Certificate"]
    assert {"id", "environment", "service", "name", "dns_names", "status", "current",
            "vault", "targets"} <= set(cert["required"])
    current = doc["components"]["schemas"]["Current"]
    assert {"serial", "not_before", "not_after", "sha256_fingerprint",
            "issuer"} <= set(current["required"])
    assert cert["properties"]["vault"]["required"] == ["path"]
    target = doc["components"]["schemas"]["TargetStatus"]
    assert {"address", "status", "served_sha256", "checked_at"} <= set(target["required"])
