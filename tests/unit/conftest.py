"""An application without servers, as Flask's tutorial builds one: ``create_app`` over
services that the composition root wires to a Vault address where nothing listens. The
HTTP layer (routing, problem documents, authentication first, the OpenAPI document) is
exercised for real; whatever needs Vault answers 503, as a real API does while Vault is
away."""

from __future__ import annotations

import socket
from typing import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from certlocker import settings as settings_mod
from certlocker.app import create_app
from certlocker.composition import build_services


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app() -> Iterator[Flask]:
    settings = settings_mod.load(environ={
        "CERTLOCKER_VAULT_ADDR": f"http://127.0.0.1:{_closed_port()}",
        "CERTLOCKER_VAULT_TOKEN": "unit-test-token", "CERTLOCKER_VAULT_RETRY_SECONDS": "0",
        "CERTLOCKER_ENVIRONMENTS": "dev,prod", "CERTLOCKER_LOG_FORMAT": "text"})
    services = build_services(settings)
    app = create_app(settings, services=services)
    app.config.update(TESTING=True)
    yield app
    services.pools.shutdown()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
