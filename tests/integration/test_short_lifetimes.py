"""Short lifetimes against a real OpenBao PKI (issue 19): a role that issues 6-day
certificates (ttl = max_ttl = 144h), certlocker's API and its reconciler process.

- A 6-day certificate is issued with a 144 h lifetime, its renewal is planned at two
  thirds of it (the due hint is filed in Vault at that minute), and the reconciler, having
  swept the inventory twice since, has not renewed it.
- The administrator's windows per team (``specs/_system/maintenance-windows``) hold a
  certificate that names none of its own.
- ACME profiles, honestly: Debian's Pebble 2.4 predates profiles (Pebble 2.7 added
  them), so its directory advertises none; a spec that asks for ``shortlived`` still
  gets its certificate, the order going out without the field.
  That the field is sent to a CA that does advertise it is a unit test against an
  in-memory CA (tests/unit/test_acme_requests.py).
- A maintenance window that excludes now holds an operator's renewal with the reason
  ``outside-maintenance-window`` (the hint moves to the window's start); a window whose
  next opening would leave too little validity is overridden and the renewal issued.

No clock is faked here: the assertions are about what is planned, not about time passing
(the arithmetic over days is in the unit tests, tests/unit/test_short_lifetimes.py).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any, Iterator

import hvac
import pytest

import devstack
from certlocker.clock import parse_rfc3339
from tests.integration.test_vault_pki import INT_MOUNT, ROLE, PkiStack, _setup_pki
from tests.support.stack import SHARED_PEBBLE_ENV

pytestmark = pytest.mark.integration

LIFETIME = dt.timedelta(hours=144)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Short(PkiStack):
    """The PKI stack's API and root client, with this module's steps."""

    def declare(self, name: str, **fields: Any) -> dict[str, Any]:
        status, body = self.api("POST", "/v1/certificates?wait=60", {
            "environment": "dev", "service": "short", "name": name,
            "dns_names": [f"{name}.internal.test"], "issuer": "internal", **fields})
        assert status == 201 and body["status"] == "valid", body
        return body

    def hinted(self, cert_id: str, at: dt.datetime) -> bool:
        """Is a due hint for ``cert_id`` filed at ``at``'s minute (system/schedule)?"""
        folder = f"system/schedule/{at:%Y%m%d}/{at:%H%M}"
        try:
            keys = self.root.secrets.kv.v2.list_secrets(
                folder, mount_point="certlocker")["data"]["keys"]
        except hvac.exceptions.InvalidPath:
            return False
        return cert_id in keys

    def last_sweeps(self) -> list[dt.datetime]:
        try:
            names = self.root.secrets.kv.v2.list_secrets(
                "system/reconcilers", mount_point="certlocker")["data"]["keys"]
        except hvac.exceptions.InvalidPath:
            return []
        out = []
        for name in names:
            doc = json.loads(self.root.secrets.kv.v2.read_secret_version(
                f"system/reconcilers/{name}", mount_point="certlocker",
                raise_on_deleted_version=True)["data"]["data"]["json"])
            if doc.get("last_sweep_at"):
                out.append(parse_rfc3339(doc["last_sweep_at"]))
        return out


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Short]:
    ports = devstack.free_ports()
    stack = devstack.Stack(tmp_path_factory.mktemp("short-stack"), ports,
                           pebble_env=SHARED_PEBBLE_ENV, extra_env={
                               "CERTLOCKER_ISSUERS__INTERNAL__TYPE": "vault-pki",
                               "CERTLOCKER_ISSUERS__INTERNAL__PKI_MOUNT": INT_MOUNT,
                               "CERTLOCKER_ISSUERS__INTERNAL__PKI_ROLE": ROLE,
                               # sweep often, so the test sees the reconciler look
                               "CERTLOCKER_RECONCILE_SWEEP_SECONDS": "2",
                               "CERTLOCKER_RECONCILE_INTERVAL_SECONDS": "1",
                           })
    stack.up()
    try:
        assert stack.root_token is not None
        client = hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10)
        _setup_pki(client, stack.vault_addr, f"127.0.0.1:{ports['dns']}")
        # The 6-day role: what Let's Encrypt's "shortlived" profile issues, from a CA we run.
        client.write_data(f"{INT_MOUNT}/roles/{ROLE}", data={
            "allowed_domains": ["internal.test"], "allow_subdomains": True,
            "allow_bare_domains": False, "allow_localhost": False, "allow_ip_sans": False,
            "key_type": "any", "ttl": "144h", "max_ttl": "144h"})
        # The administrator's windows per team: every "team-*" service of dev rotates
        # only on the day before yesterday (so not now, and, for 6-day certificates, at
        # a next opening 5 days off that still leaves over a day: held, not overridden).
        # Written before any spec is read, so no process has cached an older document.
        client.secrets.kv.v2.create_or_update_secret(
            "specs/_system/maintenance-windows", mount_point="certlocker",
            secret={"windows": {"dev/team-*": _weekly(2)}})
        yield Short(stack)
    finally:
        stack.down()


def _weekly(days_ago: int) -> dict[str, Any]:
    day = DAYS[(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_ago)).weekday()]
    return {"days": [day], "start": "00:00", "end": "00:01", "timezone": "UTC"}


def _seconds(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)


def test_a_6_day_certificate_is_planned_at_two_thirds_and_not_renewed_before(
        short: Short) -> None:
    body = short.declare("six")
    issued_at = dt.datetime.now(dt.timezone.utc)
    current = body["current"]
    not_before, not_after = (parse_rfc3339(current["not_before"]),
                             parse_rfc3339(current["not_after"]))
    lifetime = not_after - not_before
    # OpenBao backdates not_before by 30 s (not_before_duration) against clock skew
    assert LIFETIME <= lifetime <= LIFETIME + dt.timedelta(minutes=2), lifetime
    planned = parse_rfc3339(body["next_renewal"]["at"])
    assert planned == _seconds(not_after - lifetime / 3)
    assert abs(planned - (not_before + LIFETIME * 2 / 3)) < dt.timedelta(minutes=1)
    assert body["next_renewal"]["reason"] == "up-to-date"
    assert short.hinted(body["id"], planned), "the due hint is filed at the renewal time"

    # Two sweeps that finished after the issuance: the second started after it.
    first = devstack.wait_until(
        lambda: next((s for s in short.last_sweeps() if s > issued_at), None), timeout=60)
    devstack.wait_until(lambda: any(s > first for s in short.last_sweeps()), timeout=60)
    status, again = short.api("GET", f"/v1/certificates/{body['id']}")
    assert status == 200
    assert again["current"]["serial"] == current["serial"]
    assert again["current"]["vault_version"] == current["vault_version"]
    assert again["attempts"] == 0 and again["next_renewal"]["reason"] == "up-to-date"
    assert short.hinted(body["id"], planned)


def test_a_window_that_excludes_now_holds_a_renewal_with_the_reason(short: Short) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    opens = (now + dt.timedelta(hours=12)).replace(second=0, microsecond=0)
    window = {"start": f"{opens:%H:%M}", "end": f"{opens + dt.timedelta(hours=1):%H:%M}",
              "timezone": "UTC"}
    body = short.declare("held", maintenance_window=window)  # a first issuance: never held
    status, renewed = short.api("POST", f"/v1/certificates/{body['id']}/renew?wait=5")
    assert status == 202, renewed
    status, shown = short.api("GET", f"/v1/certificates/{body['id']}")
    assert shown["current"]["serial"] == body["current"]["serial"]
    assert shown["renewal_request"] is not None
    assert shown["next_renewal"]["reason"] == "outside-maintenance-window"
    assert parse_rfc3339(shown["next_renewal"]["at"]) == opens
    assert "held for its maintenance window" in shown["next_renewal"]["why"]
    # The reconciler took the renewal's hint at now and filed the next at the opening.
    devstack.wait_until(lambda: short.hinted(body["id"], opens), timeout=30)
    status, later = short.api("GET", f"/v1/certificates/{body['id']}")
    assert later["current"]["serial"] == body["current"]["serial"]


def test_a_window_too_far_off_is_overridden_near_expiry(short: Short) -> None:
    """A weekly window that opened yesterday: its next opening is after most of the
    6-day certificate's validity (under half the 48 h renewal slack would be left)."""
    body = short.declare("override", maintenance_window=_weekly(1))
    status, renewed = short.api("POST", f"/v1/certificates/{body['id']}/renew?wait=60")
    assert status == 200, renewed
    assert renewed["current"]["serial"] != body["current"]["serial"]
    assert renewed["renewal_request"] is None


def test_pebble_advertises_no_profiles_and_a_profile_asked_for_is_left_out(
        short: Short) -> None:
    code, raw = devstack.http_get(short.stack.directory_url,
                                  verify=str(short.stack.ca_bundle))
    assert code == 200
    directory = json.loads(raw)
    assert "newOrder" in directory
    assert "profiles" not in (directory.get("meta") or {}), \
        "this Pebble advertises profiles: test that certlocker sends them"
    status, body = short.api("POST", "/v1/certificates?wait=60", {
        "environment": "dev", "service": "short", "name": "profiled",
        "dns_names": ["profiled.short.test"], "issuer": "pebble", "profile": "shortlived"})
    assert status == 201 and body["status"] == "valid", body
    assert body["profile"] == "shortlived"


def test_a_profile_changed_in_the_spec_is_reissued_for(short: Short) -> None:
    """The profile asked for at issuance is recorded with the certificate, so a spec
    that asks for another one is a reason to reissue (``profile-changed``), as another
    key type or issuer is; the reissued certificate records the new one."""
    status, body = short.api("POST", "/v1/certificates?wait=60", {
        "environment": "dev", "service": "short", "name": "reprofiled",
        "dns_names": ["reprofiled.short.test"], "issuer": "pebble",
        "profile": "shortlived"})
    assert status == 201 and body["status"] == "valid", body
    first = body["current"]
    assert first["profile"] == "shortlived"
    assert body["next_renewal"]["reason"] == "up-to-date"

    status, body = short.api("PATCH", "/v1/certificates/dev.short.reprofiled",
                             {"profile": "classic"})
    assert status == 200, body
    deadline = time.monotonic() + 60
    while body["current"]["serial"] == first["serial"] and time.monotonic() < deadline:
        time.sleep(0.5)
        status, body = short.api("GET", "/v1/certificates/dev.short.reprofiled")
    assert body["current"]["serial"] != first["serial"], body
    assert body["current"]["profile"] == "classic"
    assert body["next_renewal"]["reason"] == "up-to-date"


def test_a_teams_window_from_the_administrators_document_holds_its_renewals(
        short: Short) -> None:
    status, body = short.api("POST", "/v1/certificates?wait=60", {
        "environment": "dev", "service": "team-a", "name": "web",
        "dns_names": ["web.internal.test"], "issuer": "internal"})
    assert status == 201 and body["status"] == "valid", body
    assert body["maintenance_window"] is None  # the spec names none: the team's applies
    status, _ = short.api("POST", f"/v1/certificates/{body['id']}/renew?wait=5")
    assert status == 202
    status, shown = short.api("GET", f"/v1/certificates/{body['id']}")
    assert shown["current"]["serial"] == body["current"]["serial"]
    assert shown["next_renewal"]["reason"] == "outside-maintenance-window"
    opens = parse_rfc3339(shown["next_renewal"]["at"])
    assert (opens.hour, opens.minute) == (0, 0)
    assert dt.timedelta(days=4) < opens - dt.datetime.now(dt.timezone.utc) \
        <= dt.timedelta(days=5)
