"""GET /: the operator's dashboard, server-rendered (Jinja, a little CSS, no JavaScript).

The page acts with the operator's own Vault token, exactly as the API does, so Vault's
policies decide what it shows; a section the token may not read says so.

The token arrives through a login form and is kept in the session cookie (HttpOnly,
SameSite=Strict, Secure when ``public_url`` is https), encrypted (Fernet, key derived
from the session secret) inside Flask's signed session, so the raw token is never in the
cookie, the page or a log. The session secret is ``settings.session_secret`` or one
generated at first use and kept in Vault (``system/dashboard/session-secret``, created
with check-and-set), so every gunicorn worker and replica signs and reads the same
cookies.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
import secrets
import threading
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import (Blueprint, Flask, Response, current_app, redirect, render_template,
                   request, session, url_for)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from ..clock import SystemClock
from ..errors import (AccessDenied, CertlockerError, Conflict, InvalidInput, NotFound,
                      Unauthenticated)
from ..lifecycle.policy import explain, inventory, shown
from ..lifecycle.records import heartbeat
from ..lifecycle import visibility
from ..lifecycle.verification import target_views
from ..models import CertificateRef, State
from .certificates import listed

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, template_folder="templates")

INVENTORY_LIMIT = 200
FILTERS = ("q", "environment", "service", "status", "issuer")
CERTIFICATE_EVENTS = 50
EXPIRING_WITHIN = dt.timedelta(days=30)
AUDIT_EVENTS = 15
DISCOVERIES = 50
REPLACEMENTS = 10
RECONCILER_QUIET = dt.timedelta(minutes=10)  # no tick for this long: shown as a problem
_SECRET_LOCK = threading.Lock()
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")


# -- the session secret and cookie --------------------------------------------------------

def session_secret(app: Flask) -> str:
    """``settings.session_secret``, else the one kept in Vault (made on first use; the
    first writer wins the check-and-set and everyone reads its value)."""
    services = app.extensions["certlocker"]
    if services.settings.session_secret:
        return str(services.settings.session_secret)
    store = services.store
    path = store.paths.dashboard_secret()
    for _ in range(5):
        doc, _version = store.read_json(path)
        if doc and doc.get("secret"):
            return str(doc["secret"])
        try:
            store.write_json(path, {"secret": secrets.token_urlsafe(48)}, cas=0)
        except Conflict:
            continue
    raise Conflict("the dashboard session secret could not be stored")


def _secret(app: Flask) -> str:
    """The session secret, resolved once per process (a Vault read on first use).

    :raises CertlockerError: when Vault cannot give it now (tried again next time).
    """
    if not app.secret_key:
        with _SECRET_LOCK:
            if not app.secret_key:
                app.secret_key = session_secret(app)
    return str(app.secret_key)


class _Sessions(SecureCookieSessionInterface):
    """Flask's signed cookie sessions with the secret resolved on first use, not at
    import or app creation.

    Flask opens the session before any view runs, outside the error handlers, so
    nothing here may raise: a request without the cookie (every API call) gets an
    empty session without the secret, and one whose secret cannot be had now (Vault
    down, certlocker's token refused) a null session, signed out for that request. The
    login view resolves the secret itself, where a failure is a proper 503."""

    def open_session(self, app: Flask, request: Any):  # type: ignore[no-untyped-def]
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask):  # type: ignore[no-untyped-def]
        try:
            _secret(app)
        except CertlockerError as exc:
            log.warning("dashboard.session_secret_unavailable",
                        extra={"error": type(exc).__name__})
            return None
        return super().get_signing_serializer(app)


def _configure(app: Flask) -> None:
    settings = app.extensions["certlocker"].settings
    app.session_interface = _Sessions()
    app.config.update(SESSION_COOKIE_NAME="certlocker_session",
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_SECURE=settings.public_url.startswith("https:"))


bp.record_once(lambda state: _configure(cast(Flask, state.app)))


def _fernet() -> Fernet:
    secret = _secret(current_app)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"certlocker dashboard token").derive(str(secret).encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _session_token() -> str | None:
    sealed = session.get("t")
    if not isinstance(sealed, str):
        return None
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError):
        return None


R = TypeVar("R", bound=BaseResponse)


def _secured(resp: R) -> R:
    resp.headers["Content-Security-Policy"] = _CSP
    resp.headers["X-Frame-Options"] = "DENY"
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on
    # the login form's own POST, and the origin check could not tell it from a forgery.
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _page(template: str, status: int = 200, **context: Any) -> Response:
    resp = Response(render_template(template, **context), status=status,
                    mimetype="text/html")
    return _secured(resp)


# -- login / logout -----------------------------------------------------------------------

def _origin(url: str) -> str | None:
    """``scheme://host:port`` of ``url``, default port spelled out; None if unparsable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}:{port}"


def _refuse_cross_site() -> None:
    """Login CSRF: a foreign page must not post its own token into an operator's browser
    (who would then act, and type secrets, as the attacker). Browsers send ``Origin``
    with every POST; without it (an old browser) the ``Referer`` is checked. A request
    with neither is no browser's cross-site form. The own origin is ``public_url``'s
    or the one the browser addressed (``Host``).

    :raises AccessDenied: for another origin, or ``Origin: null`` (a sandboxed page).
    """
    claimed = request.headers.get("Origin")
    if claimed is None:
        claimed = request.headers.get("Referer")
        if claimed is None:
            return
    origin = _origin(claimed)
    own = {_origin(current_app.extensions["certlocker"].settings.public_url),
           _origin(request.host_url)}
    if origin is None or origin not in own:
        log.warning("dashboard.cross_site_refused", extra={"path": request.path})
        raise AccessDenied("cross-site request refused: use the dashboard's own page")


@bp.get("/login")
def login_form() -> Response:
    return _page("dashboard_login.html")


@bp.post("/login")
def login() -> BaseResponse:
    _refuse_cross_site()
    token = (request.form.get("token") or "").strip()
    if not token or len(token) > 4096 or not token.isprintable():
        return _page("dashboard_login.html", 400, error="Enter your Vault token.")
    services = current_app.extensions["certlocker"]
    try:
        info = services.store.for_token(token).lookup_self()
        # Sealed before the session is touched: the secret may need Vault.
        sealed = _fernet().encrypt(token.encode()).decode()
    except Unauthenticated:
        return _page("dashboard_login.html", 401,
                     error="Vault did not accept this token (invalid or expired).")
    except CertlockerError as exc:
        return _page("dashboard_login.html", exc.status if exc.status >= 400 else 503,
                     error=f"certlocker cannot sign you in now: {exc.title}.")
    session.clear()
    session["t"] = sealed
    session["who"] = str(info.get("display_name") or "operator")[:200]
    return _secured(redirect(url_for("dashboard.home"), code=303))


@bp.post("/logout")
def logout() -> BaseResponse:
    _refuse_cross_site()
    resp = _secured(redirect(url_for("dashboard.login_form"), code=303))
    if current_app.session_interface.is_null_session(session):
        resp.delete_cookie(current_app.config["SESSION_COOKIE_NAME"])  # unreadable now
    else:
        session.clear()
    return resp


# -- the page -----------------------------------------------------------------------------

@dataclasses.dataclass
class Section:
    """One block of the page: its rows, or why the token cannot see them."""

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    denied: str | None = None
    more: bool = False


@dataclasses.dataclass
class Inventory(Section):
    """The certificates of one page, and what the token let this page see: ``blind``
    when it may list or read none of them, so the page must not claim health."""

    scope: str = visibility.ALL
    folders: int | None = None
    unreadable: int = 0
    next_cursor: str | None = None

    @property
    def blind(self) -> bool:
        if self.denied:
            return True
        if self.rows:
            return False
        return self.unreadable > 0 or (self.scope == visibility.PERMITTED
                                       and not self.folders)

    @property
    def why_blind(self) -> str:
        if self.denied:
            return self.denied
        if self.unreadable:
            return (f"Your Vault token may list {self.unreadable} certificate(s) here but "
                    "read none of them.")
        return ("Your Vault token may not list any declared certificate (it needs list on "
                "certlocker's specs/ folders).")


def _signed_in_store() -> tuple[Any, BaseResponse | None]:
    """certlocker's store acting with the session's token, or the answer to give
    instead (to the login form)."""
    token = _session_token()
    if token is None:
        return None, _secured(redirect(url_for("dashboard.login_form"), code=303))
    store = current_app.extensions["certlocker"].store.for_token(token)
    try:
        store.lookup_self()
    except Unauthenticated:
        session.clear()
        return None, _page("dashboard_login.html", 401,
                           error="Your Vault token has expired; sign in again.")
    return store, None


def _filters() -> tuple[inventory.Query, dict[str, str]]:
    """The search form's fields (blank ones ignored) as an inventory query, and as
    they were typed (to fill the form and the paging links).

    :raises InvalidInput: an unknown parameter or a bad value (a problem document).
    """
    typed = {k: v.strip() for k, v in request.args.items()
             if k in FILTERS + ("cursor",) and v.strip()}
    unknown = [k for k in request.args if k not in FILTERS + ("cursor",)]
    if unknown:
        raise InvalidInput(unknown[0][:64], "is not a filter of this page (known: "
                           + ", ".join(FILTERS) + ")")
    query = inventory.parse_query({**typed, "limit": str(INVENTORY_LIMIT)})
    return query, {k: v for k, v in typed.items() if k != "cursor"}


def _home_url(filters: dict[str, str], **more: str | None) -> str:
    """The inventory page with these filters (``url_for`` takes them as query args)."""
    args: dict[str, Any] = {**filters, **more}
    return url_for("dashboard.home", **args)


@bp.get("/")
def home() -> BaseResponse:
    store, answer = _signed_in_store()
    if answer is not None:
        return answer
    services = current_app.extensions["certlocker"]
    query, typed = _filters()
    now = SystemClock().now()
    certs = _inventory(services, store, query, now)
    rows = certs.rows
    discoveries = _discoveries(store, now)
    context: dict[str, Any] = {
        "who": session.get("who") or "operator",
        "now": now,
        "certificates": certs,
        "filters": typed,
        "filtered": bool(typed),
        "first_page": query.cursor is None,
        "next_url": _home_url(typed, cursor=certs.next_cursor)
        if certs.next_cursor else None,
        "first_url": _home_url(typed),
        "choices": {"environment": list(services.settings.environments),
                    "status": [st.value for st in State],
                    "issuer": sorted(services.certificates.issuers)},
        "expiring": [r for r in rows if r["expiring_soon"]],
        "failing": [r for r in rows if r["failing"]],
        "discoveries": discoveries,
        "events": _audit(services, store),
        "reconcilers": _reconcilers(services, now),
        "replacements": _replacements(services, store),
        "counts": {
            "total": len(rows),
            "valid": sum(r["status"] == State.VALID.value for r in rows),
            "failing": sum(r["failing"] for r in rows),
            "expiring": sum(r["expiring_soon"] for r in rows),
            "unmanaged": len(discoveries.rows),
        },
        "expiring_days": EXPIRING_WITHIN.days,
    }
    return _page("dashboard.html", **context)


def _inventory(services: Any, store: Any, query: inventory.Query,
               now: dt.datetime) -> Inventory:
    unreadable = 0

    def load(refs: list[Any]) -> list[Any]:
        nonlocal unreadable
        views: list[Any] = services.certificates.views(store, refs)
        unreadable += sum(v is None for v in views)
        return views

    try:
        listing = listed(services, store, query.environment, query.service, query.status)
        found = inventory.page(listing.refs, load, query, now)
    except CertlockerError as exc:
        return Inventory(denied=exc.detail)
    return Inventory([_certificate_row(v, now) for v in found.items],
                     more=found.next_cursor is not None, scope=listing.scope,
                     folders=listing.folders, unreadable=unreadable,
                     next_cursor=found.next_cursor)


def _certificate_row(view: Any, now: dt.datetime) -> dict[str, Any]:
    spec, status = view.spec, view.status
    current = status.current
    views = target_views(spec.targets, status.targets, current)
    targets = [t.to_json() for t in views]
    for t, v in zip(targets, views, strict=True):  # a single node's detail (unverified: why)
        t["detail"] = v.nodes[0].detail if len(v.nodes) == 1 else None
    retired = status.state == State.RETIRED  # only nodes still serving it are bad
    bad_targets = [t for t in targets if (t["status"] == "serving-retired" if retired
                                          else t["status"] != "ok")]
    return {
        "id": spec.ref.id,
        "dns_names": list(spec.dns_names),
        "issuer": spec.issuer,
        "status": shown.shown_state(status, now).value,
        "not_after": current.not_after if current else None,
        "days_left": (current.not_after - now).days if current else None,
        "expiring_soon": bool(current and not retired
                              and current.not_after - now <= EXPIRING_WITHIN),
        "expired": bool(current and current.not_after <= now),
        "last_error": status.last_error,
        "targets": targets,
        "bad_targets": bad_targets,
        "renewal_failing": shown.renewal_failing(status),
        "next_attempt_at": status.next_attempt_at,
        "failing": shown.failing(status) or bool(bad_targets),
    }


def _discoveries(store: Any, now: dt.datetime) -> Section:
    from .discovery import discovery_service

    paths = store.paths
    try:
        allowed = store.capabilities(paths.api_path(paths.discovered("0" * 64)))
        if not allowed & {"read", "root"}:
            return Section(denied="Your Vault token may not read discoveries.")
        svc = discovery_service()
        found = svc.entries(state="unmanaged")
    except CertlockerError as exc:
        return Section(denied=exc.detail)
    rows = []
    for d in found[:DISCOVERIES]:
        view = d.view(now, svc.expiring_within)
        rows.append({**view, "not_after": d.not_after,
                     "days_left": (d.not_after - now).days,
                     "sources": [s.source for s in d.sources]})
    return Section(rows, more=len(found) > DISCOVERIES)


def _reconcilers(services: Any, now: dt.datetime) -> Section:
    """Each reconciler's heartbeat, read with certlocker's own token: the same public
    facts as ``/metrics``, which needs no token at all."""
    try:
        beats = heartbeat.recorded(services.store, since=now - dt.timedelta(days=1))
    except CertlockerError as exc:
        return Section(denied=exc.detail)
    return Section([{"name": b.name, "started_at": b.started_at,
                     "tick_age": int((now - b.last_tick_at).total_seconds()),
                     "sweep_age": int((now - b.last_sweep_at).total_seconds())
                     if b.last_sweep_at else None,
                     "quiet": now - b.last_tick_at > RECONCILER_QUIET} for b in beats])


def _replacements(services: Any, store: Any) -> Section:
    """The mass replacements the signed-in operator may see (every certificate of one
    readable with their token), newest first, with their progress."""
    try:
        shown = [o for o in (services.replacements.summary(store, op_id)
                             for op_id in services.replacements.ids()) if o is not None]
    except CertlockerError as exc:
        return Section(denied=exc.detail)
    shown.sort(key=lambda o: o["created_at"], reverse=True)
    return Section(shown[:REPLACEMENTS], more=len(shown) > REPLACEMENTS)


def _audit(services: Any, store: Any, *, certificate: str | None = None,
           limit: int = AUDIT_EVENTS) -> Section:
    paths = store.paths
    try:
        allowed = store.capabilities(paths.api_path(paths.audit_event(1)))
        if not allowed & {"read", "root"}:
            return Section(denied="Your Vault token may not read the audit trail.")
        events = services.audit.query(limit=limit, certificate=certificate)
    except CertlockerError as exc:
        return Section(denied=exc.detail)
    return Section([e.to_view() for e in events])


# -- one certificate ----------------------------------------------------------------------

def _wants_html() -> bool:
    """A browser (``Accept: text/html`` first) gets a page for a refusal; any other
    client the problem document every API answer uses."""
    best = request.accept_mimetypes.best_match(["application/problem+json", "text/html"])
    return best == "text/html"


@bp.get("/certificates/<cert_id>")
def certificate(cert_id: str) -> BaseResponse:
    """One certificate as the operator's token may see it: its versions and renewals,
    each node's verification with the reason, its audit events, the next renewal and
    why. A certificate the token may not read is a 403 saying so, never an empty
    page."""
    store, answer = _signed_in_store()
    if answer is not None:
        return answer
    services = current_app.extensions["certlocker"]
    now = SystemClock().now()
    try:
        ref = CertificateRef.parse_id(cert_id)
        view = services.certificates.view(store, ref)
    except (NotFound, AccessDenied) as exc:
        if not _wants_html():
            raise
        return _page("dashboard_certificate.html", exc.status, who=session.get("who"),
                     cert_id=cert_id[:200], refused=exc.detail, now=now)
    events = _audit(services, store, certificate=ref.id, limit=CERTIFICATE_EVENTS)
    row = _certificate_row(view, now)
    spec, status = view.spec, view.status
    planned = explain.next_renewal(spec, status, now)
    return _page("dashboard_certificate.html", who=session.get("who") or "operator",
                 cert_id=ref.id, now=now, c=row, spec=spec, state_=status, refused=None,
                 current=status.current, next_renewal=planned,
                 versions=_versions(status, events), events=events,
                 targets=_target_rows(spec, status),
                 expiring_days=EXPIRING_WITHIN.days)


def _versions(status: Any, events: Section) -> list[dict[str, Any]]:
    """The current certificate and the earlier ones the status remembers (newest
    first), each with its issuance event when the trail is readable."""
    issued = {e["details"].get("sha256_fingerprint"): e for e in events.rows
              if e["action"] == "certificate.issue" and e["outcome"] == "success"}
    prints = ([status.current.sha256_fingerprint] if status.current else []) \
        + list(status.history)
    rows = []
    for i, fingerprint in enumerate(prints):
        event = issued.get(fingerprint)
        details = event["details"] if event else {}
        rows.append({"current": i == 0 and status.current is not None,
                     "sha256_fingerprint": fingerprint,
                     "serial": details.get("serial"),
                     "not_after": details.get("not_after"),
                     "vault_version": details.get("vault_version"),
                     "issued_at": event["time"] if event else None,
                     "actor": event["actor"] if event else None})
    if rows and rows[0]["current"] and status.current is not None:
        cur = status.current
        rows[0].update(serial=cur.serial, vault_version=cur.vault_version,
                       not_after=cur.not_after)
    for r in rows:
        if isinstance(r["not_after"], str):  # as the audit event recorded it
            try:
                r["not_after"] = dt.datetime.fromisoformat(r["not_after"])
            except ValueError:
                pass
        if isinstance(r["not_after"], dt.datetime):
            r["not_after"] = r["not_after"].strftime("%Y-%m-%d %H:%M UTC")
    return rows


def _target_rows(spec: Any, status: Any) -> list[dict[str, Any]]:
    """Every node of every target with its last result and the reason for it."""
    current = status.current.sha256_fingerprint if status.current else None
    rows = []
    for view in target_views(spec.targets, status.targets):
        for node in view.nodes:
            rows.append({"target": view.target.address, "address": node.address,
                         "status": node.status, "detail": node.detail,
                         "checked_at": node.checked_at,
                         "served_sha256": node.served_sha256,
                         "serves_current": bool(current and node.served_sha256 == current)})
    return rows
