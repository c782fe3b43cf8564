"""Whether requests must read its environment (proxies, CA bundles, ~/.netrc).

Reading them costs a few percent of the CPU of every HTTP call, so the Vault and ACME
clients skip it unless one of these variables is set.
"""

from __future__ import annotations

import os

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")
REQUESTS_VARIABLES = PROXY_VARIABLES + ("NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE",
                                        "CURL_CA_BUNDLE", "NETRC")


def any_set(names: tuple[str, ...]) -> bool:
    return any(os.environ.get(name) for name in names)
