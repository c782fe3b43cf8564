"""The drill (issue #19): N certificates, each served by real nginx fed by stock
``bao agent``s, all selected for replacement at once with ``POST /v1/replacements``;
timed until certlocker has verified the NEW certificate on every node. Compared with
the way teams do it today: ``certbot renew --force-renewal`` per lineage plus a reload,
measured on a sample against a second Pebble and extrapolated linearly to N.

Layout: ``count / per_service`` services; per service one ``bao agent`` (it logs in
once, with the service JWT from ``POST /v1/services/<env>/<service>/credentials``) with
one template per certificate, and one nginx process with one ``server`` block per
certificate on its own loopback address (``127.0.<20+s>.<i+1>``, one port per nginx).
Each template renders ``templates/nginx.ctmpl`` (its secret path written in, since one
agent serves many certificates) into the file nginx reads; its ``exec`` runs
``reload.sh``, which SIGHUPs that nginx and logs the time.

With ``--limit ORDERS/SECONDS`` the issuer is rate limited below the load
(``[issuers.pebble.limits]``: that many new orders in any window of that many seconds):
the drill then also checks, from Pebble's own log, that no window ever held more orders
than the limit (a CA enforcing it would have answered no ``rateLimited``), and compares
the finish with the ETA the 202 answer gave (target: within 10 %). Pebble 2.4 has no
rate limits of its own, so the orders it logged are the evidence.

Run: ``bench/run drill [--count 100] [--limit 40/60]`` or
``.venv/bin/python -m bench.bench_drill``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.agent import BAO, TEMPLATES, hcl
from tests.support.nginx_pool import NGINX, free_port

from .common import (BENCH, REPO, KeepAlive, Row, certlocker_stack, devstack, limit_arg,
                     machine, median, met, percentile, reconciler_settled, secs, table,
                     vault_counter_env, workdir)

ENV = "dev"
DEFAULT_COUNT = 1000
PER_SERVICE = 100
#: how often each agent re-reads its KV v2 secrets (they have no lease): the delivery
#: delay's upper bound, and the agents' idle load on Vault (count / interval reads/s).
#: The Agent's default is 5 minutes. Every re-read makes an agent evaluate all its
#: templates again (consul-template), so its CPU grows with templates² / interval: at
#: 10 s the ten agents of the 1,000 drill took 1.5 of this machine's 2 cores from
#: everything else, which a real fleet's agents, on their own hosts, would not.
RENDER_INTERVAL = 60
CERTBOT_SAMPLE = 10
TARGET_SECONDS = 300.0
TARGET_SPEEDUP = 10.0
TARGET_ETA_ERROR = 0.10
#: with --limit: the time between a slot and the CA seeing the order (default 2 s), and
#: 1 s more because Pebble's log, the evidence, has whole seconds
LIMIT_MARGIN = 3
DONE_WITHIN = 1800.0
CERTBOT_CANDIDATES = (BENCH / ".venvs" / "certbot" / "bin" / "certbot",
                      REPO / ".venv" / "bin" / "certbot")

RELOAD_SH = """#!/bin/sh
# reload.sh <nginx pid file> <log>: what every template's exec runs.
printf '%s start\\n' "$(date +%s.%N)" >> "$2"
if [ -s "$1" ]; then kill -HUP "$(cat "$1")"; fi
printf '%s done\\n' "$(date +%s.%N)" >> "$2"
"""


def _progress(what: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ----------------------------------------------------------------------------- servers

class Nginx:
    """One nginx master serving many certificates, one server block each."""

    def __init__(self, workdir: Path, sites: list[tuple[str, int, Path]]) -> None:
        self.workdir = workdir
        self.sites = sites
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid_file = workdir / "nginx.pid"

    def config(self) -> str:
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        blocks = "".join(
            f"  server {{\n    listen {ip}:{port} ssl;\n    ssl_certificate {pem};\n"
            f"    ssl_certificate_key {pem};\n    return 204;\n  }}\n"
            for ip, port, pem in self.sites)
        temps = "".join(f"  {k}_temp_path {tmp}/{k};\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return (f"worker_processes 1;\npid {self.pid_file};\n"
                f"error_log {self.workdir / 'error.log'} warn;\n"
                "events { worker_connections 1024; }\n"
                f"http {{\n  access_log off;\n{temps}{blocks}}}\n")

    def start(self, timeout: float = 30.0) -> None:
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.workdir), "-e", str(self.workdir / "error.log"),
             "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        devstack.wait_until(lambda: self._up(), timeout, what=f"nginx in {self.workdir}")

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {(self.workdir / 'error.log').read_text()}")
        return self.pid_file.is_file() and self.pid_file.read_text().strip() != ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Agent:
    """A stock ``bao agent`` with one template per certificate of one service."""

    def __init__(self, workdir: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.workdir, self.proc, self.log = workdir, proc, log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _agent_config(vault_addr: str, auth_mount: str, role: str, jwt: Path,
                  templates: str) -> str:
    return f"""
vault {{
  address = {hcl(vault_addr)}
  retry {{ num_retries = 5 }}
}}
auto_auth {{
  method "jwt" {{
    mount_path = {hcl(auth_mount)}
    config = {{
      path = {hcl(jwt)}
      role = {hcl(role)}
      remove_jwt_after_reading = false
    }}
  }}
}}
template_config {{
  static_secret_render_interval = "{RENDER_INTERVAL}s"
  exit_on_retry_failure = true
}}
{templates}
"""


def _template(source: Path, dest: Path, reload: list[str]) -> str:
    return f"""
template {{
  source               = {hcl(source)}
  destination          = {hcl(dest)}
  perms                = "0600"
  error_on_missing_key = true
  exec {{
    command = [{", ".join(hcl(c) for c in reload)}]
    timeout = "30s"
  }}
}}
"""


# ----------------------------------------------------------------------------- API

class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self._local = threading.local()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        ka = getattr(self._local, "ka", None)
        if ka is None:
            ka = self._local.ka = KeepAlive(timeout=120)
        return ka.call(method, f"{self.url}{path}", body, {"X-Vault-Token": self.token})

    def ok(self, method: str, path: str, body: Any = None,
           expect: tuple[int, ...] = (200, 201, 202)) -> Any:
        code, answer = self.call(method, path, body)
        if code not in expect:
            raise RuntimeError(f"{method} {path} answered {code}: {answer}")
        return answer


def _served_ok(view: dict[str, Any], old_sha: str | None = None) -> bool:
    """Every node of every target ``ok`` with the current certificate's fingerprint
    (and that is not ``old_sha``)."""
    current = view.get("current") or {}
    sha = current.get("sha256_fingerprint")
    if view.get("status") != "valid" or not sha or sha == old_sha:
        return False
    targets = view.get("targets") or []
    return bool(targets) and all(t.get("status") == "ok" and t.get("served_sha256") == sha
                                 for t in targets)


def _wait_all(api: Api, ids: list[str], check: Any, what: str, timeout: float,
              force_verify: bool = False) -> None:
    """Poll ``GET /v1/certificates/<id>`` for the ids not yet done (4 keep-alive
    clients), every 2 s, until ``check(view)`` holds for all; with ``force_verify`` a
    ``POST .../verify`` first for each id not yet done once a round found it pending."""
    pending = set(ids)
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(4) as pool:
        while pending:
            def one(cert_id: str) -> str | None:
                view = api.ok("GET", f"/v1/certificates/{cert_id}")
                if view.get("status") == "failed":
                    # A CA that did not answer in time on a loaded machine: ask again
                    # now rather than wait for the retry's backoff (setup, not timed).
                    _progress(f"{cert_id} failed ({view.get('last_error')}): renew")
                    api.call("POST", f"/v1/certificates/{cert_id}/renew?wait=0")
                    return None
                if check(view):
                    return cert_id
                if force_verify and view.get("status") == "valid":
                    api.call("POST", f"/v1/certificates/{cert_id}/verify")
                return None
            done = {d for d in pool.map(one, sorted(pending)) if d}
            pending -= done
            _progress(f"{what}: {len(ids) - len(pending)}/{len(ids)} (load {_load()})")
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {len(pending)} left after {timeout:.0f} s")
            if pending:
                time.sleep(2.0)


# ----------------------------------------------------------------------------- logs

def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _json_events(*logs: Path) -> list[dict[str, Any]]:
    out = []
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    return out


_RENDERED = re.compile(r'^(\S+) \[INFO\]\s+.*rendered "[^"]*" => "([^"]+)"')


def _renders(log: Path) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _RENDERED.match(line)
        if m:
            out.append((_ts(m.group(1)), m.group(2)))
    return out


def _vault_requests(counts: Path) -> collections.Counter[str]:
    kinds: collections.Counter[str] = collections.Counter()
    for log in counts.glob("*.log"):
        for line in log.read_text().splitlines():
            method, path = line.split(" ", 1)
            parts = path.split("/")
            kinds[f"{method} {'/'.join(parts[:3])}"] += 1
    return kinds


_PEBBLE_ORDER = re.compile(r"^Pebble (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) POST /order-plz ")


def _orders_per_window(log: Path, window: int) -> dict[str, Any]:
    """The most new orders Pebble logged in any ``window`` seconds (its log has whole
    seconds, so each window is widened by one second: an upper bound)."""
    times = sorted(dt.datetime.strptime(m.group(1), "%Y/%m/%d %H:%M:%S").timestamp()
                   for line in log.read_text(errors="replace").splitlines()
                   if (m := _PEBBLE_ORDER.match(line)))
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return {"orders": len(times), "most_in_window": most, "window_s": window}


# ----------------------------------------------------------------------------- certbot

def _certbot_binary() -> Path | None:
    return next((c for c in CERTBOT_CANDIDATES if c.exists()), None)


def _certbot_sample(tmp: Path, stack: devstack.Stack, sample: int) -> dict[str, Any]:
    """``sample`` lineages from a second Pebble (obtained untimed), served by one nginx;
    then each renewed with ``certbot renew --force-renewal --cert-name X`` plus a
    deploy hook reloading that nginx, one after another; the mean per lineage."""
    certbot = _certbot_binary()
    if certbot is None:
        raise RuntimeError("no certbot (pip install -e '.[dev]' or bench/run installs it)")
    base = tmp / "certbot"
    state = base / "pebble"
    state.mkdir(parents=True)
    http01 = devstack.free_port()
    port, mgmt = devstack.free_port(), devstack.free_port()
    proc, ca = devstack.start_pebble(state, port, mgmt, http01, stack.ports["dns"],
                                     env={"PEBBLE_WFE_NONCEREJECT": "0"})
    directory = f"https://127.0.0.1:{port}/dir"
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(ca)}
    common = ["--non-interactive", "--server", directory, "--standalone",
              "--http-01-port", str(http01), "--http-01-address", "127.0.0.1",
              "--config-dir", str(base / "config"), "--work-dir", str(base / "work"),
              "--logs-dir", str(base / "logs")]
    names = [f"c{i}.certbot.drill.test" for i in range(sample)]
    nginx = None
    try:
        for name in names:
            _run([str(certbot), "certonly", *common, "--agree-tos", "-m", "x@example.test",
                  "--key-type", "ecdsa", "--elliptic-curve", "secp256r1",
                  "--cert-name", name, "-d", name], env)
        sport = free_port(tuple(f"127.0.60.{i + 1}" for i in range(sample)))
        nginx = Nginx(base / "nginx", [])
        nginx.workdir.mkdir(parents=True)
        # nginx wants the key apart here: certbot's live/ has fullchain.pem + privkey.pem
        nginx.sites = [(f"127.0.60.{i + 1}", sport, base / "config" / "live" / n)
                       for i, n in enumerate(names)]
        conf = nginx.config()
        for _, _, live in nginx.sites:
            conf = conf.replace(f"ssl_certificate {live};", f"ssl_certificate "
                                f"{live}/fullchain.pem;").replace(
                f"ssl_certificate_key {live};", f"ssl_certificate_key {live}/privkey.pem;")
        nginx.config = lambda: conf  # type: ignore[method-assign]
        nginx.start()
        hook = f"kill -HUP $(cat {nginx.pid_file})"
        times = []
        for name in names:
            started = time.monotonic()
            _run([str(certbot), "renew", *common, "--force-renewal", "--cert-name", name,
                  "--deploy-hook", hook, "--no-random-sleep-on-renew"], env)
            times.append(time.monotonic() - started)
        version = subprocess.run([str(certbot), "--version"], capture_output=True,
                                 text=True).stdout.strip()
    finally:
        if nginx is not None:
            nginx.stop()
        proc.stop()
    return {"times": times, "mean": sum(times) / len(times), "version": version,
            "binary": str(certbot.relative_to(REPO))}


def _run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:2]} exited {result.returncode}:\n"
                           f"{(result.stdout + result.stderr)[-2000:]}")


# ----------------------------------------------------------------------------- drill

def run(count: int = DEFAULT_COUNT, per_service: int = PER_SERVICE,
        sample: int = CERTBOT_SAMPLE, limit: tuple[int, int] | None = None) -> str:
    services = [f"s{k:02d}" for k in range((count + per_service - 1) // per_service)]
    load_before = _load()
    result: dict[str, Any] = {"count": count, "per_service": per_service,
                              "render_interval_s": RENDER_INTERVAL,
                              "machine": machine(), "load_before": load_before,
                              "limit": list(limit) if limit else None}
    with workdir("drill") as tmp:
        counts = tmp / "vault-requests"
        counts.mkdir()
        counter_env = {**vault_counter_env(counts),
                       # the fleet's pick-up time, which an ETA under limits counts
                       "CERTLOCKER_DELIVERY_SECONDS": str(RENDER_INTERVAL)}
        if limit is not None:
            counter_env |= {"CERTLOCKER_ISSUERS__PEBBLE__LIMITS__ORDERS_PER_WINDOW":
                            str(limit[0]),
                            "CERTLOCKER_ISSUERS__PEBBLE__LIMITS__ORDER_WINDOW_SECONDS":
                            str(limit[1]),
                            # the default 2 s, and 1 s more: Pebble logs whole seconds
                            "CERTLOCKER_ISSUERS__PEBBLE__LIMITS__MARGIN_SECONDS":
                            str(LIMIT_MARGIN)}
        agents: list[Agent] = []
        nginxes: list[Nginx] = []
        with certlocker_stack(tmp / "stack", extra_env=counter_env) as stack:
            try:
                reconciler_settled(stack)
                api = Api(stack.api_url, stack.operator_token or "")
                drill = _drill(tmp, stack, api, services, count, per_service, agents,
                               nginxes, counts)
                result.update(drill)
                if limit is not None:
                    result["orders"] = _orders_per_window(stack.state_dir / "pebble.log",
                                                          limit[1])
            finally:
                for agent in agents:
                    agent.stop()
                for nginx in nginxes:
                    nginx.stop()
                keep = os.environ.get("BENCH_DRILL_KEEP_LOGS")
                if keep:  # for a post-mortem: the stack's, agents' and nginx logs
                    shutil.copytree(tmp, keep, dirs_exist_ok=True,
                                    ignore=lambda _, names: [
                                        n for n in names if n.endswith((".pem", ".token",
                                                                        ".jwt", ".key"))])
            _progress(f"certbot sample ({sample} lineages, second Pebble)")
            result["certbot"] = _certbot_sample(tmp, stack, sample)
    result["load_after"] = _load()
    _write_json(result)
    return _report(result)


def _drill(tmp: Path, stack: devstack.Stack, api: Api, services: list[str], count: int,
           per_service: int, agents: list[Agent], nginxes: list[Nginx],
           counts: Path) -> dict[str, Any]:
    shipped = (TEMPLATES / "nginx.ctmpl").read_text()
    assert '(env "CERTLOCKER_CERT_PATH")' in shipped, "templates/nginx.ctmpl changed"
    reload_sh = tmp / "reload.sh"
    reload_sh.write_text(RELOAD_SH)
    reload_sh.chmod(0o755)
    # -- declare
    plan: list[tuple[str, str, int, str, str]] = []  # (service, name, index, ip, id)
    ports: dict[str, int] = {}
    for s, service in enumerate(services):
        api.ok("PUT", f"/v1/grants/{ENV}/{service}", {"zones": [f"{service}.drill.test"]})
        n = min(per_service, count - s * per_service)
        ips = tuple(f"127.0.{20 + s}.{i + 1}" for i in range(n))
        ports[service] = free_port(ips)
        for i in range(n):
            plan.append((service, f"c{i}", i, ips[i], f"{ENV}.{service}.c{i}"))

    def declare(item: tuple[str, str, int, str, str]) -> str:
        service, name, _, ip, cert_id = item
        dns = f"{name}.{service}.drill.test"
        api.ok("POST", "/v1/certificates", {
            "environment": ENV, "service": service, "name": name, "dns_names": [dns],
            "key_type": "ec-p256",
            "targets": [{"address": f"{ip}:{ports[service]}", "sni": dns}]})
        return cert_id

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(declare, plan))
    _progress(f"declared {len(ids)} in {time.monotonic() - started:.1f} s")
    _wait_all(api, ids, lambda v: v.get("status") == "valid", "valid", DONE_WITHIN)
    setup_issue = time.monotonic() - started
    # -- agents and nginx
    jwt_minted = 0
    for service in services:
        work = tmp / "agents" / service
        (work / "tpl").mkdir(parents=True)
        (work / "live").mkdir()
        minted = api.ok("POST", f"/v1/services/{ENV}/{service}/credentials")
        jwt_minted += 1
        jwt = work / "credential.jwt"
        jwt.write_text(minted["token"])
        jwt.chmod(0o600)
        mount = minted["vault"]["auth_path"]
        mount = mount if mount.startswith("auth/") else f"auth/{mount}"
        items = [p for p in plan if p[0] == service]
        nginx = Nginx(work / "nginx", [(ip, ports[service], work / "live" / f"{name}.pem")
                                       for _, name, _, ip, _ in items])
        (work / "nginx").mkdir()
        blocks = []
        for _, name, _, _, _ in items:
            source = work / "tpl" / f"{name}.ctmpl"
            source.write_text(shipped.replace(
                '(env "CERTLOCKER_CERT_PATH")', f'"certlocker/data/certs/{ENV}/{service}/{name}"'))
            blocks.append(_template(source, work / "live" / f"{name}.pem",
                                    [str(reload_sh), str(nginx.pid_file),
                                     str(work / "reload.log")]))
        config = work / "agent.hcl"
        config.write_text(_agent_config(stack.vault_addr, mount, minted["vault"]["role"],
                                        jwt, "".join(blocks)))
        log = work / "agent.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(BAO), "agent", f"-config={config}"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    env={**os.environ, "HOME": str(work)},
                                    start_new_session=True)
        agents.append(Agent(work, proc, log))
        nginxes.append(nginx)
    for agent, nginx in zip(agents, nginxes, strict=True):
        def rendered(a: Agent = agent, n: Nginx = nginx) -> bool:
            if a.proc.poll() is not None:
                raise RuntimeError(f"agent exited:\n{a.log.read_text()[-3000:]}")
            return all(p.is_file() and p.stat().st_size > 0 for _, _, p in n.sites)
        devstack.wait_until(rendered, 300, what=f"{agent.workdir.name} rendered",
                            max_interval=0.5)
        nginx.start()
    _progress(f"{len(agents)} agents rendered, {len(nginxes)} nginx started")
    _wait_all(api, ids, _served_ok, "verified ok before the drill", 900,
              force_verify=True)
    with ThreadPoolExecutor(4) as pool:
        before = dict(zip(ids, pool.map(
            lambda c: api.ok("GET", f"/v1/certificates/{c}")["current"], ids), strict=True))
    time.sleep(RENDER_INTERVAL + 1)  # let the agents' periodic re-read settle
    for log in counts.glob("*.log"):
        log.unlink()
    for agent in agents:
        (agent.workdir / "reload.log").write_text("")
    load_at_start = _load()
    # -- the drill
    t0_wall = time.time()
    t0 = time.monotonic()
    # The 202 comes once the selection is authorized and recorded in Vault; a long
    # timeout all the same, as a loaded machine may take a while to list and read 1,000.
    code, op = KeepAlive(timeout=DONE_WITHIN).call(
        "POST", f"{api.url}/v1/replacements", {"all": True, "reason": "bench drill"},
        {"X-Vault-Token": api.token})
    if code != 202:
        raise RuntimeError(f"POST /v1/replacements answered {code}: {op}")
    accepted = time.monotonic() - t0
    _progress(f"replacement {op['id']} accepted in {accepted:.2f} s: {op.get('selected')}"
              f", ETA {op.get('eta_seconds')} s (limits_eta {op.get('limits_eta')})")
    timeline: list[tuple[float, dict[str, int]]] = []
    while True:
        shown = api.ok("GET", f"/v1/replacements/{op['id']}?items=false")
        elapsed = time.monotonic() - t0
        counts_now = dict(shown.get("counts") or {})
        timeline.append((round(elapsed, 1), counts_now))
        if counts_now.get("verified", 0) >= count or shown.get("state") == "done":
            break
        if shown.get("failures"):
            _progress(f"failures: {shown['failures'][:3]}")
        if elapsed > DONE_WITHIN:
            raise TimeoutError(f"drill not done after {DONE_WITHIN:.0f} s: {counts_now}")
        if len(timeline) % 10 == 1:
            _progress(f"t+{elapsed:.0f} s {counts_now} (load {_load()})")
        time.sleep(1.0)
    total = time.monotonic() - t0
    load_at_end = _load()
    _progress(f"drill done in {total:.1f} s: {timeline[-1][1]}")
    time.sleep(0.5)
    vault = _vault_requests(counts)
    # -- check every certificate independently: new serial, every node serves it
    with ThreadPoolExecutor(4) as pool:
        views = list(pool.map(lambda c: api.ok("GET", f"/v1/certificates/{c}"), ids))
    wrong = [c for c, view in zip(ids, views, strict=True)
             if not _served_ok(view, before[c]["sha256_fingerprint"])]
    if wrong:
        raise RuntimeError(f"{len(wrong)} certificates not verified new: {wrong[:5]}")
    split = _split(stack, agents, ids, t0_wall)
    return {"declare_and_issue_setup_s": setup_issue, "services": len(services),
            "agents": len(agents), "nginx_processes": len(nginxes),
            "replacement_id": op["id"], "accepted_s": accepted, "total_s": total,
            "eta_at_start_s": op.get("eta_seconds"), "limits_eta": op.get("limits_eta"),
            "timeline": timeline, "vault_requests": sum(vault.values()),
            "vault_requests_by_kind": dict(vault.most_common()),
            "load_at_start": load_at_start, "load_at_end": load_at_end,
            "service_jwts": jwt_minted, **split}


def _split(stack: devstack.Stack, agents: list[Agent], ids: list[str],
           t0: float) -> dict[str, Any]:
    """Per certificate, from the logs: issuance start (``issuance.finished`` time minus
    its ``seconds``), stored (``certificate.issued``), rendered (the agent's
    ``rendered ... => <file>``), reload done (reload.sh's first ``done`` after the
    render), verified (first ``delivery.verified`` with ``divergent: none`` after it
    was stored). Seconds since the POST."""
    events = _json_events(stack.state_dir / "api.log", stack.state_dir / "reconciler.log")
    start: dict[str, float] = {}
    stored: dict[str, float] = {}
    verified_at: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        msg, cert, when = e.get("message") or e.get("event"), e.get("certificate"), e.get("time")
        if not cert or not when:
            continue
        t = _ts(when) - t0
        if t < 0:
            continue
        if msg == "issuance.finished" and cert not in start:
            start[cert] = t - float(e.get("seconds", 0))
        elif msg == "certificate.issued" and cert not in stored:
            stored[cert] = t
        elif msg == "delivery.verified" and e.get("divergent") == "none":
            verified_at[cert].append(t)
    rendered: dict[str, float] = {}
    reloads: list[float] = []
    reload_count = 0
    for agent in agents:
        service = agent.workdir.name
        text_log = agent.log
        for when, dest in _renders(text_log):
            if when - t0 < 0:
                continue
            cert = f"{ENV}.{service}.{Path(dest).stem}"
            rendered.setdefault(cert, when - t0)
        for line in (agent.workdir / "reload.log").read_text().splitlines():
            when_s, what = line.split()
            if what == "done":
                reloads.append(float(when_s) - t0)
            else:
                reload_count += 1
    reloads.sort()
    per: dict[str, list[float]] = collections.defaultdict(list)
    last: dict[str, float] = {}
    missing = collections.Counter()
    for cert in ids:
        s, st, r = start.get(cert), stored.get(cert), rendered.get(cert)
        v = next((x for x in verified_at.get(cert, []) if st is not None and x >= st), None)
        rl = next((x for x in reloads if r is not None and x >= r), None)
        marks = {"queued": s, "issued+stored": st, "rendered": r, "reloaded": rl,
                 "verified": v}
        for k, val in marks.items():
            if val is None:
                missing[k] += 1
            else:
                last[k] = max(last.get(k, 0.0), val)
        if None not in marks.values():
            assert s is not None and st is not None and r is not None and rl is not None \
                and v is not None
            per["queue (POST to issuance start)"].append(s)
            per["issue + store (ACME order, Vault write, status)"].append(st - s)
            per["render (stored to agent render)"].append(r - st)
            per["reload (render to nginx SIGHUP done)"].append(rl - r)
            per["verify (reload to certlocker saw ok)"].append(v - rl)
    return {"phase_median_s": {k: median(v) for k, v in per.items()},
            "phase_p95_s": {k: percentile(v, 95) for k, v in per.items()},
            "phase_last_s": last, "phase_missing": dict(missing),
            "issuance_seconds_median": median([stored[c] - start[c] for c in ids
                                               if c in stored and c in start] or [0.0]),
            "reload_invocations": reload_count, "reloads_done": len(reloads)}


# ----------------------------------------------------------------------------- report

def _report(r: dict[str, Any]) -> str:
    n, total = r["count"], r["total_s"]
    cb = r["certbot"]
    extrapolated = cb["mean"] * n
    speedup = extrapolated / total
    # Under a limit below the load the pace is the limit's: the targets are the ETA's.
    paced = bool(r.get("limit"))
    rows = [
        Row(f"{n} certificates replaced, delivered and verified on every node (peer: "
            f"certbot renew --force-renewal + reload, {len(cb['times'])} measured x "
            f"{n / len(cb['times']):g})", secs(total), secs(extrapolated),
            f"{speedup:.1f}x faster", "—" if paced else f"≥ {TARGET_SPEEDUP:.0f}x",
            "—" if paced else met(speedup >= TARGET_SPEEDUP)),
        Row(f"all {n} in", secs(total), "—", "—",
            "—" if paced else f"< {TARGET_SECONDS:.0f} s",
            "—" if paced else met(total < TARGET_SECONDS)),
        Row("per certificate", f"{total / n * 1000:.0f} ms", f"{cb['mean'] * 1000:.0f} ms"),
        *_limit_rows(r),
        Row("of which: POST /v1/replacements answered 202 (selection, authorization and "
            "the operation's records in Vault; the renewal requests are filed behind it)",
            secs(r["accepted_s"])),
        Row("Vault requests per certificate (certlocker API + reconciler, drill window)",
            f"{r['vault_requests'] / n:.1f}"),
    ]
    for k, v in r["phase_median_s"].items():
        rows.append(Row(f"split, median per certificate: {k}", secs(v), "—", "—",
                        "—", "—"))
    last = r["phase_last_s"]
    crit = ", ".join(f"{k} {v:.1f} s" for k, v in last.items())
    top = "; ".join(f"{c / n:.2f} {k}" for k, c in
                    collections.Counter(r["vault_requests_by_kind"]).most_common(8))
    notes = [
        f"{n} ECDSA P-256 certificates from Pebble in {r['services']} services of "
        f"{r['per_service']}; per service one stock `bao agent` ({BAO.name}, jwt auto-auth "
        "with the service credential from `POST /v1/services/<env>/<service>/credentials`,"
        f" one template per certificate, `static_secret_render_interval = "
        f"{r['render_interval_s']}s`) and one nginx process with one `server` block per "
        "certificate on its own loopback address; each template renders the shipped "
        "`templates/nginx.ctmpl` (secret path written in) into the file nginx reads, and "
        "its `exec` SIGHUPs that nginx.",
        "certlocker: `POST /v1/replacements {\"all\": true}` (202), then "
        "`GET /v1/replacements/<id>?items=false` every 1 s until `counts.verified` = N "
        "(a certificate is `verified` when certlocker's own TLS check saw every node serve "
        "the new certificate). Afterwards every certificate was checked again through "
        "`GET /v1/certificates/<id>`: new fingerprint current, every target `ok` with "
        "`served_sha256` equal to it.",
        f"Time to the last certificate reaching each step, since the POST: {crit}. "
        f"Steps missing from the logs: {r['phase_missing'] or 'none'}.",
        f"Reloads: reload.sh ran {r['reload_invocations']} times for {n} renders "
        f"({r['agents']} agents).",
        f"Vault requests per certificate by kind (top 8): {top}. Not counted: the "
        f"agents' own reads (each re-reads each secret every {r['render_interval_s']} s, "
        f"{n / r['render_interval_s']:.0f} reads/s across the fleet, drill or not).",
        f"peer: certbot ({cb['version']}, {cb['binary']}) against a second Pebble; "
        f"{len(cb['times'])} lineages obtained first (untimed), then each "
        "`certbot renew --force-renewal --cert-name X --deploy-hook 'kill -HUP <nginx>' "
        "--no-random-sleep-on-renew --standalone` one after another (as a team's script "
        f"would), per lineage mean {cb['mean']:.2f} s (min {min(cb['times']):.2f}, max "
        f"{max(cb['times']):.2f}); extrapolated linearly to {n}. No check that nginx "
        "serves the renewed certificate is counted for certbot.",
        f"Machine: {r['machine']}; load average before {r['load_before']}, at the drill's "
        f"start {r['load_at_start']}, at its end {r['load_at_end']} (other agents share "
        "the 2 cores).",
    ]
    return table(f"The drill: {n} certificates replaced at once (nginx + bao agent)",
                 rows, notes)


def _limit_rows(r: dict[str, Any]) -> list[Row]:
    """With ``--limit``: the ETA the 202 gave against the finish, and the most orders
    Pebble saw in any window against the limit."""
    if not r.get("limit"):
        return []
    orders, window = r["limit"]
    eta, total = r.get("eta_at_start_s"), r["total_s"]
    seen = r["orders"]
    error = abs(total - eta) / eta if eta else None
    return [
        Row(f"finish against the ETA in the 202 answer (limit {orders} orders per "
            f"{window} s, margin {LIMIT_MARGIN} s, below the load)", secs(total),
            secs(eta) if eta else "none",
            f"{error:+.1%}".replace("+", "±") if error is not None else "—",
            f"within {TARGET_ETA_ERROR:.0%}", met(error is not None
                                                  and error <= TARGET_ETA_ERROR)),
        Row(f"most new orders Pebble logged in any {window} s (setup and drill, "
            f"{seen['orders']} in all)", str(seen["most_in_window"]), "—", "—",
            f"≤ {orders}", met(seen["most_in_window"] <= orders)),
    ]


def _write_json(result: dict[str, Any]) -> None:
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"drill-{result['count']}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    _progress(f"written: {path.relative_to(BENCH.parent)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_drill", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--per-service", type=int, default=PER_SERVICE)
    parser.add_argument("--certbot-sample", type=int, default=CERTBOT_SAMPLE)
    parser.add_argument("--limit", type=limit_arg, default=None, metavar="ORDERS/SECONDS",
                        help="rate limit the issuer below the load, e.g. 40/60")
    args = parser.parse_args(argv)
    print(run(args.count, args.per_service, args.certbot_sample, args.limit))
    return 0


if __name__ == "__main__":
    if shutil.which(NGINX) is None:
        sys.exit("nginx is needed")
    sys.exit(main())
