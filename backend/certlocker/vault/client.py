"""Building hvac clients and translating hvac's exceptions: the edge of the Vault door."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import hvac
import hvac.adapters
import hvac.exceptions as hx
import requests

from ..transport import netenv
from ..errors import (AccessDenied, CertlockerError, Conflict, NotFound, OwnTokenRefused,
                      Unauthenticated, VaultUnavailable, VaultWriteUncertain)
from ..transport.failures import failure_reason
from ..transport.vault_session import ConsistencyIndex, CurlSession, IndexedTransport

log = logging.getLogger(__name__)




IDEMPOTENT = frozenset({"GET", "LIST", "HEAD"})
# What Vault answers while a Raft cluster has no active node (an election after a step-down
# or a lost leader) or while sealed: the request was refused before anything was applied.
NOT_APPLIED = ("node not active", "active cluster node not found", "vault is sealed",
               "standby", "no leader", "not the leader", "unable to forward")


class WriteUncertain(requests.RequestException):
    """A non-idempotent request failed after it was sent: Vault may have applied it."""


# hvac has no type information (ignore_missing_imports), so its classes are Any to mypy.
class OwnTokenForbidden(hx.Forbidden):  # type: ignore[misc]
    """Vault answered 403 to certlocker's own token (not to a caller's)."""


def _not_applied(exc: Exception) -> bool:
    """True when the request certainly never took effect, whatever its method."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        return "NewConnectionError" in type(inner).__name__ or isinstance(
            inner, ConnectionRefusedError)
    if isinstance(exc, (hx.VaultDown, hx.InternalServerError, hx.BadGateway)):
        text = " ".join(str(e) for e in (exc.errors or [])) or str(exc)
        return isinstance(exc, hx.VaultDown) or any(m in text.lower() for m in NOT_APPLIED)
    return False


def _sealed(exc: Exception) -> bool:
    """Vault answered 503 "Vault is sealed": it stays so until an operator (or auto-
    unseal) acts, minutes rather than the seconds of an election, so waiting
    ``retry_seconds`` per call only holds every request for nothing."""
    if not isinstance(exc, hx.VaultDown):
        return False
    text = " ".join(str(e) for e in (exc.errors or [])) or str(exc)
    return "vault is sealed" in text.lower()


def _transient(exc: Exception) -> bool:
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, hx.VaultDown,
                            hx.InternalServerError, hx.BadGateway))


class TokenFile:
    """certlocker's token kept in a file that something else may rotate (``bootstrap
    vault`` replacing it, a Vault Agent token sink): every request sends the file's
    current token. The file is looked at no more than once per ``CHECK_EVERY`` seconds
    (one ``stat``), and read again only when it changed; an empty or unreadable file
    leaves the last token in use."""

    CHECK_EVERY = 1.0

    def __init__(self, path: str, token: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.token = token
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._seen = self._stamp()
        self._next_check = monotonic() + self.CHECK_EVERY

    def current(self) -> str:
        if self._monotonic() < self._next_check:
            return self.token
        with self._lock:
            now = self._monotonic()
            if now < self._next_check:
                return self.token
            self._next_check = now + self.CHECK_EVERY
            stamp = self._stamp()
            if stamp is None or stamp == self._seen:
                return self.token
            self._seen = stamp
            try:
                text = Path(self.path).read_text().strip()
            except (OSError, UnicodeDecodeError):
                return self.token
            if text and text.isprintable() and " " not in text and text != self.token:
                self.token = text
                log.info("vault.token_reloaded", extra={"file": self.path})
        return self.token

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size


class RetryingAdapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]  # hvac is untyped
    """hvac's JSON adapter, riding out a leader election or a short outage.

    A request Vault certainly did not apply (connection refused, standby without an
    active node) is retried with growing pauses for up to ``retry_seconds``; so is any
    transient failure of a read. A read whose answer never came (a read timeout, which
    alone outlasts the window) is asked once more all the same, on a new connection: one
    stalled answer does not fail the caller. A sealed Vault is not waited for
    (``_sealed``). A write that failed after it was sent is not retried here: it raises
    ``WriteUncertain`` so the caller can read back what landed (``VaultStore.write``)
    instead of applying it twice.
    """

    def __init__(self, *args: Any, retry_seconds: float = 10.0, own_token: bool = False,
                 token_file: TokenFile | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_seconds = retry_seconds
        self.own_token = own_token  # certlocker's token: a 403 is this deployment's fault
        self.token_file = token_file

    def request(self, method: str, url: str, headers: Any = None,
                raise_exception: bool = True, *, raw: bool = False, **kwargs: Any) -> Any:
        """``raw``: answer the response itself, unparsed, for a caller that parses a
        large body its own way (``VaultStore.spec_versions``)."""
        deadline = time.monotonic() + self.retry_seconds
        pause = 0.05
        stalled_once = False
        send = super(hvac.adapters.JSONAdapter, self).request if raw else super().request
        while True:
            if self.token_file is not None:
                self.token = self.token_file.current()
            try:
                return send(method, url, headers=dict(headers or {}),
                            raise_exception=raise_exception, **dict(kwargs))
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised unless transient
                if self.own_token and isinstance(exc, hx.Forbidden):
                    raise OwnTokenForbidden(str(exc), errors=exc.errors, method=exc.method,
                                            url=exc.url) from exc
                if not _transient(exc) or _sealed(exc):
                    raise
                safe = method.upper() in IDEMPOTENT or _not_applied(exc)
                stalled = (method.upper() in IDEMPOTENT and not stalled_once
                           and isinstance(exc, requests.ReadTimeout))
                if safe and (stalled or time.monotonic() + pause < deadline):
                    stalled_once |= stalled
                    log.info("vault.retry", extra={"method": method.upper(),
                                                   "error": type(exc).__name__})
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                if not safe:
                    raise WriteUncertain(type(exc).__name__) from exc
                raise


def make_client(addr: str, token: str | None, ca_cert: str | None = None,
                timeout: float = 10.0, retry_seconds: float = 10.0,
                own_token: bool = False, token_file: str | None = None) -> hvac.Client:
    """An hvac client over libcurl (a tenth of requests' CPU per call), or over requests
    when a proxy is configured in the environment; both carry the process's
    ``ConsistencyIndex``. ``own_token``: the token is certlocker's own, so Vault refusing
    it raises ``OwnTokenRefused`` (503), not ``AccessDenied`` (403). ``token_file``: where
    ``token`` came from; a rotated file is picked up (``TokenFile``)."""
    session: Any
    if netenv.any_set(netenv.PROXY_VARIABLES):
        session = requests.Session()
        # A pool large enough for the issuance workers and API threads of one process.
        adapter = IndexedTransport(ConsistencyIndex(), pool_connections=4, pool_maxsize=64)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    else:
        session = CurlSession(ConsistencyIndex(), ca_cert=ca_cert)
    return hvac.Client(url=addr, token=token, verify=ca_cert or True, timeout=timeout,
                       session=session, adapter=RetryingAdapter, retry_seconds=retry_seconds,
                       own_token=own_token,
                       token_file=TokenFile(token_file, token or "") if token_file else None)


@contextlib.contextmanager
def translated(path: str = "") -> Iterator[None]:
    """Map hvac and transport errors onto the domain tree.

    Only messages that Vault itself wrote about the request's shape are kept; a path is
    named so operators can see which capability was missing. Nothing from the request
    body (which may hold a key) is ever echoed.
    """
    try:
        yield
    except CertlockerError:
        raise
    except WriteUncertain as exc:
        raise VaultWriteUncertain(f"no answer from Vault to a write of {path}; it may "
                                  "have been applied" if path else
                                  "no answer from Vault to a write") from exc
    except OwnTokenForbidden as exc:
        raise OwnTokenRefused(
            f"Vault refused certlocker's own token for {path or 'a request'}: the token is "
            "invalid or expired, or the certlocker policy lacks the path (run `certlocker "
            "bootstrap vault`)") from exc
    except hx.Forbidden as exc:
        raise AccessDenied(f"Vault denied access to {path}" if path else
                           "Vault denied the request") from exc
    except hx.Unauthorized as exc:
        raise Unauthenticated("the Vault token is missing, invalid or expired") from exc
    except hx.InvalidPath as exc:
        raise NotFound(f"nothing at {path}" if path else "not found") from exc
    except hx.InvalidRequest as exc:
        text = " ".join(exc.errors or []) if exc.errors else str(exc)
        if "check-and-set" in text:
            raise Conflict(f"{path} was changed by another writer") from exc
        raise VaultUnavailable(f"Vault rejected a request for {path}: {text[:300]}") from exc
    except hx.VaultDown as exc:
        if _sealed(exc):
            raise VaultUnavailable("Vault is sealed: nothing can be read or written until "
                                   "it is unsealed") from exc
        raise VaultUnavailable(f"Vault is unavailable ({type(exc).__name__})") from exc
    except (hx.InternalServerError, hx.BadGateway, hx.VaultNotInitialized,
            hx.RateLimitExceeded, hx.UnexpectedError) as exc:
        raise VaultUnavailable(f"Vault is unavailable ({type(exc).__name__})") from exc
    except hx.VaultError as exc:
        raise VaultUnavailable(f"Vault error ({type(exc).__name__})") from exc
    except requests.RequestException as exc:
        raise VaultUnavailable(f"cannot reach Vault ({failure_reason(exc)})") from exc
