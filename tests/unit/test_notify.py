"""Alert delivery is audited: one ``alert.deliver`` event per channel and alert, sent or
failed, naming the channel and never the webhook URL or its token. A real HTTP receiver
on loopback stands for the webhook; a closed loopback port for one that is down."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import threading
from typing import Iterator

import pytest

from certlocker.audit.chain import AuditLog
from certlocker.audit.memory import MemoryAuditStore
from certlocker.clock import FixedClock
from certlocker.errors import AlertDeliveryFailed
from certlocker.lifecycle.policy.alerts import RETRIES_EXHAUSTED, Alert
from certlocker.notify import Notifier, Webhook

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
ALERT = Alert(certificate="prod.web.www", kind=RETRIES_EXHAUSTED, summary="failed 5 times",
              attempts=5, last_error="cannot reach the CA", not_after=None,
              next_attempt_at=None, at=NOW)


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook?token=url-secret"
    finally:
        server.shutdown()
        server.server_close()


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hook?token=url-secret"


def test_every_delivery_is_audited_sent_or_failed(receiver: str) -> None:
    store = MemoryAuditStore()
    audit = AuditLog([store], FixedClock(NOW))
    up = Webhook(receiver, token="bearer-secret")
    down = Webhook(closed_url(), token="bearer-secret")
    down.name = "webhook-backup"
    Notifier([up, down], audit=audit, actor="reconciler").send(ALERT)

    events = [store.events[seq] for seq in sorted(store.events)]
    assert [(e.actor, e.action, e.subject, e.outcome, e.details) for e in events] == [
        ("reconciler", "alert.deliver", "prod.web.www", "success",
         {"channel": "webhook", "kind": RETRIES_EXHAUSTED}),
        ("reconciler", "alert.deliver", "prod.web.www", "failure",
         {"channel": "webhook-backup", "kind": RETRIES_EXHAUSTED})]
    assert events[1].reason == "webhook unreachable (connection refused)"
    stored = json.dumps([e.to_json() for e in events])
    assert "secret" not in stored and "127.0.0.1" not in stored


def test_a_delivery_no_channel_accepted_is_audited_and_raised() -> None:
    store = MemoryAuditStore()
    with pytest.raises(AlertDeliveryFailed):
        Notifier([Webhook(closed_url())], audit=AuditLog([store], FixedClock(NOW))).send(ALERT)
    [event] = store.events.values()
    assert (event.action, event.outcome) == ("alert.deliver", "failure")
