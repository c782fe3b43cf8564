"""Every private attribute of certbot's ``acme`` library that certlocker uses, in one place.

``acme`` offers no public way to do these things, and each is small enough that
copying it would mean tracking its fixes by hand. Each function names the attribute it
reaches for; ``tests/unit/test_acme_compat.py`` fails with that name when an upgrade
removes or changes one, and ``pyproject.toml`` keeps ``acme`` below its next major
version. The architecture test allows no private ``acme``/``josepy`` attribute
anywhere else.
"""

from __future__ import annotations

from typing import Any

import requests
from acme import messages
from acme.client import ClientNetwork, ClientV2

#: (owner, attribute) of every private attribute below: what the unit test checks first.
PRIVATE_ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (ClientNetwork, "_post_once"),
    (ClientV2, "_authzr_from_response"),
    (ClientV2, "_get_links"),
    (ClientNetwork, "_send_request"),
)


def missing() -> list[str]:
    """The private attributes this module relies on that the installed ``acme`` lacks,
    as ``module.Class.attribute``; empty when all are there."""
    return [f"{owner.__module__}.{owner.__qualname__}.{name}"
            for owner, name in PRIVATE_ATTRIBUTES if not callable(getattr(owner, name, None))]


def post_once(net: ClientNetwork, *args: Any, **kwargs: Any) -> requests.Response:
    """One signed POST with no retry: ``ClientNetwork._post_once``, with the arguments of
    ``ClientNetwork.post`` (the URL, the message, ``content_type``, ``new_nonce_url``).

    The public ``ClientNetwork.post`` retries a ``badNonce`` only once; certlocker's
    network retries it as often as RFC 8555 section 6.5 allows, around this call.

    :raises acme.messages.Error: the CA's problem document, ``badNonce`` included.
    """
    return net._post_once(*args, **kwargs)


def authorization(acme: ClientV2, response: requests.Response,
                  uri: str) -> messages.AuthorizationResource:
    """The authorization in a POST-as-GET's ``response`` for ``uri``:
    ``ClientV2._authzr_from_response``, the parsing ``ClientV2.poll`` does. certlocker
    fetches authorizations itself (a resumed order, an order made with ``replaces``),
    so it needs the same resource ``new_order`` would have built."""
    return acme._authzr_from_response(response, uri=uri)


def links(acme: ClientV2, response: requests.Response, relation: str) -> list[str]:
    """Every ``Link`` URL of ``relation`` in ``response``: ``ClientV2._get_links``.
    ``requests``' own ``response.links`` keeps one link per relation, and a CA may link
    several ``alternate`` chains (RFC 8555 section 7.4.2)."""
    return acme._get_links(response, relation)


def send_request(net: ClientNetwork, method: str, url: str, *args: Any,
                 **kwargs: Any) -> requests.Response:
    """``ClientNetwork._send_request``: the one method every HTTP request of the client
    goes through. certlocker's network overrides it to count requests by endpoint and
    status (the metrics a CA's rate limit shows in) and calls this for the sending."""
    response: requests.Response = ClientNetwork._send_request(net, method, url, *args,
                                                              **kwargs)
    return response
