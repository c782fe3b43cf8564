"""Structured logging: one JSON line per event, never a secret.

Events are logged as ``log.info("certificate.issued", extra={...})``. The redaction
filter is a last line of defence: a record that carries PEM private key material or a
token-looking field anywhere is replaced, not printed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SECRET_MARKERS = ("PRIVATE KEY", "eyJ")  # PEM keys; JWTs (base64url of '{"')
_SECRET_FIELDS = {"private_key", "token", "password", "hmac_key", "vault_token", "jwt"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        fields = _fields(record)
        leaked = any(m in text for m in _SECRET_MARKERS) or any(
            k in _SECRET_FIELDS or any(m in str(v) for m in _SECRET_MARKERS)
            for k, v in fields.items())
        if leaked:
            record.msg, record.args = "log.redacted", ()
            for key in fields:
                delattr(record, key)
            record.exc_info = record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update({k: v for k, v in _fields(record).items()})
        if record.exc_info:
            out["error"] = f"{record.exc_info[0].__name__}" if record.exc_info[0] else None
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{record.levelname.lower():7} {record.getMessage()} {extra}".rstrip()


def configure(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # acme logs JWS payloads and full responses at DEBUG; hvac/urllib3 log URLs.
    for noisy in ("acme", "urllib3", "hvac", "josepy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
