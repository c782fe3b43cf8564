"""Replay protection (RFC 8555 section 6.5) shared by every worker and replica.

A nonce is self-authenticating (a time, 8 random bytes, and an HMAC under the server's
key), so issuing one costs nothing; redeeming one writes its record create-only into
Vault, so a nonce is good once, whichever process sees it. Nonces live 15 minutes; the
records are filed by 10-minute window and whole windows are pruned once they are older
than any live nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import struct
import threading
import time
from typing import Callable

import josepy as jose

from ..errors import CertlockerError, Conflict
from ..ports import Store
from .problems import AcmeProblem

log = logging.getLogger(__name__)

LIFETIME = 900
WINDOW = 600


class Nonces:
    def __init__(self, store: Store, key: Callable[[], bytes],
                 now: Callable[[], float] = time.time) -> None:
        self._store = store
        self._key = key
        self._now = now
        self._lock = threading.Lock()
        self._pruned_window = 0

    def new(self) -> str:
        body = struct.pack(">Q", int(self._now())) + secrets.token_bytes(8)
        self._prune_now_and_then()
        return jose.encode_b64jose(body + self._mac(body))

    def redeem(self, nonce: str | None) -> None:
        """:raises AcmeProblem: badNonce for a missing, forged, expired or used nonce."""
        if not nonce:
            raise AcmeProblem("badNonce", "the request has no nonce")
        try:
            raw = jose.decode_b64jose(nonce)
        except jose.DeserializationError:
            raw = b""
        body, mac = raw[:16], raw[16:]
        if len(raw) != 32 or not hmac.compare_digest(mac, self._mac(body)):
            raise AcmeProblem("badNonce", "the nonce was not issued by this server")
        issued = struct.unpack(">Q", body[:8])[0]
        if not 0 <= self._now() - issued <= LIFETIME:
            raise AcmeProblem("badNonce", "the nonce has expired; use the fresh one in "
                                          "this answer's Replay-Nonce")
        path = self._store.paths.acme_nonce(_window(issued), body.hex())
        try:
            self._store.write_json(path, {"issued": issued}, cas=0)
        except Conflict:
            raise AcmeProblem("badNonce", "the nonce was used already; use the fresh one "
                                          "in this answer's Replay-Nonce") from None

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key(), b"nonce:" + body, hashlib.sha256).digest()[:16]

    def _prune_now_and_then(self) -> None:
        """Once per window per process: remove the records of windows no live nonce
        belongs to. Best effort: a failure is tried again next window."""
        current = int(self._now()) // WINDOW
        with self._lock:
            if self._pruned_window >= current:
                return
            self._pruned_window = current
        try:
            for window in self._store.list(self._store.paths.acme_nonces_dir()):
                window = window.rstrip("/")
                if not window.isdigit() or int(window) >= current - 2:
                    continue
                folder = self._store.paths.acme_nonces_dir(window)
                for entry in self._store.list(folder):
                    self._store.destroy(folder + entry)
        except CertlockerError as exc:
            log.warning("acme_server.nonce_prune_failed", extra={"error": type(exc).__name__})


def _window(issued: int) -> str:
    return f"{issued // WINDOW:010d}"
