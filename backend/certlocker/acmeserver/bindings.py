"""External Account Bindings (RFC 8555 section 7.3.4): how an ACME account is tied to
one service.

An operator allowed to mint the service's credentials creates a binding; the answer
carries ``eab_kid`` and ``eab_hmac_key`` once. The record
(``system/acme-server/bindings/<kid>``) names the environment, service, creator and the
service's credential generation; the HMAC key is derived from the server secret and the
kid, so no readable copy of it is stored anywhere. Revoking the service's credentials
moves its generation on: every binding and account made under the old one stops.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from typing import Any, cast

import josepy as jose
from acme import jws as acme_jws

from ..clock import parse_rfc3339, rfc3339
from ..ports import Store
from .jws import key_from_json, thumbprint
from .problems import AcmeProblem
from .secret import ServerSecret

MAC_ALGORITHMS = ("HS256", "HS384", "HS512")


@dataclasses.dataclass(frozen=True)
class Binding:
    kid: str
    environment: str
    service: str
    generation: int
    created_at: dt.datetime
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "environment": self.environment, "service": self.service,
                "generation": self.generation, "created_at": rfc3339(self.created_at),
                "created_by": self.created_by}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Binding":
        return cls(kid=data["kid"], environment=data["environment"],
                   service=data["service"], generation=int(data["generation"]),
                   created_at=parse_rfc3339(data["created_at"]),
                   created_by=data["created_by"])


class Bindings:
    def __init__(self, store: Store, secret: ServerSecret) -> None:
        self._store = store
        self._secret = secret

    def create(self, environment: str, service: str, generation: int, actor: str,
               now: dt.datetime) -> tuple[Binding, str]:
        """A new binding and its HMAC key (base64url), to be shown once."""
        kid = secrets.token_hex(16)
        # A key starting with "-" reads as an option to some CLIs (certbot's
        # --eab-hmac-key KEY): pick another kid, which derives another key.
        while jose.encode_b64jose(self._mac_key(kid)).startswith("-"):
            kid = secrets.token_hex(16)
        binding = Binding(kid, environment, service, generation, now, actor)
        self._store.write_json(self._store.paths.acme_binding(binding.kid),
                               binding.to_json(), cas=0)
        return binding, jose.encode_b64jose(self._mac_key(binding.kid))

    def verify(self, eab: Any, account_key: jose.JWK, url: str) -> Binding:
        """The binding an account's ``externalAccountBinding`` proves.

        :raises AcmeProblem: malformed, badSignatureAlgorithm, unauthorized."""
        if not isinstance(eab, dict) or not all(isinstance(eab.get(k), str) for k in
                                                ("protected", "payload", "signature")):
            raise AcmeProblem("malformed", "externalAccountBinding must be a flattened JWS")
        try:
            parsed = acme_jws.JWS.from_json(eab)
            header = cast(acme_jws.Header, parsed.signature.combined)
        except (jose.DeserializationError, TypeError, ValueError, KeyError):
            raise AcmeProblem("malformed", "externalAccountBinding does not parse") from None
        alg = header.alg.name if header.alg is not None else None
        if alg not in MAC_ALGORITHMS:
            raise AcmeProblem("badSignatureAlgorithm", "externalAccountBinding must be "
                              "signed with HS256, HS384 or HS512",
                              extra={"algorithms": list(MAC_ALGORITHMS)})
        kid = header.kid
        if not isinstance(kid, str) or len(kid) != 32 or not all(
                c in "0123456789abcdef" for c in kid):
            raise AcmeProblem("unauthorized", "unknown eab_kid")
        if header.url != url:
            raise AcmeProblem("unauthorized", "externalAccountBinding url must be the "
                                              "newAccount URL")
        if header.jwk is not None or header.nonce is not None:
            raise AcmeProblem("malformed", "externalAccountBinding carries no jwk or nonce")
        document, _ = self._store.read_json(self._store.paths.acme_binding(kid))
        if not document:
            raise AcmeProblem("unauthorized", "unknown eab_kid")
        try:
            good = parsed.verify(jose.JWKOct(key=self._mac_key(kid)))
        except (jose.Error, ValueError, TypeError):
            good = False
        if not good:
            raise AcmeProblem("unauthorized", "the externalAccountBinding MAC does not "
                                              "verify with this eab_kid's key")
        try:
            bound = thumbprint(key_from_json(json.loads(parsed.payload)))
        except (ValueError, AcmeProblem):
            bound = None
        if bound != thumbprint(account_key):
            raise AcmeProblem("unauthorized", "externalAccountBinding binds another key "
                                              "than the one signing this request")
        return Binding.from_json(document)

    def _mac_key(self, kid: str) -> bytes:
        return self._secret.key("eab:" + kid)
