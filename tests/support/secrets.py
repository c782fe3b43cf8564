"""Finding credentials in text a test collected (logs, API answers)."""

from __future__ import annotations

import re

# A JWS compact serialization: header and payload are base64url JSON objects, so both
# start with "eyJ" ('{"'), joined by a dot. A bare "eyJ" also occurs by chance inside
# random base64url strings, such as ACME challenge tokens in a CA's log.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.")


def jwts_in(text: str) -> list[str]:
    """The JWT-shaped strings in ``text`` (header and payload only, never the signature)."""
    return _JWT.findall(text)
