"""Alert delivery: a JSON webhook (or a Slack-compatible ``{"text": ...}``) and email.

Secrets (the SMTP password, a webhook bearer token) come from Vault
(``system/alerting``: ``smtp_password``, ``webhook_token``) or, failing that, from the
settings (``CERTLOCKER_SMTP_PASSWORD``, ``CERTLOCKER_ALERT_WEBHOOK_TOKEN``). Neither they
nor the webhook URL (Slack's carry a token) are ever logged, audited or put in an error.

Every delivery on every channel is an audit event ``alert.deliver`` (subject: the
certificate; outcome success or failure; details: channel and alert kind; the reason of a
failure is the channel's own error text, which names no URL and no secret), so the trail
shows who was told what, and when telling failed.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any, Protocol, Sequence

import requests

from ..audit.recorder import Auditor, NoAudit, audited
from ..errors import AlertDeliveryFailed, CertlockerError
from ..models import Alert
from ..settings import Settings
from ..transport.failures import failure_reason

log = logging.getLogger(__name__)


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None:
        """:raises AlertDeliveryFailed: when the receiver does not accept the alert."""
        ...


class Webhook:
    name = "webhook"

    def __init__(self, url: str, *, slack: bool = False, token: str | None = None,
                 timeout: float = 10.0) -> None:
        self._url = url
        self._slack = slack
        self._token = token
        self._timeout = timeout

    def payload(self, alert: Alert) -> dict[str, Any]:
        return {"text": alert.summary} if self._slack else alert.to_json()

    def send(self, alert: Alert) -> None:
        headers = {"User-Agent": "certlocker-alerts/0.1"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            resp = requests.post(self._url, json=self.payload(alert), headers=headers,
                                 timeout=self._timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise AlertDeliveryFailed(f"webhook unreachable ({failure_reason(exc)})",
                                      (self.name,)) from None
        if not 200 <= resp.status_code < 300:
            raise AlertDeliveryFailed(f"webhook answered HTTP {resp.status_code}", (self.name,))


class Email:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, recipients: Sequence[str], *,
                 username: str | None = None, password: str | None = None,
                 starttls: bool = False, timeout: float = 10.0) -> None:
        self._host, self._port = host, port
        self._sender, self._recipients = sender, tuple(recipients)
        self._username, self._password = username, password
        self._starttls = starttls
        self._timeout = timeout

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._sender
        msg["To"] = ", ".join(self._recipients)
        msg["Subject"] = f"[certlocker] {alert.kind}: {alert.certificate}"
        lines = [alert.summary, ""]
        lines += [f"{k}: {v}" for k, v in alert.to_json().items() if k != "summary"]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def send(self, alert: Alert) -> None:
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username and self._password:
                    smtp.login(self._username, self._password)
                smtp.send_message(self.message(alert))
        except (OSError, smtplib.SMTPException) as exc:
            raise AlertDeliveryFailed(f"SMTP delivery failed ({type(exc).__name__})",
                                      (self.name,)) from None


class Notifier:
    """Sends an alert on every configured channel, auditing each delivery as ``actor``."""

    def __init__(self, channels: Sequence[Channel], *, audit: Auditor | None = None,
                 actor: str = "certlocker") -> None:
        self.channels = tuple(channels)
        self._audit = audit or NoAudit()
        self._actor = actor

    def send(self, alert: Alert) -> None:
        """Deliver on every channel; a channel that fails is logged.

        :raises AlertDeliveryFailed: when no channel accepted it (so the caller retries;
            a partial success is not retried, or the working channel would get it twice).
        """
        failed = []
        for channel in self.channels:
            details = {"channel": channel.name, "kind": alert.kind}
            try:
                channel.send(alert)
            except AlertDeliveryFailed as exc:
                failed.append(channel.name)
                log.warning("alert.channel_failed", extra={
                    "channel": channel.name, "certificate": alert.certificate,
                    "error": exc.detail})
                audited(self._audit, self._actor, "alert.deliver", alert.certificate,
                        "failure", reason=exc.detail, details=details)
            else:
                audited(self._audit, self._actor, "alert.deliver", alert.certificate,
                        "success", details=details)
        if self.channels and len(failed) == len(self.channels):
            raise AlertDeliveryFailed("no alert channel accepted the alert", tuple(failed))


def from_settings(settings: Settings, secrets: dict[str, Any] | None = None, *,
                  audit: Auditor | None = None, actor: str = "certlocker") -> Notifier:
    """Channels from settings; ``secrets`` is the ``system/alerting`` document (or None);
    deliveries are audited on ``audit`` as ``actor``."""
    secrets = secrets or {}
    channels: list[Channel] = []
    if settings.alert_webhook_url:
        channels.append(Webhook(settings.alert_webhook_url, slack=settings.alert_webhook_slack,
                                token=secrets.get("webhook_token")
                                or settings.alert_webhook_token))
    if settings.smtp_host and settings.smtp_from and settings.smtp_to:
        channels.append(Email(settings.smtp_host, settings.smtp_port, settings.smtp_from,
                              settings.smtp_to, username=settings.smtp_username,
                              password=secrets.get("smtp_password") or settings.smtp_password,
                              starttls=settings.smtp_starttls))
    return Notifier(channels, audit=audit, actor=actor)


def load_secrets(read_json: Any, path: str) -> dict[str, Any]:
    """The alerting secrets document, or {} when absent or unreadable (logged)."""
    try:
        doc, _ = read_json(path)
    except CertlockerError as exc:
        log.warning("alert.secrets_unreadable", extra={"error": type(exc).__name__})
        return {}
    return doc or {}
