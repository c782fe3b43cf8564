"""A real ``bao agent`` for delivery tests, with configs built from templates/agent.hcl.

The shipped ``templates/agent.hcl`` is used as it is, with only this test's addresses and
paths swapped in (each swap asserts the text is still there, so a change to the shipped
file that the test no longer exercises fails loudly).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Callable, Mapping

from tests.support.tls_servers import TlsServer, wait_until

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
HOOK = TEMPLATES / "hooks" / "certlocker-deploy.sh"
BAO = REPO / ".venv" / "bin" / "bao"


def hcl(value: object) -> str:
    return json.dumps(str(value))


@dataclasses.dataclass
class Agent:
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def wait_log(self, needle: str, timeout: float) -> None:
        self._wait(lambda: needle in self.text(), timeout, repr(needle))

    def wait_served(self, servers: list[TlsServer], fingerprint: str, timeout: float) -> None:
        """Until every server has finished reloading and serves ``fingerprint``."""
        def all_serve() -> bool:
            assert self.proc.poll() is None, f"agent exited:\n{self.text()[-3000:]}"
            return all(s.serves(fingerprint) for s in servers)
        self._wait(all_serve, timeout, f"{[s.name for s in servers]} to serve "
                   f"{fingerprint[:16]}")

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            wait_until(predicate, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent log:\n{self.text()[-3000:]}") from None


def start_agent(config: str, workdir: Path, env: Mapping[str, str]) -> Agent:
    """``bao agent -config=<workdir>/agent-N.hcl``; the caller stops it by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("agent-*.hcl")))
    cfg, log = workdir / f"agent-{n}.hcl", workdir / f"agent-{n}.log"
    cfg.write_text(config)
    full_env = {**os.environ, **env, "HOME": str(workdir)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BAO), "agent", f"-config={cfg}"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, env=full_env)
    return Agent(proc, log)


NOT_STARTED_HERE = ["sh", "-c", "echo this test starts the server itself >&2; exit 1"]


def start_command(server: object) -> list[str]:
    """What the shipped config's ``--start`` runs: a pending server's own start command;
    for a server the test already runs, one that fails loudly (it must not be needed)."""
    return list(getattr(server, "start_command", None) or NOT_STARTED_HERE)


def shipped_config(vault_addr: str, jwt_file: Path, staging: Path, nginx: TlsServer,
                   haproxy: TlsServer, render_interval: str = "1s") -> str:
    """templates/agent.hcl with this test's Vault, JWT file, staging dir and servers."""
    text = (TEMPLATES / "agent.hcl").read_text()
    swaps = {
        "https://vault.example.internal:8200": vault_addr,
        "/run/certlocker-agent/prod-api-www": str(staging),
        "/etc/certlocker/templates/": f"{TEMPLATES}/",
        "/usr/local/libexec/certlocker/": f"{HOOK.parent}/",
        "/etc/certlocker/credential.jwt": str(jwt_file),
        "haproxy -c -q -f /etc/haproxy/haproxy.cfg": shlex.join(haproxy.check_command),
        "systemctl reload haproxy": shlex.join(haproxy.reload_command),
        "systemctl start haproxy": shlex.join(start_command(haproxy)),
        "/etc/haproxy/certs/www.pem": str(haproxy.cert_path),
        '"nginx -t -q"': hcl(shlex.join(nginx.check_command)),
        "systemctl reload nginx": shlex.join(nginx.reload_command),
        "systemctl start nginx": shlex.join(start_command(nginx)),
        "/etc/nginx/tls/www.pem": str(nginx.cert_path),
        'static_secret_render_interval = "30s"':
            f'static_secret_render_interval = "{render_interval}"',
    }
    for old, new in swaps.items():
        assert old in text, f"templates/agent.hcl no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def template_block(source: Path, staged: Path, server: TlsServer, *,
                   live: Path | None = None, reload: list[str] | None = None) -> str:
    """One template stanza rendering ``source`` to ``staged`` with the deploy hook."""
    command = [str(HOOK), "--check", shlex.join(server.check_command),
               "--reload", shlex.join(reload or server.reload_command),
               str(staged), str(live or server.cert_path)]
    return f"""
template {{
  source               = {hcl(source)}
  destination          = {hcl(staged)}
  perms                = "0600"
  error_on_missing_key = true
  exec {{
    command = [{", ".join(hcl(c) for c in command)}]
    timeout = "30s"
  }}
}}
"""


def minimal_config(vault_addr: str, jwt_file: Path, templates: str,
                   auth_mount: str = "auth/certlocker-prod",
                   render_interval: str = "1s") -> str:
    """The shipped config's auth and template_config with other template stanzas."""
    return f"""
vault {{ address = {hcl(vault_addr)} }}
auto_auth {{
  method "jwt" {{
    mount_path = {hcl(auth_mount)}
    config = {{
      path = {hcl(jwt_file)}
      role = "service"
      remove_jwt_after_reading = false
    }}
  }}
}}
template_config {{
  static_secret_render_interval = {hcl(render_interval)}
  exit_on_retry_failure = true
}}
{templates}
"""
