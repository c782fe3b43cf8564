"""The dashboard's session secret lives in Vault, and Flask opens the session before any
view runs, outside the error handlers. A request must never turn into a 500 because that
secret cannot be read now: API calls carry no session cookie and need no secret; a
cookie that cannot be checked means signed out; the login answers 503."""

from __future__ import annotations

import types
from typing import Any

import pytest
from flask import Flask

from certlocker.api import dashboard, problems
from certlocker.errors import OwnTokenRefused, VaultUnavailable
from certlocker.paths import VaultPaths


class Store:
    paths = VaultPaths()

    def __init__(self, failure: Exception | None) -> None:
        self.failure = failure
        self.secret_reads = 0
        self.doc: dict[str, Any] | None = None

    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]:
        assert logical == self.paths.dashboard_secret()
        self.secret_reads += 1
        if self.failure is not None:
            raise self.failure
        return self.doc, 1 if self.doc else 0

    def write_json(self, logical: str, document: dict[str, Any], cas: int | None) -> int:
        self.doc = document
        return 1

    def for_token(self, token: str) -> Any:
        return types.SimpleNamespace(lookup_self=lambda: {"display_name": "ops"})


def app_with(store: Store) -> Flask:
    app = Flask(__name__)
    app.extensions["certlocker"] = types.SimpleNamespace(
        store=store, settings=types.SimpleNamespace(session_secret=None,
                                                    public_url="http://127.0.0.1"))
    problems.init_app(app)
    app.register_blueprint(dashboard.bp)

    @app.get("/v1/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.mark.parametrize("failure", [OwnTokenRefused("certlocker's own token refused"),
                                     VaultUnavailable("Vault is sealed")])
def test_without_the_secret_no_request_becomes_a_500(failure: Exception) -> None:
    store = Store(failure)
    client = app_with(store).test_client()

    assert client.get("/v1/ping").status_code == 200
    assert store.secret_reads == 0  # an API call without a cookie never asks for it

    client.set_cookie("certlocker_session", "eyJ0IjoiYWJjIn0.Zz.sig")
    page = client.get("/")
    assert (page.status_code, page.headers["Location"]) == (303, "/login")

    login = client.post("/login", data={"token": "s.operator"})
    assert login.status_code == failure.status  # type: ignore[attr-defined]
    assert login.mimetype == "text/html"  # the form again, saying why
    assert "cannot sign you in now" in login.get_data(as_text=True)

    out = client.post("/logout")
    assert (out.status_code, out.headers["Location"]) == (303, "/login")
    assert client.get_cookie("certlocker_session") is None


def test_once_vault_answers_the_login_works_and_the_cookie_reads_back() -> None:
    store = Store(VaultUnavailable("Vault is sealed"))
    client = app_with(store).test_client()
    assert client.post("/login", data={"token": "s.operator"}).status_code == 503
    store.failure = None
    login = client.post("/login", data={"token": "s.operator"})
    assert login.status_code == 303 and login.headers["Location"] == "/"
    cookie = client.get_cookie("certlocker_session")
    assert cookie is not None and "s.operator" not in cookie.value
