"""A minimal in-process ACME client: the "tuned" peer of the issuance benchmark.

One account, one shared ``acme.client.ClientV2``, a ``ThreadPoolExecutor`` that drives
one order per certificate, 50 ms polling, and a tiny threaded ``http.server`` that
answers http-01 from a dict in memory. No storage, no journal, no audit: the floor of
what Python plus the ``acme`` library can do against the same CA.

With ``eab`` it registers with an External Account Binding (``eab_kid``,
``eab_hmac_key``), and with ``http_port=None`` it serves no http-01 answers: for a
server whose authorizations are valid already (certlocker's ACME server), where it only
orders and finalizes. An authorization, order or finalization that is already in the
state waited for is not polled again.
"""

from __future__ import annotations

import concurrent.futures as cf
import http.server
import threading
import time
from typing import Iterable, Mapping

import josepy as jose
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

POLL = 0.05
TIMEOUT = 120.0


class _Answers(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops Pebble's checks under 16 workers

    def __init__(self, port: int) -> None:
        self.tokens: dict[str, str] = {}
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Answers

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        prefix = "/.well-known/acme-challenge/"
        body = self.server.tokens.get(self.path[len(prefix):]) if self.path.startswith(
            prefix) else None
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _key_pem(key_type: str) -> bytes:
    if key_type == "rsa-2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())  # type: ignore[assignment]
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class InProcessClient:
    """Issue many certificates concurrently; ``issue_all`` returns the PEM chains."""

    def __init__(self, directory_url: str, ca_bundle: str, http_port: int | None, *,
                 workers: int = 16, eab: Mapping[str, str] | None = None) -> None:
        self.workers = workers
        key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=ca_bundle,
                                   user_agent="bench-inprocess")
        directory = client.ClientV2.get_directory(directory_url, net)
        self.acme = client.ClientV2(directory, net)
        binding = None
        if eab is not None:
            binding = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(), kid=eab["eab_kid"],
                hmac_key=eab["eab_hmac_key"], directory=directory)
        self.acme.new_account(messages.NewRegistration.from_data(
            email="x@example.test", terms_of_service_agreed=True,
            external_account_binding=binding))
        self._server = _Answers(http_port) if http_port is not None else None
        if self._server is not None:
            threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _get(self, url: str) -> dict:
        return self.acme.net.post(url, None,
                                  new_nonce_url=self.acme.directory["newNonce"]).json()

    def _wait(self, url: str, done: Iterable[str], deadline: float) -> dict:
        while True:
            body = self._get(url)
            if body["status"] in done:
                return body
            if body["status"] == "invalid":
                raise RuntimeError(f"{url} became invalid: {body}")
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            time.sleep(POLL)

    def issue(self, name: str, key_type: str = "ec-p256") -> str:
        deadline = time.monotonic() + TIMEOUT
        csr = crypto_util.make_csr(_key_pem(key_type), [name])
        order = self.acme.new_order(csr)
        pending = [a for a in order.authorizations if a.body.status != messages.STATUS_VALID]
        for authzr in pending:
            if self._server is None:
                raise RuntimeError(f"{authzr.uri} needs a challenge and no http-01 "
                                   "port was given")
            challb = next(c for c in authzr.body.challenges
                          if isinstance(c.chall, challenges.HTTP01))
            response, validation = challb.response_and_validation(self.acme.net.key)
            self._server.tokens[challb.chall.encode("token")] = validation
            self.acme.answer_challenge(challb, response)
        for authzr in pending:
            self._wait(authzr.uri, ("valid",), deadline)
        if pending or order.body.status not in (messages.STATUS_READY,
                                                messages.STATUS_VALID):
            self._wait(order.uri, ("ready", "valid"), deadline)
        finalized = self.acme.begin_finalization(order)
        if finalized.body.status == messages.STATUS_VALID and finalized.body.certificate:
            cert_url = finalized.body.certificate
        else:
            cert_url = self._wait(order.uri, ("valid",), deadline)["certificate"]
        return self.acme.net.post(cert_url, None,
                                  new_nonce_url=self.acme.directory["newNonce"]).text

    def issue_all(self, names: list[str], key_type: str = "ec-p256") -> list[str]:
        with cf.ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda n: self.issue(n, key_type), names))
