"""The reconciler as real `certlocker reconcile` processes over real OpenBao and Pebble.

A private stack (free ports) whose own reconciler is stopped, so each test decides when
a reconciler runs and with which settings. Specs are written straight into Vault with
the root token: a supported way to declare a certificate, which only the reconciler's
start-up sweep can find.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from certlocker.clock import parse_rfc3339
from tests.support.kv import grant_names, live_versions
from tests.support.stack import Stack, devstack, free_port, log_events

pytestmark = pytest.mark.integration

MOUNT = "certlocker"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("reconciler-stack"), devstack.free_ports(),
                  pebble_env={"PEBBLE_WFE_NONCEREJECT": "0"},
                  extra_env={"CERTLOCKER_METRICS_REFRESH_SECONDS": "2"})
    stack.up()
    try:
        for proc in stack.procs:
            if proc.name == "reconciler":
                proc.stop()  # the tests run their own, with their own settings
        yield stack
    finally:
        stack.down()


def root(stack: Stack) -> Any:
    import hvac

    return hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10)


def write_spec(stack: Stack, service: str, name: str, dns_names: list[str],
               issuer: str = "pebble", **extra: Any) -> None:
    grant_names(root(stack), MOUNT, "dev", service, dns_names)
    root(stack).secrets.kv.v2.create_or_update_secret(
        mount_point=MOUNT, path=f"specs/dev/{service}/{name}",
        secret={"environment": "dev", "service": service, "name": name,
                "dns_names": dns_names, "issuer": issuer, "key_type": "ec-p256", **extra})


def status(stack: Stack, service: str, name: str) -> dict[str, Any]:
    return root(stack).secrets.kv.v2.read_secret_version(
        mount_point=MOUNT, path=f"status/dev/{service}/{name}",
        raise_on_deleted_version=True)["data"]["data"]


def cert_versions(stack: Stack, service: str, name: str) -> int:
    return live_versions(root(stack), MOUNT, f"certs/dev/{service}/{name}")


def reconcile(stack: Stack, *args: str, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([devstack.certlocker_binary(), "reconcile", *args],
                            env={**stack.service_env(), **(env or {})}, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def spawn(stack: Stack, name: str, *args: str) -> devstack.Proc:
    return devstack.Proc.spawn(name, [devstack.certlocker_binary(), "reconcile", *args],
                               stack.state_dir / f"{name}.log", env=stack.service_env(),
                               marker="reconcile")


def pebble_issued(stack: Stack) -> int:
    log = (stack.state_dir / "pebble.log").read_text()
    return log.count("Issued certificate serial")


# -- renewal ------------------------------------------------------------------------------

def test_renews_due_certificates_and_leaves_the_others_alone(stack: Stack) -> None:
    write_spec(stack, "renew", "due", ["due.renew.test"])
    write_spec(stack, "renew", "calm", ["calm.renew.test"])
    reconcile(stack, "--once")
    assert (cert_versions(stack, "renew", "due"), cert_versions(stack, "renew", "calm")) == (1, 1)
    current = status(stack, "renew", "due")["current"]
    assert current["issuer_name"] == "pebble" and current["key_type"] == "ec-p256"
    not_before = parse_rfc3339(current["not_before"])
    lifetime = parse_rfc3339(current["not_after"]) - not_before
    # Renew when all but 10 s of the lifetime is left: due 10 s after issuance (Pebble's
    # certificates last years; this is the short-lifetime case without waiting years).
    write_spec(stack, "renew", "due", ["due.renew.test"],
               renew_before=f"{int(lifetime.total_seconds()) - 10}s")
    devstack.wait_until(lambda: dt.datetime.now(dt.timezone.utc)
                        > not_before + dt.timedelta(seconds=10), 60, what="renewal time")
    reconcile(stack, "--once")
    assert (cert_versions(stack, "renew", "due"), cert_versions(stack, "renew", "calm")) == (2, 1)
    renewed = status(stack, "renew", "due")
    assert renewed["current"]["serial"] != current["serial"]
    assert renewed["history"][0] == current["sha256_fingerprint"]
    # Back to the default window, or it stays due every 10 s and the stack's own
    # reconciler keeps renewing it while later tests count Pebble's issuances.
    write_spec(stack, "renew", "due", ["due.renew.test"])


# -- replicas -----------------------------------------------------------------------------

def test_two_replicas_issue_each_of_200_certificates_exactly_once(stack: Stack) -> None:
    before = pebble_issued(stack)
    for i in range(200):
        write_spec(stack, "replicas", f"c{i}", [f"c{i}.replicas.test"])
    procs = [spawn(stack, f"replica-{n}", "--once") for n in (1, 2)]
    try:
        for proc in procs:
            assert proc.popen is not None
            assert proc.popen.wait(timeout=600) == 0, proc.log_tail()
    finally:
        for proc in procs:
            proc.stop()
    versions = [cert_versions(stack, "replicas", f"c{i}") for i in range(200)]
    assert versions == [1] * 200
    assert pebble_issued(stack) - before == 200
    logs = [json.loads(line) for proc in procs
            for line in proc.log_path.read_text().splitlines() if line.startswith("{")]
    issued_by = [e["certificate"] for e in logs if e["event"] == "certificate.issued"]
    assert sorted(issued_by) == sorted(f"dev.replicas.c{i}" for i in range(200))


# -- alerts -------------------------------------------------------------------------------

class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((dict(self.headers), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[dict[str, str], Any]]]]:
    received: list[tuple[dict[str, str], Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Any]]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    messages: list[Any] = []

    class Keep(Message):
        def handle_message(self, message: Any) -> None:
            messages.append(message)

    port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, messages
    finally:
        controller.stop()


def test_a_failing_certificate_alerts_once_by_webhook_and_email(stack: Stack, webhook: Any,
                                                                smtp: Any) -> None:
    url, hooks = webhook
    smtp_port, mails = smtp
    closed = free_port()  # nothing listens here: every issuance fails to reach the CA
    env = {"CERTLOCKER_ISSUERS__BROKEN__DIRECTORY_URL": f"https://127.0.0.1:{closed}/dir",
           "CERTLOCKER_ALERT_MAX_ATTEMPTS": "2",
           "CERTLOCKER_ALERT_WEBHOOK_URL": url,
           "CERTLOCKER_ALERT_WEBHOOK_TOKEN": "hook-secret-123",
           "CERTLOCKER_SMTP_HOST": "127.0.0.1", "CERTLOCKER_SMTP_PORT": str(smtp_port),
           "CERTLOCKER_SMTP_FROM": "certlocker@example.test",
           "CERTLOCKER_SMTP_TO": "oncall@example.test"}
    write_spec(stack, "alerts", "broken", ["broken.alerts.test"], issuer="broken")
    outputs = []
    for attempt in range(4):
        outputs.append(reconcile(stack, "--once", env=env).stderr)
        st = status(stack, "alerts", "broken")
        assert st["attempts"] == attempt + 1 and st["state"] == "failed"
        # Let the backoff pass, as time would: the next run retries at once.
        st["next_attempt_at"] = None
        root(stack).secrets.kv.v2.create_or_update_secret(
            mount_point=MOUNT, path="status/dev/alerts/broken", secret=st)
    assert len(hooks) == 1 and len(mails) == 1
    headers, payload = hooks[0]
    assert payload["certificate"] == "dev.alerts.broken"
    assert payload["kind"] == "retries-exhausted" and payload["attempts"] == 2
    assert headers["Authorization"] == "Bearer hook-secret-123"
    assert mails[0]["To"] == "oncall@example.test"
    assert "dev.alerts.broken" in mails[0]["Subject"]
    assert status(stack, "alerts", "broken")["alerted"] == "retries-exhausted"
    assert not any("hook-secret-123" in out or url in out for out in outputs)
    # Each delivery is in the audit trail: who was told, on which channel; no secret.
    events = requests.get(f"{stack.api_url}/v1/audit", timeout=30,
                          headers={"X-Vault-Token": stack.operator_token or ""},
                          params={"action": "alert.deliver",
                                  "certificate": "dev.alerts.broken"}).json()["items"]
    assert sorted((e["actor"], e["outcome"], e["details"]["channel"], e["details"]["kind"])
                  for e in events) == [("reconciler", "success", "email", "retries-exhausted"),
                                       ("reconciler", "success", "webhook", "retries-exhausted")]
    assert "hook-secret-123" not in json.dumps(events) and url not in json.dumps(events)


def test_slack_payload_and_sigterm(stack: Stack, webhook: Any) -> None:
    url, hooks = webhook
    closed = free_port()
    write_spec(stack, "alerts", "slack", ["slack.alerts.test"], issuer="broken")
    env = {"CERTLOCKER_ISSUERS__BROKEN__DIRECTORY_URL": f"https://127.0.0.1:{closed}/dir",
           "CERTLOCKER_ALERT_MAX_ATTEMPTS": "1", "CERTLOCKER_ALERT_WEBHOOK_URL": url,
           "CERTLOCKER_ALERT_WEBHOOK_SLACK": "true"}
    proc = devstack.Proc.spawn("slack-reconciler",
                               [devstack.certlocker_binary(), "reconcile", "--interval", "1"],
                               stack.state_dir / "slack-reconciler.log",
                               env={**stack.service_env(), **env}, marker="reconcile")
    try:
        devstack.wait_until(lambda: hooks, 120, what="the slack alert")
    finally:
        proc.stop()
    assert proc.popen is not None and proc.popen.returncode == 0, proc.log_tail()
    assert set(hooks[0][1]) == {"text"} and "dev.alerts.slack" in hooks[0][1]["text"]
    events = [json.loads(line)["event"] for line in Path(proc.log_path).read_text().splitlines()
              if line.startswith("{")]
    assert "reconcile.stopping" in events and events[-1] == "reconcile.stopped"


def test_the_reconcilers_failures_reach_the_apis_metrics(stack: Stack) -> None:
    """The reconciler serves no /metrics; its failure counts travel in its heartbeat
    record in Vault, which the API's /metrics exports per reconciler process."""
    from prometheus_client.parser import text_string_to_metric_families

    from certlocker.lifecycle.records.heartbeat import process_name

    closed = free_port()
    write_spec(stack, "metrics", "broken", ["broken.metrics.test"], issuer="broken")
    proc = devstack.Proc.spawn(
        "failing-reconciler", [devstack.certlocker_binary(), "reconcile", "--once"],
        stack.state_dir / "failing-reconciler.log", marker="reconcile",
        env={**stack.service_env(),
             "CERTLOCKER_ISSUERS__BROKEN__DIRECTORY_URL": f"https://127.0.0.1:{closed}/dir"})
    try:
        assert proc.popen is not None and proc.popen.wait(timeout=300) == 0, proc.log_tail()
        name = f"{process_name().rsplit('-', 1)[0]}-{proc.popen.pid}"
    finally:
        proc.stop()
    assert status(stack, "metrics", "broken")["attempts"] == 1

    def issuance_failures() -> float | None:
        text = requests.get(f"{stack.api_url}/metrics", timeout=30, headers={
            "Authorization": f"Bearer {stack.metrics_token}"}).text
        return next((s.value for f in text_string_to_metric_families(text)
                     for s in f.samples if s.name == "certlocker_reconciler_failures_total"
                     and s.labels == {"reconciler": name, "kind": "issuance"}), None)

    # at least ours (the once-run also retries what earlier tests left failing)
    assert devstack.wait_until(issuance_failures, 60, what="the reconciler's failures") >= 1


# -- its own Vault token --------------------------------------------------------------------

def test_keeps_its_own_periodic_token_alive_past_many_periods(stack: Stack) -> None:
    """A token of an 8 s period, as bootstrap makes certlocker's (24 h) but shorter: it
    lapses after 8 s unless renewed. The reconciler keeps it alive and keeps working."""
    period = 8
    token = root(stack).auth.token.create_orphan(
        policies=["certlocker"], no_default_policy=True, period=f"{period}s",
        renewable=True, display_name="short-period")["auth"]["client_token"]
    token_file = stack.state_dir / "short-period.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    proc = devstack.Proc.spawn(
        "token-reconciler", [devstack.certlocker_binary(), "reconcile", "--interval", "1",
                             "--sweep-interval", "2"],  # finds a spec written into Vault
        stack.state_dir / "token-reconciler.log", marker="reconcile",
        env={**stack.service_env(), "CERTLOCKER_VAULT_TOKEN_FILE": str(token_file)})
    try:
        devstack.wait_until(lambda: len(log_events(proc, "vault.token_renewed")) >= 3,
                            6 * period, interval=0.5, what="three renewals")
        # Three periods on, the token still works: a spec written now gets issued.
        write_spec(stack, "token", "later", ["later.token.test"])
        devstack.wait_until(lambda: cert_versions(stack, "token", "later") == 1, 120,
                            interval=0.5, what="a certificate issued with the kept token")
        assert proc.alive(), proc.log_tail()
    finally:
        proc.stop()
    life = root(stack).auth.token.lookup(token)["data"]
    assert 0 < life["ttl"] <= period and life["policies"] == ["certlocker"]
    renewals = log_events(proc, "vault.token_renewed")
    assert all(0 < r["ttl"] <= period and r["ttl_before"] <= period / 2 for r in renewals)
    text = proc.log_path.read_text()
    assert token not in text
    assert not [e for e in log_events(proc)
                if e["event"] in ("reconcile.tick_failed", "reconcile.vault_unavailable",
                                  "vault.token_renew_failed", "vault.token_expiring")]

