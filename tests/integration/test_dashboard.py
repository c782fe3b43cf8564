"""The dashboard at GET /, seen by a real headless Chromium against the real stack.

An operator signs in with their Vault token through the login form and sees what a
person needs: issued certificates with their id and expiry, a certificate whose target
is down marked as failing, an unmanaged certificate found by discovery, recent audit
events. The token never appears in the page or in the cookie.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import socket
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certlocker.discovery.files import describe
from tests.support.chromium import running_chromium

pytestmark = pytest.mark.integration


def api(stack: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, stack.api_url + path, timeout=120,
                            headers={"X-Vault-Token": stack.operator_token}, **kwargs)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scene(certlocker_stack: Any) -> dict[str, Any]:
    ok = api(certlocker_stack, "POST", "/v1/certificates?wait=60", json={
        "environment": "prod", "service": "dash-api", "name": "www",
        "dns_names": ["www.dash-api.test"]})
    assert ok.status_code == 201, ok.text
    down = api(certlocker_stack, "POST", "/v1/certificates?wait=60", json={
        "environment": "prod", "service": "dash-web", "name": "www",
        "dns_names": ["www.dash-web.test"],
        "targets": [{"address": f"127.0.0.1:{closed_port()}"}]})
    assert down.status_code == 201, down.text
    verified = api(certlocker_stack, "POST", "/v1/certificates/prod.dash-web.www/verify")
    assert verified.status_code == 200, verified.text
    assert verified.json()["targets"][0]["status"] == "unreachable"

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dash-shadow.test")])
    now = dt.datetime.now(dt.timezone.utc)
    shadow = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(days=1))
              .not_valid_after(now + dt.timedelta(days=4))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("dash-shadow.test")]),
                             critical=False)
              .sign(key, hashes.SHA256()))
    reported = api(certlocker_stack, "POST", "/v1/discovery/findings", json={
        "host": "legacy-1",
        "findings": [describe(shadow, "file:/etc/ssl/legacy.pem").to_json()]})
    assert reported.status_code == 200, reported.text
    assert reported.json()["counts"]["unmanaged"] == 1
    return {"ok": ok.json(), "down": down.json()}


def _shown(timestamp: str) -> str:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).strftime(
        "%Y-%m-%d %H:%M")


def _login(browser: Any, url: str, token: str) -> None:
    browser.navigate(url + "/")
    assert browser.evaluate("location.pathname") == "/login"
    browser.events.clear()
    browser.evaluate(f"document.getElementById('token').value = {token!r}; "
                     "document.getElementById('signin').click(); true")
    browser.wait_event("Page.loadEventFired")


def test_an_operator_sees_the_inventory_in_a_real_browser(
        certlocker_stack: Any, scene: dict[str, Any], tmp_path: Path) -> None:
    token = certlocker_stack.operator_token
    with running_chromium(tmp_path) as browser:
        _login(browser, certlocker_stack.api_url, token)
        assert browser.evaluate("location.pathname") == "/"
        shot = browser.screenshot(tmp_path / "dashboard.png")
        text = browser.evaluate("document.body.innerText")
        html = browser.evaluate("document.documentElement.outerHTML")
        section = {s: browser.evaluate(f"document.getElementById('{s}').innerText")
                   for s in ("inventory", "failing", "discoveries", "reconcilers", "audit")}
        cookies = browser.call("Network.getCookies",
                               urls=[certlocker_stack.api_url + "/"])["cookies"]

        assert "prod.dash-api.www" in section["inventory"]
        assert _shown(scene["ok"]["current"]["not_after"]) in section["inventory"]
        assert "prod.dash-web.www" in section["failing"]
        assert "unreachable" in section["failing"]
        assert "prod.dash-api.www" not in section["failing"]
        assert "CN=dash-shadow.test" in section["discoveries"]
        assert "file://legacy-1/etc/ssl/legacy.pem" in section["discoveries"]
        assert "certificate.issue" in section["audit"]
        assert "discovery.findings" in section["audit"]
        [reconciler] = [p for p in certlocker_stack.stack.procs if p.name == "reconciler"]
        assert f"-{reconciler.pid}" in section["reconcilers"]
        assert "s ago" in section["reconcilers"]
        assert token not in html and token not in text

        [cookie] = [c for c in cookies if c["name"] == "certlocker_session"]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert token not in _cookie_payload(cookie["value"])
        assert shot.stat().st_size > 10_000

        browser.events.clear()
        browser.evaluate("document.querySelector('header form button').click(); true")
        browser.wait_event("Page.loadEventFired")
        assert browser.evaluate("location.pathname") == "/login"
        browser.navigate(certlocker_stack.api_url + "/")
        assert browser.evaluate("location.pathname") == "/login"


def _cookie_payload(value: str) -> str:
    """The readable part of Flask's signed cookie (``.``-prefixed when compressed)."""
    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(raw) if compressed else raw).decode(errors="replace")


def test_a_bad_token_is_refused_and_every_worker_reads_the_session(
        certlocker_stack: Any, scene: dict[str, Any]) -> None:
    url = certlocker_stack.api_url
    bad = requests.post(url + "/login", data={"token": "hvs.not-a-token"}, timeout=30,
                        allow_redirects=False)
    assert bad.status_code == 401 and "did not accept" in bad.text
    assert "hvs.not-a-token" not in bad.text
    assert "certlocker_session" not in bad.cookies

    session = requests.Session()
    signed_in = session.post(url + "/login", data={"token": certlocker_stack.operator_token},
                             timeout=30, allow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["Location"].endswith("/")
    set_cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    for _ in range(6):  # fresh connections land on both gunicorn workers
        page = requests.get(url + "/", cookies=session.cookies, timeout=60,
                            allow_redirects=False)
        assert page.status_code == 200, page.status_code
        assert "prod.dash-api.www" in page.text
        assert page.headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    forged = requests.get(url + "/", cookies={"certlocker_session": "x.y.z"}, timeout=30,
                          allow_redirects=False)
    assert forged.status_code == 303 and forged.headers["Location"].endswith("/login")


@contextlib.contextmanager
def _foreign_page(html: str) -> Iterator[str]:
    """Another origin (another port) serving ``html`` at /: the attacker's page."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _settled_at(browser: Any) -> str | None:
    """The page's URL once it has loaded; None while it is navigating."""
    try:
        return browser.evaluate("document.readyState == 'complete' ? location.href : null")
    except RuntimeError:  # "Inspected target navigated or closed"
        return None


def test_a_login_form_posted_from_another_origin_is_refused_in_a_real_browser(
        certlocker_stack: Any, tmp_path: Path) -> None:
    """Login CSRF: a page elsewhere posts ITS token into the operator's browser, who
    would then work (and paste secrets) in the attacker's session."""
    url = certlocker_stack.api_url
    attacker_token = certlocker_stack.operator_token  # any token Vault accepts
    page = (f'<form method="post" action="{url}/login"><input name="token" '
            f'value="{attacker_token}"></form><script>document.forms[0].submit()</script>')
    with _foreign_page(page) as evil, running_chromium(tmp_path) as browser:
        browser.events.clear()
        browser.call("Page.navigate", url=evil + "/")
        deadline = time.monotonic() + 30  # the page posts its form as it loads
        while _settled_at(browser) != url + "/login":
            assert time.monotonic() < deadline, _settled_at(browser)
            time.sleep(0.1)
        assert "cross-site" in browser.evaluate("document.body.innerText")
        cookies = browser.call("Network.getCookies", urls=[url + "/"])["cookies"]
        assert not [c for c in cookies if c["name"] == "certlocker_session"], cookies
        browser.navigate(url + "/")
        assert browser.evaluate("location.pathname") == "/login"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.test"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:1"},
    {"Referer": "http://evil.test/page"},
    {"Origin": "garbage:::"},
], ids=["foreign-origin", "null-origin", "other-port", "foreign-referer", "garbage"])
def test_a_cross_site_login_or_logout_is_a_403_problem_and_sets_no_cookie(
        certlocker_stack: Any, headers: dict[str, str]) -> None:
    url = certlocker_stack.api_url
    for path in ("/login", "/logout"):
        resp = requests.post(url + path, data={"token": certlocker_stack.operator_token},
                             headers=headers, timeout=30, allow_redirects=False)
        assert resp.status_code == 403, (path, resp.status_code, resp.text[:300])
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert "Set-Cookie" not in resp.headers
        assert certlocker_stack.operator_token not in resp.text
    same = requests.post(url + "/login", data={"token": certlocker_stack.operator_token},
                         headers={"Origin": url}, timeout=30, allow_redirects=False)
    assert same.status_code == 303 and "certlocker_session=" in same.headers["Set-Cookie"]



# -- issue #17: a team's view, one certificate's page, search and pages ---------------------

TEAM_POLICY = "certlocker-operator-team-payments"


def _token_with(stack: Any, *policies: str) -> str:
    made = stack.client(stack.root_token).auth.token.create(
        policies=list(policies), ttl="1h", display_name="-".join(policies) or "nobody")
    return str(made["auth"]["client_token"])


def _text(browser: Any, selector: str) -> str:
    return str(browser.evaluate(
        f"(document.querySelector({selector!r}) || {{innerText: ''}}).innerText"))


@pytest.fixture(scope="module")
def team(certlocker_stack: Any) -> str:
    granted = api(certlocker_stack, "PUT", "/v1/grants/prod/payments-dash",
                  json={"zones": ["payments-dash.prod.test"]})
    assert granted.status_code == 200, granted.text
    token = _token_with(certlocker_stack, TEAM_POLICY)
    made = requests.post(certlocker_stack.api_url + "/v1/certificates?wait=60", timeout=120,
                         headers={"X-Vault-Token": token}, json={
                             "environment": "prod", "service": "payments-dash", "name": "www",
                             "dns_names": ["www.payments-dash.prod.test"]})
    assert made.status_code == 201, made.text
    return token


def test_a_team_sees_and_filters_its_own_certificates(
        certlocker_stack: Any, scene: dict[str, Any], team: str, tmp_path: Path) -> None:
    url = certlocker_stack.api_url
    with running_chromium(tmp_path) as browser:
        _login(browser, url, team)
        browser.screenshot(tmp_path / "dashboard-team.png")
        inventory = _text(browser, "#inventory")
        assert "prod.payments-dash.www" in inventory
        assert "prod.dash-api.www" not in inventory  # another team's: Vault says no
        assert "service folder" in _text(browser, "#scope")
        assert _text(browser, "#blind") == ""
        browser.navigate(url + "/?environment=dev")
        assert "prod.payments-dash.www" not in _text(browser, "#inventory")


def test_a_token_that_may_list_nothing_is_shown_no_health(certlocker_stack: Any,
                                                          scene: dict[str, Any],
                                                          tmp_path: Path) -> None:
    """Not "0 certificates, nothing failing" in green: this page cannot know."""
    url = certlocker_stack.api_url
    nobody = _token_with(certlocker_stack, "default")
    with running_chromium(tmp_path) as browser:
        _login(browser, url, nobody)
        browser.screenshot(tmp_path / "dashboard-no-rights.png")
        assert "No certificate health to report" in _text(browser, "#blind")
        assert "may not list" in _text(browser, "#blind")
        assert browser.evaluate("document.querySelector('.cards') === null")  # no green 0s
        for section in ("#expiring", "#failing"):
            shown = _text(browser, section)
            assert "Unknown" in shown and "No failing" not in shown \
                and "Nothing expires" not in shown, shown


def test_a_certificate_page_shows_versions_nodes_events_and_the_next_renewal(
        certlocker_stack: Any, scene: dict[str, Any], team: str, tmp_path: Path) -> None:
    url = certlocker_stack.api_url
    cert = "prod.dash-web.www"
    first = scene["down"]["current"]
    renewed = api(certlocker_stack, "POST", f"/v1/certificates/{cert}/renew?wait=60")
    assert renewed.status_code == 200, renewed.text
    second = renewed.json()["current"]
    assert second["sha256_fingerprint"] != first["sha256_fingerprint"]
    with running_chromium(tmp_path) as browser:
        _login(browser, url, certlocker_stack.operator_token)
        browser.events.clear()  # follow the link the inventory shows, as a person would
        browser.evaluate(f"[...document.querySelectorAll('#inventory a')].find("
                         f"a => a.innerText == {cert!r}).click(); true")
        browser.wait_event("Page.loadEventFired")
        assert browser.evaluate("location.pathname") == f"/certificates/{cert}"
        browser.screenshot(tmp_path / "certificate-page.png")
        targets = _text(browser, "#targets")
        assert "unreachable" in targets and "connection refused" in targets, targets
        renewal = _text(browser, "#renewal")
        assert "one third of its lifetime" in renewal, renewal
        versions = _text(browser, "#versions")
        assert second["serial"] in versions and first["serial"] in versions, versions
        assert browser.evaluate("document.querySelectorAll('#versions tr').length") == 3
        assert "current" in versions and "earlier" in versions
        audit = _text(browser, "#audit")
        assert "certificate.issue" in audit and "certificate.renew.requested" in audit

    with running_chromium(tmp_path / "team") as browser:
        _login(browser, url, team)
        browser.navigate(url + f"/certificates/{cert}")
        browser.screenshot(tmp_path / "certificate-refused.png")
        assert "may not" in _text(browser, "#refused") or "denied" in _text(browser, "#refused")
        assert _text(browser, "#targets") == ""
        own = _text(browser, "#certificate") if browser.navigate(
            url + "/certificates/prod.payments-dash.www") is None else ""
        assert "www.payments-dash.prod.test" in own
        assert "may not read the audit trail" in _text(browser, "#audit")


def test_search_filters_and_pages_past_the_first_200(certlocker_stack: Any,
                                                     tmp_path: Path) -> None:
    url = certlocker_stack.api_url
    root = certlocker_stack.client(certlocker_stack.root_token)
    for i in range(205):  # straight into Vault, a supported way to declare; never issued
        root.secrets.kv.v2.create_or_update_secret(
            mount_point="certlocker", path=f"specs/dev/dash-bulk/c{i:03d}",
            secret={"dns_names": [f"c{i:03d}.dash-bulk.dev.test"], "issuer": "no-such-ca"})
    with running_chromium(tmp_path) as browser:
        _login(browser, url, certlocker_stack.operator_token)
        rows = "document.querySelectorAll('#inventory table tr').length - 1"
        browser.navigate(url + "/?service=dash-bulk")
        browser.screenshot(tmp_path / "dashboard-page-1.png")
        assert browser.evaluate(rows) == 200
        assert "dev.dash-bulk.c000" in _text(browser, "#inventory")
        browser.events.clear()
        browser.evaluate("document.getElementById('next-page').click(); true")
        browser.wait_event("Page.loadEventFired")
        assert browser.evaluate(rows) == 5
        assert "dev.dash-bulk.c204" in _text(browser, "#inventory")
        assert "dev.dash-bulk.c000" not in _text(browser, "#inventory")
        assert _text(browser, "#first-page") and not _text(browser, "#next-page")

        browser.events.clear()  # the search form, typed into
        browser.evaluate("document.getElementById('q').value = 'DASH-BULK.C203'; "
                         "document.getElementById('search').click(); true")
        browser.wait_event("Page.loadEventFired")
        assert browser.evaluate(rows) == 1
        assert "dev.dash-bulk.c203" in _text(browser, "#inventory")
        browser.navigate(url + "/?service=dash-bulk&status=valid")
        assert "No certificate you may see matches" in _text(browser, "#inventory")
        browser.navigate(url + "/?service=dash-bulk&status=invalid&q=c1")
        assert browser.evaluate(rows) == 100
    bad = requests.get(url + "/?status=bogus", timeout=30, cookies=_session(certlocker_stack))
    assert bad.status_code == 400
    assert bad.headers["Content-Type"].startswith("application/problem+json")


def _session(stack: Any) -> Any:
    session = requests.Session()
    signed_in = session.post(stack.api_url + "/login", data={"token": stack.operator_token},
                             timeout=30, allow_redirects=False)
    assert signed_in.status_code == 303
    return session.cookies
