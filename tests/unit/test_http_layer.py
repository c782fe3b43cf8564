"""The HTTP layer on an application without servers (``conftest.app``): routing, problem
documents and authentication come before anything reaches Vault."""

from __future__ import annotations

from flask.testing import FlaskClient
from openapi_spec_validator import validate


def test_liveness_needs_nothing(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200


def test_readiness_says_vault_is_away(client: FlaskClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.mimetype == "application/problem+json"


def test_an_unknown_route_is_a_problem_document(client: FlaskClient) -> None:
    resp = client.get("/v1/nothing-here")
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    assert set(resp.get_json()) >= {"type", "title", "status", "detail"}


def test_no_token_is_a_401_before_the_body_is_read(client: FlaskClient) -> None:
    resp = client.post("/v1/certificates", json={"environment": "staging"})
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
    assert "staging" not in resp.get_json()["detail"]


def test_the_openapi_document_names_this_deployments_environments(
        client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    validate(doc)
    declaration = doc["components"]["schemas"]["CertificateDeclaration"]
    assert declaration["properties"]["environment"]["enum"] == ["dev", "prod"]
