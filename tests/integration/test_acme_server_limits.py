"""certlocker's ACME server under its issuer's rate limits, end to end: the dev stack
(OpenBao, Pebble, the API under gunicorn, the reconciler) with "1 new order per 30 s"
on the Pebble issuer, and certbot's ``acme`` library as the client.

The second order of a client inside the window is not failed: certlocker schedules its
issuance for the window's next slot, the order stays ``processing``, and the client is
told to come back then (``Retry-After`` in seconds until the slot), not every 2 s. When
the slot comes, the order turns valid with its certificate.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Iterator

import hvac
import pytest
from acme import client as acme_client, messages

import devstack
from tests.support import acme_direct as ad
from tests.support.kv import grant_names
from tests.support.stack import SHARED_PEBBLE_ENV

pytestmark = pytest.mark.integration

ENV = "prod"
WINDOW = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    limits = "CERTLOCKER_ISSUERS__PEBBLE__LIMITS__"
    stack = devstack.Stack(tmp_path_factory.mktemp("acme-limits"), devstack.free_ports(),
                           pebble_env=SHARED_PEBBLE_ENV, extra_env={
                               f"{limits}ORDERS_PER_WINDOW": "1",
                               f"{limits}ORDER_WINDOW_SECONDS": str(WINDOW),
                               f"{limits}MAX_WAIT_SECONDS": "0",  # scheduled, not waited for
                               "CERTLOCKER_ACME_SERVER_FINALIZE_WAIT_SECONDS": "5",
                           })
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


def finalize(acme: acme_client.ClientV2, names: list[str]) -> messages.OrderResource:
    return acme.begin_finalization(ad.new_order(acme, names)[0])


def test_an_order_behind_the_rate_limit_is_told_when_to_come_back(
        stack: devstack.Stack) -> None:
    assert stack.root_token and stack.operator_token
    names = ["one.limits.test", "two.limits.test"]
    grant_names(hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10),
                "certlocker", ENV, "tide", names)
    acme = ad.client(f"{stack.api_url}/acme/{ENV}/directory")
    ad.register(acme, ad.binding(stack.api_url, stack.operator_token, ENV, "tide"))

    first = finalize(acme, names[:1])  # the window's one order
    deadline = dt.datetime.now() + dt.timedelta(seconds=60)
    assert acme.poll_finalization(first, deadline).fullchain_pem

    second = finalize(acme, names[1:])
    polled = acme.net.post(second.uri, None, new_nonce_url=acme.directory["newNonce"])
    assert polled.json()["status"] == "processing", polled.text
    wait = int(polled.headers["Retry-After"])
    assert 2 < wait <= WINDOW + 5, "until the slot, not a 2-second poll"

    time.sleep(wait)
    done = acme.poll_finalization(second, dt.datetime.now() + dt.timedelta(seconds=60))
    assert done.fullchain_pem
