"""Whether requests must read its environment (proxies, CA bundles, ~/.netrc).

Reading it costs a few percent of the CPU of every HTTP call, so the Vault and ACME
clients skip it unless a proxy is configured; the CA bundle variables are read once.
"""

from __future__ import annotations

import os

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # requests' order


def any_set(names: tuple[str, ...]) -> bool:
    return any(os.environ.get(name) for name in names)


def ca_bundle() -> str | None:
    """The CA bundle requests would take from the environment for ``verify=True``."""
    return next((os.environ[name] for name in CA_BUNDLE_VARIABLES if os.environ.get(name)),
                None)
