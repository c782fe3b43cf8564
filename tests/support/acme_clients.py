"""Stock ACME clients, run unmodified as real processes, for the ACME server tests.

One runner per client with one interface (:class:`Client`)::

    client = Certbot(workdir, directory_url, eab_kid, eab_hmac_key, ca_bundle)
    issued = client.obtain(["web.example.test"])   # account with EAB, order, finalize
    again = client.renew()                          # forced renewal of the same lineage
    client.revoke(again)

Every runner:

- refuses a directory URL that is not on loopback (127.0.0.0/8, ::1, localhost), and
  passes that URL on *every* command line: a client run without it falls back to Let's
  Encrypt (certbot's ``revoke`` and uacme do, silently);
- runs the client with HOME, XDG directories and all its state under ``workdir``, and
  with ``HTTP(S)_PROXY`` pointing at a loopback port that refuses connections
  (``NO_PROXY`` = loopback), so any request to an address other than loopback (a public
  CA, an OCSP responder, EFF's mailing list) fails instead of leaving the machine;
- turns off what would fetch OCSP (uacme ``-o``, dehydrated ``OCSP_FETCH=no``, Caddy
  ``disable_ocsp_stapling``) and answers no question (no terminal, ``--non-interactive``);
- takes ``allow_challenges``: True (default) lets the client answer challenges (Pebble
  with ``PEBBLE_VA_ALWAYS_VALID=1`` still hands out pending authorizations); False makes
  any attempt to answer a challenge fail the command loudly, which proves the client
  skipped authorizations the server returned as already ``valid``. How, per client:
  certbot and lego: the harness holds a listening socket on the client's http-01 port,
  so the client cannot bind it; dehydrated and uacme: the hook exits 1 (and logs the
  call to ``<workdir>/challenges.log``); Caddy: both challenge types disabled.

Caddy has no revocation command (2.6): :attr:`Client.supports_revoke` is False and
:meth:`Caddy.revoke` raises :class:`RevokeUnsupported`.

uacme (Debian 1.7.4) cannot be given a CA bundle: it uses libcurl-gnutls' compiled-in
``/etc/ssl/certs/ca-certificates.crt`` and no option or variable changes that. With a
``ca_bundle`` the runner starts it in a private mount namespace (``unshare --mount``)
where the bundle is bind-mounted over that path; the host's file is untouched. With a
plain ``http://`` directory (certlocker on loopback) no bundle is needed.

What these client versions need of a server (read in their sources; Pebble does all of it):

- all five accept a plain ``http://127.0.0.1:PORT/...`` directory (each POSTs newAccount
  over it); Caddy accepts http only for loopback and private-network IP hosts
  (certmagic: "insecure CA URL (HTTPS required)" otherwise);
- all five skip an authorization that is already ``valid`` (tested here: Pebble's
  ``PEBBLE_AUTHZREUSE=100`` hands the renewal valid authorizations, with challenges
  forbidden);
- account keys: certbot, dehydrated, uacme RSA (RS256); lego, Caddy P-256 (ES256); EAB
  HS256; lego and Caddy decode the EAB key as base64url *without* padding;
- CSR keys: certbot/lego/Caddy P-256, dehydrated P-384, uacme RSA 2048;
- ``Location`` on newAccount (certbot: 201 for a new account, 200 means "exists" and is
  an error for it) and on newOrder; newAccount ``onlyReturnExisting`` (dehydrated, uacme,
  each run) answering 200 + ``Location``;
- newNonce by HEAD (certbot, lego, Caddy, dehydrated) and by GET answering exactly 204
  (uacme);
- uacme wants 200 from finalize, order and certificate POSTs; certbot, dehydrated and
  uacme poll the order URL after finalize; lego 4.9 polls at most ``--cert.timeout``
  (30 s) and ignores Retry-After;
- the certificate as ``application/pem-certificate-chain`` (Caddy refuses any other
  type) holding the whole chain (dehydrated splits it; lego follows ``rel="up"`` only for
  a lone leaf; Caddy *appends* every ``rel="up"`` it is given, so send none);
- certbot needs ``Link: <authz>;rel="up"`` on a challenge response (only if a challenge
  is ever answered); Caddy deactivates valid authorizations when an order fails;
- ARI (``renewalInfo``): only certbot reads it (``certbot renew`` without
  ``--force-renewal``; GET ``<renewalInfo>/<AKI>.<serial>``, no ``replaces``); Caddy 2.6,
  lego 4.9, dehydrated 0.7 and uacme 1.7 have none.
"""

from __future__ import annotations

import atexit
import dataclasses
import glob
import ipaddress
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence
from urllib.parse import urlsplit

from devstack import Proc, free_port, wait_until

#: how long one client command may run
COMMAND_TIMEOUT = 180.0
#: how long Caddy gets to obtain or renew a certificate
CADDY_TIMEOUT = 90.0
EMAIL = "acme-clients@example.test"


class ClientError(RuntimeError):
    """A client command exited non-zero (or a client did not produce its certificate)."""


class RevokeUnsupported(NotImplementedError):
    """The client has no way to revoke a certificate."""


@dataclasses.dataclass(frozen=True)
class Issued:
    """What a client wrote: its certificate, its private key, and the chain it serves."""

    cert_path: Path  # PEM, the end-entity certificate first (lego's holds the chain too)
    key_path: Path  # the private key the client generated; it never left the client
    fullchain: str  # PEM text, end-entity first

    def certificate(self) -> Any:
        """The end-entity certificate (``cryptography.x509.Certificate``)."""
        from cryptography import x509

        return x509.load_pem_x509_certificates(self.cert_path.read_bytes())[0]

    def chain(self) -> list[Any]:
        from cryptography import x509

        return x509.load_pem_x509_certificates(self.fullchain.encode())

    def private_key(self) -> Any:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        return load_pem_private_key(self.key_path.read_bytes(), password=None)


class Client(Protocol):
    name: str
    supports_revoke: bool
    renewal_new_key: bool
    allow_challenges: bool

    def obtain(self, domains: list[str]) -> Issued: ...

    def renew(self) -> Issued: ...

    def revoke(self, issued: Issued) -> None: ...

    def challenge_calls(self) -> list[str]: ...

    def close(self) -> None: ...


# -------------------------------------------------------------------------- isolation

def require_loopback(url: str) -> None:
    """:raises ValueError: unless ``url``'s host is a loopback address or ``localhost``."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"{url!r}: ACME client tests talk to loopback only")


_REFUSER: socket.socket | None = None


def refusing_proxy() -> str:
    """``http://127.0.0.1:<port>`` where a socket is bound but never listens: every
    connection is refused at once. The socket lives as long as this process."""
    global _REFUSER
    if _REFUSER is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        _REFUSER = sock
        atexit.register(sock.close)
    return f"http://127.0.0.1:{_REFUSER.getsockname()[1]}"


def isolated_env(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A small environment: PATH, a locale, HOME and XDG under ``workdir``, and proxies
    that refuse everything but loopback. Nothing else of the caller's leaks in (no
    REQUESTS_CA_BUNDLE, SSL_CERT_FILE, ...)."""
    home = workdir / "home"
    for sub in ("", ".config", ".local/share", ".cache"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    proxy = refusing_proxy()
    no_proxy = "127.0.0.1,localhost,::1,[::1]"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
           "TMPDIR": str(workdir)}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "all_proxy"):
        env[name] = proxy
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env.update(extra or {})
    return env


class _PortBlocker:
    """Holds a listening socket on 127.0.0.1:``port`` so a client cannot serve http-01."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1)

    def __enter__(self) -> "_PortBlocker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _blocked(port: int, block: bool) -> Any:
    import contextlib

    return _PortBlocker(port) if block else contextlib.nullcontext()


def _which(name: str) -> str:
    from devstack import find_binary

    return find_binary(name)


# -------------------------------------------------------------------------- base

class _Runner:
    name: ClassVar[str] = ""
    supports_revoke: ClassVar[bool] = True
    #: False if a renewal keeps the previous certificate's key (Caddy 2.6 does)
    renewal_new_key: ClassVar[bool] = True

    def __init__(self, workdir: Path, directory_url: str, eab_kid: str, eab_hmac_key: str,
                 ca_bundle: Path | None = None, *, allow_challenges: bool = True,
                 email: str = EMAIL) -> None:
        require_loopback(directory_url)
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.directory_url = directory_url
        self.eab_kid = eab_kid
        self.eab_hmac_key = eab_hmac_key
        self.ca_bundle = Path(ca_bundle).resolve() if ca_bundle else None
        self.allow_challenges = allow_challenges
        self.email = email
        self.domains: list[str] = []
        self.log_path = self.workdir / f"{self.name}.log"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.workdir)!r}, {self.directory_url!r})"

    def env(self) -> dict[str, str]:
        return isolated_env(self.workdir)

    def run(self, argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run one client command to completion; its output goes to ``self.log_path``.

        :raises ClientError: on a non-zero exit (the message ends with the output).
        """
        started = time.monotonic()
        try:
            result = subprocess.run(list(argv), env=self.env(), cwd=self.workdir,
                                    stdin=subprocess.DEVNULL, capture_output=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ClientError(f"{self.name}: timed out after {timeout}s: "
                              f"{shlex.join(argv)}") from exc
        output = (result.stdout + result.stderr).decode(errors="replace")
        with open(self.log_path, "a") as log:
            log.write(f"$ {self._redact(shlex.join(argv))}\n{self._redact(output)}\n"
                      f"[exit {result.returncode} in {time.monotonic() - started:.1f}s]\n")
        if result.returncode != 0:
            tail = "\n".join(self._redact(output).splitlines()[-40:])
            raise ClientError(f"{self.name} exited {result.returncode}: "
                              f"{self._redact(shlex.join(argv))}\n{tail}")
        return output

    def _redact(self, text: str) -> str:
        return text.replace(self.eab_hmac_key, "<eab-hmac-key>")

    def challenge_calls(self) -> list[str]:
        """Challenge hook calls recorded in ``challenges.log`` (hook-based clients)."""
        path = self.workdir / "challenges.log"
        return path.read_text().splitlines() if path.exists() else []

    def _need_domains(self) -> list[str]:
        if not self.domains:
            raise ClientError(f"{self.name}: renew or revoke before obtain")
        return self.domains

    def close(self) -> None:
        """Stop whatever the runner left running (only Caddy runs in the background)."""


# -------------------------------------------------------------------------- certbot

class Certbot(_Runner):
    """certbot from PyPI (``.venv/bin/certbot``), standalone http-01 on a loopback port.

    Files: ``<workdir>/config/live/<first domain>/{cert,privkey,fullchain}.pem``.
    """

    name = "certbot"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http01_port = free_port()
        self.binary = _which("certbot")

    def env(self) -> dict[str, str]:
        extra = {"REQUESTS_CA_BUNDLE": str(self.ca_bundle)} if self.ca_bundle else {}
        return isolated_env(self.workdir, extra)

    def _common(self) -> list[str]:
        return [self.binary, "--non-interactive",
                "--config-dir", str(self.workdir / "config"),
                "--work-dir", str(self.workdir / "work"),
                "--logs-dir", str(self.workdir / "logs"),
                "--server", self.directory_url]

    def _issued(self) -> Issued:
        live = self.workdir / "config" / "live" / self._need_domains()[0]
        return Issued(live / "cert.pem", live / "privkey.pem",
                      (live / "fullchain.pem").read_text())

    def obtain(self, domains: list[str]) -> Issued:
        self.domains = list(domains)
        argv = [*self._common(), "certonly", "--standalone",
                "--preferred-challenges", "http-01",
                "--http-01-address", "127.0.0.1", "--http-01-port", str(self.http01_port),
                # "=": a base64url key may start with "-", which argparse would take
                # for an option ("expected one argument")
                f"--eab-kid={self.eab_kid}", f"--eab-hmac-key={self.eab_hmac_key}",
                "--agree-tos", "-m", self.email, "--no-eff-email",
                "--cert-name", domains[0]]
        for domain in domains:
            argv += ["-d", domain]
        with _blocked(self.http01_port, not self.allow_challenges):
            self.run(argv)
        return self._issued()

    def renew(self) -> Issued:
        # Without a terminal, certbot renew first sleeps up to 8 minutes at random.
        argv = [*self._common(), "renew", "--cert-name", self._need_domains()[0],
                "--force-renewal", "--no-random-sleep-on-renew"]
        with _blocked(self.http01_port, not self.allow_challenges):
            self.run(argv)
        return self._issued()

    def revoke(self, issued: Issued) -> None:
        self.run([*self._common(), "revoke", "--cert-path", str(issued.cert_path),
                  "--reason", "keycompromise", "--no-delete-after-revoke"])


# -------------------------------------------------------------------------- lego

class Lego(_Runner):
    """lego (Debian 4.9), its own http-01 server on a loopback port.

    Files: ``<workdir>/certificates/<first domain>.{crt,key}`` (``.crt`` holds the chain).
    """

    name = "lego"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http01_port = free_port()
        self.binary = _which("lego")

    def env(self) -> dict[str, str]:
        extra = {"LEGO_CA_CERTIFICATES": str(self.ca_bundle)} if self.ca_bundle else {}
        return isolated_env(self.workdir, extra)

    def _common(self) -> list[str]:
        # lego asks for the EAB flags on every command once the directory requires EAB.
        argv = [self.binary, "--server", self.directory_url, "--accept-tos",
                "--email", self.email, "--eab", f"--kid={self.eab_kid}",
                f"--hmac={self.eab_hmac_key}", "--path", str(self.workdir),
                "--http", "--http.port", f"127.0.0.1:{self.http01_port}"]
        for domain in self._need_domains():
            argv += ["-d", domain]
        return argv

    def _issued(self) -> Issued:
        base = self.workdir / "certificates" / self._need_domains()[0]
        crt = base.with_name(base.name + ".crt")
        return Issued(crt, base.with_name(base.name + ".key"), crt.read_text())

    def obtain(self, domains: list[str]) -> Issued:
        self.domains = list(domains)
        with _blocked(self.http01_port, not self.allow_challenges):
            self.run([*self._common(), "run"])
        return self._issued()

    def renew(self) -> Issued:
        # --days: renew when fewer than that many days are left, i.e. now.
        with _blocked(self.http01_port, not self.allow_challenges):
            self.run([*self._common(), "renew", "--days", "100000", "--no-random-sleep"])
        return self._issued()

    def revoke(self, issued: Issued) -> None:
        self.run([*self._common(), "revoke", "--keep", "--reason", "1"])


# -------------------------------------------------------------------------- hook clients

_HOOK = """#!/bin/sh
# Written by tests/support/acme_clients.py. Records every challenge call; with
# ALLOW=0 refuses it (exit 1), so a client that tries to answer a challenge fails.
ALLOW={allow}
LOG={log}
case "$1" in
  {challenge_ops})
    echo "$*" >> "$LOG"
    if [ "$ALLOW" != 1 ]; then
      echo "acme_clients hook: challenge requested but challenges are forbidden: $*" >&2
      exit 1
    fi
    ;;
esac
exit 0
"""


def _write_hook(path: Path, allow: bool, challenge_ops: str) -> None:
    path.write_text(_HOOK.format(allow=1 if allow else 0,
                                 log=shlex.quote(str(path.parent / "challenges.log")),
                                 challenge_ops=challenge_ops))
    path.chmod(0o755)


class Dehydrated(_Runner):
    """dehydrated (Debian 0.7.0): bash + curl + openssl, http-01 via a hook and WELLKNOWN.

    Files: ``<workdir>/certs/<first domain>/{cert,privkey,fullchain}.pem`` (symlinks).
    """

    name = "dehydrated"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binary = _which("dehydrated")
        self.config = self.workdir / "config"
        self.hook = self.workdir / "hook.sh"
        (self.workdir / "wellknown").mkdir(exist_ok=True)

    def _write_config(self) -> None:
        _write_hook(self.hook, self.allow_challenges, "deploy_challenge")
        settings = {
            "CA": self.directory_url, "BASEDIR": str(self.workdir),
            "CERTDIR": str(self.workdir / "certs"),
            "ACCOUNTDIR": str(self.workdir / "accounts"),
            "WELLKNOWN": str(self.workdir / "wellknown"),
            "LOCKFILE": str(self.workdir / "lock"),
            "DOMAINS_TXT": str(self.workdir / "domains.txt"),
            "CHALLENGETYPE": "http-01", "HOOK": str(self.hook),
            "CONTACT_EMAIL": self.email, "EAB_KID": self.eab_kid,
            "EAB_HMAC_KEY": self.eab_hmac_key, "OCSP_FETCH": "no",
            "OCSP_MUST_STAPLE": "no", "KEYSIZE": "2048",  # the RSA account key
            "CURL_OPTS": f"--cacert {self.ca_bundle}" if self.ca_bundle else "",
        }
        self.config.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items()))

    def _cmd(self, *args: str) -> list[str]:
        self._write_config()
        return [self.binary, "--config", str(self.config), *args]

    def _issued(self) -> Issued:
        live = self.workdir / "certs" / self._need_domains()[0]
        return Issued((live / "cert.pem").resolve(), (live / "privkey.pem").resolve(),
                      (live / "fullchain.pem").read_text())

    def _issue(self, force: bool) -> Issued:
        argv = self._cmd("--cron", *(["--force"] if force else []))
        for domain in self._need_domains():
            argv += ["--domain", domain]
        output = self.run(argv)
        # dehydrated exits 0 when a domain fails and it was told to keep going; not here,
        # but make sure the certificate is the one of this run.
        if "+ Done!" not in output:
            raise ClientError(f"dehydrated did not finish issuing:\n{output[-2000:]}")
        return self._issued()

    def obtain(self, domains: list[str]) -> Issued:
        self.domains = list(domains)
        self.run(self._cmd("--register", "--accept-terms"))
        return self._issue(force=False)

    def renew(self) -> Issued:
        return self._issue(force=True)

    def revoke(self, issued: Issued) -> None:
        self.run(self._cmd("--revoke", str(issued.cert_path)))


class Uacme(_Runner):
    """uacme (Debian 1.7.4), http-01 via its hook (``-h``).

    Files: ``<workdir>/conf/<first domain>/cert.pem``,
    ``<workdir>/conf/private/<first domain>/key.pem``.
    """

    name = "uacme"
    renewal_new_key = False  # uacme keeps private/<name>/key.pem across renewals

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binary = _which("uacme")
        self.confdir = self.workdir / "conf"
        self.hook = self.workdir / "hook.sh"

    def _cmd(self, *args: str) -> list[str]:
        _write_hook(self.hook, self.allow_challenges, "begin")
        argv = [self.binary, "--verbose", "--yes", "--no-ocsp",
                "--acme-url", self.directory_url, "--confdir", str(self.confdir),
                "--hook", str(self.hook), *args]
        if self.ca_bundle is None:
            return argv
        # libcurl-gnutls reads only its compiled-in bundle: give it ours in a private
        # mount namespace (root, or unprivileged user namespaces, needed).
        trust = "/etc/ssl/certs/ca-certificates.crt"
        script = f"mount --bind {shlex.quote(str(self.ca_bundle))} {trust} && exec \"$@\""
        unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-rm"]
        return [*unshare, "sh", "-c", script, "uacme", *argv]

    def _issued(self) -> Issued:
        domain = self._need_domains()[0]
        cert = self.confdir / domain / "cert.pem"
        return Issued(cert, self.confdir / "private" / domain / "key.pem", cert.read_text())

    def obtain(self, domains: list[str]) -> Issued:
        self.domains = list(domains)
        self.run(self._cmd(f"--eab={self.eab_kid}:{self.eab_hmac_key}", "new", self.email))
        self.run(self._cmd("issue", *domains))
        return self._issued()

    def renew(self) -> Issued:
        self.run(self._cmd("--force", "issue", *self._need_domains()))
        return self._issued()

    #: True: sign the revocation with the certificate's own key (``revoke CERT KEY``, a
    #: JWS with ``jwk``, RFC 8555 §7.6) instead of the account key (``kid``)
    revoke_with_cert_key = False

    def revoke(self, issued: Issued) -> None:
        key = [str(issued.key_path)] if self.revoke_with_cert_key else []
        self.run(self._cmd("--reason", "1", "revoke", str(issued.cert_path), *key))


# -------------------------------------------------------------------------- Caddy

class Caddy(_Runner):
    """Caddy (Debian 2.6) serving a TLS site on loopback for the domains, its certificate
    from exactly one ACME issuer: the directory under test, with EAB. No other issuer,
    OCSP stapling off, admin API on a loopback port.

    ``obtain`` starts ``caddy run`` and waits for the certificate file in Caddy's storage
    (``<workdir>/storage/certificates/<issuer>/<domain>/<domain>.crt``; one certificate
    per name, as Caddy manages names one by one: the first name's is returned).

    ``renew`` loads (admin API ``POST /load``) the same configuration with
    ``renewal_window_ratio: 1``: every managed certificate is then inside its renewal
    window, so Caddy renews it at once through its ordinary renewal path; once the
    stored certificate has changed, the normal configuration is loaded back (else Caddy
    would renew again at every maintenance tick).

    ``revoke``: Caddy 2.6 has no revocation command or API (certmagic can revoke, but
    nothing in Caddy exposes it), so :class:`RevokeUnsupported`.
    """

    name = "caddy"
    supports_revoke = False
    renewal_new_key = False  # certmagic 0.17 renews with the stored private key

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binary = _which("caddy")
        self.admin_port, self.http_port, self.https_port = (free_port() for _ in range(3))
        self.storage = self.workdir / "storage"
        self.config_path = self.workdir / "caddy.json"
        self.proc: Proc | None = None
        #: how long obtain and renew wait for Caddy's certificate (Caddy does not exit
        #: when an order fails: it retries with backoff)
        self.timeout = CADDY_TIMEOUT

    def config(self, *, renewal_window_ratio: float | None = None) -> dict[str, Any]:
        issuer: dict[str, Any] = {
            "module": "acme", "ca": self.directory_url, "email": self.email,
            "external_account": {"key_id": self.eab_kid, "mac_key": self.eab_hmac_key},
        }
        if self.ca_bundle:
            issuer["trusted_roots_pem_files"] = [str(self.ca_bundle)]
        if self.allow_challenges:
            issuer["challenges"] = {"http": {"alternate_port": self.http_port},
                                    "tls-alpn": {"alternate_port": self.https_port}}
        else:
            issuer["challenges"] = {"http": {"disabled": True}, "tls-alpn": {"disabled": True}}
        policy: dict[str, Any] = {"subjects": list(self.domains), "issuers": [issuer],
                                  "disable_ocsp_stapling": True}
        if renewal_window_ratio is not None:
            policy["renewal_window_ratio"] = renewal_window_ratio
        return {
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "logging": {"logs": {"default": {"level": "DEBUG"}}},
            "storage": {"module": "file_system", "root": str(self.storage)},
            "apps": {
                "tls": {"automation": {"policies": [policy]}},
                "http": {
                    "http_port": self.http_port, "https_port": self.https_port,
                    "servers": {"site": {
                        "listen": [f"127.0.0.1:{self.https_port}"],
                        "routes": [{"match": [{"host": list(self.domains)}],
                                    "handle": [{"handler": "static_response",
                                                "body": "certlocker acme client test"}]}],
                        "automatic_https": {"disable_redirects": True},
                    }},
                },
            },
        }

    def env(self) -> dict[str, str]:
        return isolated_env(self.workdir)

    def cert_file(self, domain: str) -> Path | None:
        found = glob.glob(str(self.storage / "certificates" / "*" / domain / f"{domain}.crt"))
        return Path(found[0]) if found else None

    def _issued(self) -> Issued:
        domain = self._need_domains()[0]
        cert = self.cert_file(domain)
        if cert is None:
            raise ClientError(f"caddy has no certificate for {domain} in {self.storage}")
        return Issued(cert, cert.with_suffix(".key"), cert.read_text())

    def _stored(self) -> dict[str, bytes]:
        out = {}
        for domain in self.domains:
            path = self.cert_file(domain)
            if path is not None and path.with_suffix(".key").exists():
                out[domain] = path.read_bytes()
        return out

    def _wait_for(self, predicate: Any, what: str) -> None:
        def ready() -> bool:
            if self.proc is not None and not self.proc.alive():
                raise ClientError(f"caddy exited while waiting for {what}"
                                  f"{self.proc.log_tail(60)}")
            return bool(predicate())

        try:
            wait_until(ready, self.timeout, what=what, interval=0.2)
        except TimeoutError:
            tail = self.proc.log_tail(60) if self.proc else ""
            raise ClientError(f"caddy: timed out waiting for {what}{tail}") from None

    def _load(self, config: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/load", data=json.dumps(config).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            response.read()

    def obtain(self, domains: list[str]) -> Issued:
        if self.proc is not None:
            raise ClientError("caddy: obtain called twice")
        self.domains = list(domains)
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")
        self.proc = Proc.spawn("caddy", [self.binary, "run", "--config", str(self.config_path)],
                               self.log_path, env=self.env(), cwd=self.workdir,
                               marker=str(self.config_path))
        self._wait_for(lambda: len(self._stored()) == len(self.domains),
                       "caddy to store its certificates")
        return self._issued()

    def renew(self) -> Issued:
        before = self._stored()
        if self.proc is None or not before:
            raise ClientError("caddy: renew before obtain")
        self._load(self.config(renewal_window_ratio=1.0))
        try:
            self._wait_for(lambda: all(self._stored().get(d) not in (None, before[d])
                                       for d in self.domains),
                           "caddy to renew its certificates")
        finally:
            self._load(self.config())
        return self._issued()

    def revoke(self, issued: Issued) -> None:
        raise RevokeUnsupported("Caddy 2.6 has no command or admin API to revoke a "
                                "certificate")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


#: every runner, by name
CLIENTS: dict[str, type[_Runner]] = {c.name: c for c in (Certbot, Lego, Caddy, Dehydrated,
                                                          Uacme)}


def available(name: str) -> bool:
    """True if ``name``'s binary is installed (certbot: in the venv or on PATH)."""
    binary = {"certbot": "certbot", "lego": "lego", "caddy": "caddy",
              "dehydrated": "dehydrated", "uacme": "uacme"}[name]
    try:
        _which(binary)
    except Exception:
        return shutil.which(binary) is not None
    return True
