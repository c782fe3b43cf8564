"""Building hvac clients and translating hvac's exceptions: the edge of the Vault door."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import hvac
import hvac.exceptions as hx
import requests

from ..errors import (AccessDenied, CertlockerError, Conflict, NotFound, Unauthenticated,
                      VaultUnavailable)


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")


def make_client(addr: str, token: str | None, ca_cert: str | None = None,
                timeout: float = 10.0) -> hvac.Client:
    session = requests.Session()
    # Without a proxy configured, skip requests' per-call reading of proxy variables and
    # ~/.netrc (a few percent of the CPU of every Vault call); TLS trust is passed below.
    session.trust_env = any(os.environ.get(v) for v in PROXY_VARIABLES)
    # A pool large enough for the issuance workers and API threads of one process.
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return hvac.Client(url=addr, token=token, verify=ca_cert or True, timeout=timeout,
                       session=session)


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
    except (hx.VaultDown, hx.InternalServerError, hx.BadGateway, hx.VaultNotInitialized,
            hx.RateLimitExceeded, hx.UnexpectedError) as exc:
        raise VaultUnavailable(f"Vault is unavailable ({type(exc).__name__})") from exc
    except hx.VaultError as exc:
        raise VaultUnavailable(f"Vault error ({type(exc).__name__})") from exc
    except requests.RequestException as exc:
        raise VaultUnavailable(f"cannot reach Vault ({type(exc).__name__})") from exc
