"""``certlocker fetch``: a host without an agent fetches its certificate, rendered.

The host presents its service credential (the JWT file the agent would use) to
``POST /v1/certificates/<id>/bundle`` and installs the answer atomically, 0600. The
password of a PKCS#12 travels in the JSON body, never in a URL.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import requests

from ..errors import CertlockerError, InvalidInput
from .files import write_atomic


class FetchFailed(Exception):
    """The API answered with a problem document (``status``, ``title``, ``detail``)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        self.status, self.title, self.detail = status, title, detail
        super().__init__(f"{status} {title}: {detail}")


@dataclasses.dataclass(frozen=True)
class Fetched:
    files: dict[str, bytes] = dataclasses.field(repr=False)  # name -> content
    multi_file: bool
    sha256: str
    serial: str


def fetch_bundle(api_url: str, cert_id: str, fmt: str, credential: str, *,
                 password: str | None = None, alias: str | None = None,
                 k8s_name: str | None = None, k8s_namespace: str | None = None,
                 timeout: float = 60.0, verify: bool | str = True) -> Fetched:
    """Ask the API for ``cert_id`` in ``fmt`` with the service ``credential``.

    :raises FetchFailed: the API refused (401/403/400/404...).
    :raises requests.RequestException: the API could not be reached.
    """
    body: dict[str, Any] = {"format": fmt}
    for key, value in (("password", password), ("alias", alias), ("k8s_name", k8s_name),
                       ("k8s_namespace", k8s_namespace)):
        if value is not None:
            body[key] = value
    resp = requests.post(f"{api_url.rstrip('/')}/v1/certificates/{cert_id}/bundle",
                         json=body, timeout=timeout, verify=verify,
                         headers={"Authorization": f"Bearer {credential}"})
    if resp.status_code >= 400:
        try:
            problem = resp.json()
        except ValueError:
            problem = {}
        raise FetchFailed(resp.status_code, str(problem.get("title") or resp.reason),
                          str(problem.get("detail") or "")[:500])
    multi = resp.headers.get("Content-Type", "").startswith("application/json")
    if multi:
        files = {name: text.encode("utf-8") for name, text in resp.json().items()}
    else:
        files = {"": resp.content}
    return Fetched(files, multi, resp.headers.get("X-Certlocker-Sha256", ""),
                   resp.headers.get("X-Certlocker-Serial", ""))


def install(fetched: Fetched, out: Path) -> list[Path]:
    """Write what was fetched: one file at ``out``, or, for formats of several files
    (``nginx``, ``pem``), each file inside the directory ``out`` (created 0700).
    Every file is replaced atomically with mode 0600.

    :raises InvalidInput: ``out`` is a directory for a one-file format, or a file for a
        several-file format.
    :raises OSError: the destination cannot be written.
    """
    out = Path(out)
    if fetched.multi_file:
        if out.exists() and not out.is_dir():
            raise InvalidInput("out", "must be a directory for a format of several files")
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        written = []
        for name, content in sorted(fetched.files.items()):
            if "/" in name or name.startswith("."):
                raise CertlockerError(f"the API named an unsafe file {json.dumps(name)[:80]}")
            write_atomic(out / name, content)
            written.append(out / name)
        return written
    if out.is_dir():
        raise InvalidInput("out", "is a directory; name the file to write")
    write_atomic(out, fetched.files[""])
    return [out]
