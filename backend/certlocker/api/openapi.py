"""GET /openapi.json: the OpenAPI 3.1 description of the HTTP API.

Built from Python dicts here, next to the code it describes; ``tests/unit/test_openapi``
checks that every Flask rule under /v1 is in it and that it is valid OpenAPI 3.1. The
certificate schema is the contract of DESIGN.md ("Contracts that tools outside the code
rely on"); every error is an RFC 9457 problem document.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from .. import __version__
from ..delivery.formats import FORMATS
from ..lifecycle.policy.inventory import DEFAULT_LIMIT, MAX_LIMIT
from ..models import KeyType, State
from ..ownership import grant_schema
from ..specs import PERMISSIVE, SpecRules, declaration_schema
from . import openapi_replacements
from .context import services

bp = Blueprint("openapi", __name__)

PROBLEM = "application/problem+json"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def _problems(*statuses: int) -> dict[str, Any]:
    """Error responses, each an RFC 9457 problem document."""
    return {str(s): {"$ref": f"#/components/responses/Problem{s}"} for s in statuses}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


CERT_ID = {"name": "cert_id", "in": "path", "required": True,
           "description": "`<environment>.<service>.<name>`",
           "schema": {"type": "string", "pattern": r"^[a-z0-9-]+\.[a-z0-9-]+\.[a-z0-9-]+$"}}
WAIT = {"name": "wait", "in": "query", "required": False,
        "description": "Seconds to wait for the issuance to finish (0 to 120); without "
                       "it the answer is 202 while issuance runs",
        "schema": {"type": "number", "minimum": 0, "maximum": 120}}
ENV = {"name": "env", "in": "path", "required": True, "schema": _ref("Environment")}
SERVICE = {"name": "service", "in": "path", "required": True, "schema": _ref("Name")}
SHA256 = {"name": "sha256", "in": "path", "required": True,
          "description": "SHA-256 fingerprint of the discovered leaf",
          "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}
GRANT_PATH: list[dict[str, Any]] = [{"name": "environment", "in": "path", "required": True,
               "schema": {"$ref": "#/components/schemas/Environment"}},
              {"name": "service", "in": "path", "required": True,
               "schema": {"$ref": "#/components/schemas/Name"}}]
OPERATOR: list[dict[str, list[str]]] = [{"vaultToken": []}, {"bearerVaultToken": []}]
SERVICE_CREDENTIAL: list[dict[str, list[str]]] = [{"serviceCredential": []}]


def _schemas(rules: SpecRules) -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "field": {"type": "string", "description": "the bad field (JSON pointer "
                                                           "style) or query parameter"},
                "reason": {"type": "string"},
                "acme_code": _nullable({"type": "string"}),
            },
        },
        "Name": {"type": "string", "pattern": r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
                 "description": "environment, service or certificate name"},
        "Environment": ({"type": "string", "enum": list(rules.environments),
                         "description": "an environment this deployment serves"}
                        if rules.environments else _ref("Name")),
        "DnsName": {"type": "string", "maxLength": 253,
                    "description": "a DNS name; IDNs are stored as A-labels; a wildcard "
                                   "only as the whole leftmost label"},
        "CertificateDeclaration": declaration_schema(rules),
        "Grant": grant_schema(),
        # The grant's fields and where it is: not allOf Grant, whose
        # additionalProperties false would refuse the added ones.
        "GrantAnswer": {
            "type": "object", "required": ["environment", "service", "version"],
            "properties": {**grant_schema()["properties"],
                           "environment": {"type": "string"},
                           "service": {"type": "string"},
                           "version": {"type": "integer",
                                       "description": "KV version; 0: no grant"},
                           "vault": {"type": "object"}}},
        "Current": {
            "type": "object",
            "required": ["serial", "not_before", "not_after", "sha256_fingerprint", "issuer"],
            "properties": {
                "serial": {"type": "string", "description": "hex"},
                "not_before": time,
                "not_after": time,
                "sha256_fingerprint": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "issuer": {"type": "string", "description": "issuer DN (RFC 4514)"},
                "vault_version": _nullable({"type": "integer"}),
                "issued_by": _nullable({"type": "string", "description":
                                        "the configured issuer that issued it"}),
                "fallback_for": _nullable({"type": "string", "description":
                                           "issued by a fallback standing in for this "
                                           "issuer (the spec's); it takes the certificate "
                                           "back at the next normal renewal"}),
                "fallback_reason": _nullable({"type": "string", "description":
                                              "why the fallback issued it"}),
                "profile": _nullable({"type": "string", "description":
                                      "the ACME profile the spec asked for when it was "
                                      "issued (\"\" for none); null for certificates "
                                      "issued before it was recorded"}),
            },
        },
        "TargetStatus": {
            "type": "object",
            "required": ["address", "status", "served_sha256", "checked_at"],
            "properties": {
                "address": {"type": "string"},
                "sni": _nullable({"type": "string"}),
                "ips": {"type": "array", "items": {"type": "string"}},
                "status": {"type": "string", "description": "ok | stale | mismatch | "
                           "expired | unreachable | chain-incomplete | forbidden "
                           "(outside the target allow-list: never contacted) | unknown | "
                           "unverified (the last result predates the current certificate)"},
                "served_sha256": _nullable({"type": "string"}),
                "checked_at": _nullable(time),
                "detail": _nullable({"type": "string", "description":
                                     "why: e.g. the serial served instead, the missing "
                                     "issuer, the connection error"}),
            },
        },
        "Certificate": {
            "type": "object",
            "description": "The contract of DESIGN.md: other tools rely on these names.",
            "required": ["id", "environment", "service", "name", "dns_names", "status",
                         "current", "vault", "targets"],
            "properties": {
                "id": {"type": "string"},
                "environment": _ref("Name"),
                "service": _ref("Name"),
                "name": _ref("Name"),
                "dns_names": {"type": "array", "items": {"type": "string"}},
                "issuer": {"type": "string"},
                "key_type": {"type": "string", "enum": [k.value for k in KeyType]},
                "renew_before": _nullable({"type": "string"}),
                "maintenance_window": _nullable({"type": "object", "description":
                                                 "when it may be rotated (the "
                                                 "declaration's maintenance_window)"}),
                "profile": _nullable({"type": "string", "description":
                                      "the ACME profile it asks for (null: the "
                                      "issuer's)"}),
                "owner": _nullable({"type": "string"}),
                "contact": _nullable({"type": "string"}),
                "status": {"type": "string", "enum": [s.value for s in State],
                           "description": "derived when answered: `expired` once past "
                                          "the current certificate's not_after"},
                "current": _nullable(_ref("Current")),
                "last_error": _nullable({"type": "string"}),
                "renewal_failing": {"type": "boolean", "description":
                                    "the last issuance attempt failed; retried at "
                                    "next_attempt_at"},
                "remaining_validity_seconds": _nullable({"type": "integer", "minimum": 0}),
                "attempts": {"type": "integer"},
                "retryable": {"type": "boolean", "description":
                              "false: the last failure is a refusal (CAA, a rejected "
                              "name) that is not retried until renewed or redeclared"},
                "next_attempt_at": _nullable(time),
                "waiting": _nullable({"type": "string", "description":
                                      "scheduled, not failed: what the attempt at "
                                      "next_attempt_at waits for (an issuer's rate "
                                      "limits)"}),
                "failed_acme_order": _nullable({"type": "string", "description":
                                                "the client's ACME order whose issuance "
                                                "failed last: it ended invalid with "
                                                "last_error and is not tried again"}),
                "updated_at": _nullable(time),
                "key_held_by": {"type": "string", "enum": ["vault", "client"],
                                "description": "client: certlocker ordered with the "
                                               "client's CSR (its ACME server, or a csr in "
                                               "the spec); the key never left the node and "
                                               "the Vault secret has no private_key"},
                "acme_order": _nullable({"type": "string", "description":
                                         "the ACME order this certificate answers"}),
                "vault": {"type": "object", "required": ["path"], "properties": {
                    "path": {"type": "string", "description":
                             "KV v2 API path a consumer reads, e.g. "
                             "certlocker/data/certs/prod/api/api"}}},
                "targets": {"type": "array", "items": _ref("TargetStatus")},
                "revocation": _nullable({"type": "object"}),
                "history": {"type": "array", "items": {"type": "string"}, "description":
                            "SHA-256 fingerprints of earlier certificates, newest first"},
                "retired_at": _nullable(time),
                "retirement": _nullable({"type": "object", "description":
                                         "phase, steps and per-node targets of the "
                                         "retirement (retired certificates only)"}),
                "renewal_request": _nullable({
                    "type": "object", "description":
                    "a forced renewal (POST .../renew) not yet answered by a new "
                    "certificate; the reconciler issues it if the API cannot",
                    "properties": {"at": time, "by": {"type": "string"}}}),
                "next_renewal": {
                    "type": "object", "description":
                    "when it is next (re)issued and why, from the reconciler's own "
                    "decision: reason is the check that decided (renewal-due, "
                    "in-backoff, outside-maintenance-window, up-to-date ...)",
                    "properties": {"at": _nullable(time), "reason": {"type": "string"},
                                   "why": {"type": "string"}}},
            },
        },
        "CertificateList": {
            "type": "object",
            "required": ["items", "next_cursor", "limit"],
            "properties": {
                "items": {"type": "array", "items": _ref("Certificate")},
                "next_cursor": _nullable({"type": "string", "description":
                                          "pass as `cursor` for the next page; null on "
                                          "the last"}),
                "offset": {"type": "integer"},
                "limit": {"type": "integer"},
                "scope": {"type": "string", "enum": ["all", "permitted"], "description":
                          "all: the caller's token listed the whole inventory; permitted: "
                          "only the service folders Vault lets it list (a team operator)"},
            },
        },
        "Credential": {
            "type": "object",
            "required": ["token", "expires_at", "vault"],
            "properties": {
                "token": {"type": "string", "description": "an ES256 JWT; `vault write "
                          "auth/<auth_path>/login role=<role> jwt=<token>`"},
                "expires_at": time,
                "kid": {"type": "string"},
                "jti": {"type": "string"},
                "vault": {"type": "object", "required": ["auth_path", "role"], "properties": {
                    "auth_path": {"type": "string"}, "role": {"type": "string"}}},
            },
        },
        "CredentialRevocation": {
            "type": "object",
            "properties": {"environment": {"type": "string"}, "service": {"type": "string"},
                           "generation": {"type": "integer"}, "revoked_at": time},
        },
        "BundleRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["format"],
            "properties": {
                "format": {"type": "string", "enum": sorted(FORMATS)},
                "password": {"type": "string", "description": "PKCS#12 formats only"},
                "alias": {"type": "string", "description": "java only"},
                "k8s_name": {"type": "string"},
                "k8s_namespace": {"type": "string"},
            },
        },
        "SigningKeyRotation": {
            "type": "object",
            "properties": {"kid": {"type": "string"}, "alg": {"type": "string"},
                           "created_at": time, "previous_kid": {"type": "string"},
                           "published": {"type": "array", "items": {"type": "string"}}},
        },
        "Discovered": {"type": "object", "description": "a certificate found by a scan "
                       "or a file finding (unmanaged until adopted)"},
        "Scan": {"type": "object", "required": ["state"],
                 "properties": {"state": {"type": "string"}}},
        "Jwks": {"type": "object", "required": ["keys"],
                 "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
        "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
    }


#: What a client can do next with a certificate an answer names (OpenAPI links: client
#: generators and Schemathesis's stateful runs follow them).
CERTIFICATE_LINKS = {
    operation: {"operationId": operation, "parameters": {"cert_id": "$response.body#/id"}}
    for operation in ("getCertificate", "patchCertificate", "renewCertificate",
                      "verifyCertificate", "revokeCertificate", "retireCertificate")}


def _certificate(description: str) -> dict[str, Any]:
    return {**_json(_ref("Certificate"), description), "links": CERTIFICATE_LINKS}


def _paths(rules: SpecRules) -> dict[str, Any]:
    cert_answer = {
        "200": _certificate("Done (valid or failed) for an existing certificate"),
        "201": _certificate("Declared and issued (or failed) within `wait`"),
        "202": _certificate("Accepted; issuance is running (see Location)"),
    }
    return {
        "/v1/certificates": {
            "get": {
                "operationId": "listCertificates", "tags": ["certificates"],
                "summary": "The inventory, filtered and paged in (environment, service, "
                           "name) order",
                "security": OPERATOR,
                "parameters": [
                    {"name": "environment", "in": "query", "schema": _ref("Environment")},
                    {"name": "service", "in": "query", "schema": _ref("Name")},
                    {"name": "status", "in": "query", "description": "the shown status; "
                     "`failed` also selects certificates whose renewal is failing",
                     "schema": {"type": "string", "enum": [s.value for s in State]}},
                    {"name": "issuer", "in": "query", "schema": {"type": "string"}},
                    {"name": "expiring_within", "in": "query",
                     "description": "only certificates whose current not_after is within "
                                    "this duration (720h, 30d, 1d12h; units s m h d w)",
                     "schema": {"type": "string", "pattern": r"^(\d+[smhdw])+$"}},
                    {"name": "limit", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT}},
                    {"name": "cursor", "in": "query", "description": "next_cursor of the "
                     "previous page", "schema": {"type": "string"}},
                    {"name": "offset", "in": "query", "description": "instead of cursor",
                     "schema": {"type": "integer", "minimum": 0, "default": 0}},
                    {"name": "q", "in": "query", "description": "search: part of the id "
                     "or of a DNS name, any case", "schema": {
                         "type": "string", "minLength": 1, "maxLength": 253}},
                ],
                "responses": {"200": _json(_ref("CertificateList"), "One page"),
                              **_problems(400, 401, 403, 503)},
            },
            "post": {
                "operationId": "declareCertificate", "tags": ["certificates"],
                "summary": "Declare a certificate (the spec is written with the caller's "
                           "token) and start issuing it",
                "security": OPERATOR,
                "parameters": [WAIT],
                "requestBody": {"required": True, "content": {
                    JSON: {"schema": _ref("CertificateDeclaration")}}},
                "responses": {**cert_answer,
                              **_problems(400, 401, 403, 409, 413, 415, 503)},
            },
        },
        "/v1/certificates/{cert_id}": {
            "get": {
                "operationId": "getCertificate", "tags": ["certificates"],
                "security": OPERATOR, "parameters": [CERT_ID],
                "responses": {"200": _json(_ref("Certificate"), "The certificate"),
                              **_problems(401, 403, 404, 503)},
            },
            "patch": {
                "operationId": "patchCertificate", "tags": ["certificates"],
                "summary": "Change a declared spec (e.g. its targets) by a JSON merge patch "
                           "(RFC 7396), validated like a declaration; environment, service "
                           "and name cannot change",
                "security": OPERATOR, "parameters": [CERT_ID],
                "requestBody": {"required": True, "content": {
                    media: {"schema": {"type": "object", "minProperties": 1,
                                       "description": "fields of CertificateDeclaration; "
                                                      "null removes an optional one"}}
                    for media in ("application/merge-patch+json", "application/json")}},
                "responses": {"200": _json(_ref("Certificate"), "The certificate as patched"),
                              **_problems(400, 401, 403, 404, 409, 413, 415, 503)},
            },
            "delete": {
                "operationId": "retireCertificate", "tags": ["certificates"],
                "summary": "Retire: revoke at the CA (unless revoke=false), revoke the "
                           "service's credentials with its last certificate, destroy the "
                           "material; it stays listed as retired",
                "security": OPERATOR,
                "parameters": [CERT_ID, {"name": "revoke", "in": "query",
                                         "schema": {"type": "string",
                                                    "enum": ["true", "false"]}}],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "additionalProperties": False,
                               "properties": {"revoke": {"type": "boolean"}}}}}},
                "responses": {**{code: _json({"type": "object", "required": ["id", "status"],
                                              "properties": {
                                                  "id": {"type": "string"},
                                                  "status": {"type": "string"},
                                                  "retired_at": _nullable(
                                                      {"type": "string",
                                                       "format": "date-time"}),
                                                  "last": _nullable({"type": "object"}),
                                                  "retirement": _nullable({"type": "object"}),
                                                  "targets": {"type": "array"}}},
                                             what)
                                 for code, what in (("200", "Retired"), (
                                     "202", "Retired; a step waits for the reconciler"))},
                              **_problems(400, 401, 403, 404, 409, 415, 503)},
            },
        },
        "/v1/certificates/{cert_id}/revoke": {
            "post": {
                "operationId": "revokeCertificate", "tags": ["certificates"],
                "summary": "Revoke at the CA (ACME), optionally replace, record why",
                "security": OPERATOR, "parameters": [CERT_ID, WAIT],
                "requestBody": {"required": True, "content": {JSON: {"schema": {
                    "type": "object", "additionalProperties": False, "required": ["reason"],
                    "properties": {
                        "reason": {"type": "string", "description": "an RFC 5280 reason "
                                   "name, e.g. keyCompromise, superseded"},
                        "replace": {"type": "boolean"}}}}}},
                "responses": {"200": _json(_ref("Certificate"), "Revoked"),
                              "202": _json(_ref("Certificate"), "Revocation running"),
                              **_problems(400, 401, 403, 404, 409, 413, 415, 502, 503)},
            },
        },
        "/v1/grants/{environment}/{service}": {
            "get": {
                "operationId": "showGrant", "tags": ["grants"],
                "summary": "The names granted to a service (none: default deny)",
                "security": OPERATOR, "parameters": GRANT_PATH,
                "responses": {"200": _json(_ref("GrantAnswer"), "The grant"),
                              **_problems(400, 401, 403, 409, 503)},
            },
            "put": {
                "operationId": "replaceGrant", "tags": ["grants"],
                "summary": "Replace the names granted to a service (administrators)",
                "security": OPERATOR, "parameters": GRANT_PATH,
                "requestBody": {"required": True, "content": {JSON: {
                    "schema": _ref("Grant")}}},
                "responses": {"200": _json(_ref("GrantAnswer"), "The grant"),
                              **_problems(400, 401, 403, 413, 415, 503)},
            },
        },
        "/v1/certificates/cleanup": {
            "get": {
                "operationId": "cleanupReport", "tags": ["certificates"],
                "summary": "Retired certificates whose Vault data is still to be cleaned",
                "security": OPERATOR,
                "responses": {"200": _json({"type": "object", "required": ["items"],
                                            "properties": {"items": {
                                                "type": "array",
                                                "items": {"type": "object"}}}},
                                           "Leftovers"),
                              **_problems(401, 403, 503)},
            },
        },
        "/v1/audit": {
            "get": {
                "operationId": "queryAudit", "tags": ["audit"],
                "summary": "The hash-chained audit trail, newest first (needs read on "
                           "audit events)",
                "security": OPERATOR,
                "parameters": [
                    *({"name": n, "in": "query", "schema": {"type": "string",
                                                             "maxLength": 256}}
                      for n in ("certificate", "actor", "action")),
                    *({"name": n, "in": "query", "schema": {"type": "string",
                                                             "format": "date-time"}}
                      for n in ("since", "until")),
                    {"name": "limit", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                ],
                "responses": {"200": _json({"type": "object", "properties": {
                    "items": {"type": "array", "items": {"type": "object"}},
                    "limit": {"type": "integer"}, "filters": {"type": "object"}}},
                    "Matching events"), **_problems(400, 401, 403, 503)},
            },
        },
        "/v1/certificates/{cert_id}/renew": {
            "post": {
                "operationId": "renewCertificate", "tags": ["certificates"],
                "summary": "Issue a new certificate now", "security": OPERATOR,
                "parameters": [CERT_ID, WAIT],
                "responses": {**cert_answer, **_problems(400, 401, 403, 404, 409, 503)},
            },
        },
        "/v1/certificates/{cert_id}/verify": {
            "post": {
                "operationId": "verifyCertificate", "tags": ["certificates"],
                "summary": "Handshake with every target now and record what each serves",
                "security": OPERATOR, "parameters": [CERT_ID],
                "responses": {"200": _json(_ref("Certificate"), "With fresh target results"),
                              **_problems(401, 403, 404, 409, 503)},
            },
        },
        "/v1/certificates/{cert_id}/bundle": {
            "get": {
                "operationId": "getBundle", "tags": ["delivery"],
                "summary": "The certificate rendered for its own service (formats without "
                           "a password; PKCS#12 password in X-Certlocker-Password)",
                "security": SERVICE_CREDENTIAL,
                "parameters": [CERT_ID,
                               {"name": "format", "in": "query", "required": True,
                                "schema": {"type": "string", "enum": sorted(FORMATS)}},
                               {"name": "X-Certlocker-Password", "in": "header",
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The rendered bundle (media type by "
                                                     "format)"},
                              **_problems(400, 401, 403, 404, 503)},
            },
            "post": {
                "operationId": "postBundle", "tags": ["delivery"],
                "summary": "The certificate rendered for its own service",
                "security": SERVICE_CREDENTIAL, "parameters": [CERT_ID],
                "requestBody": {"required": True, "content": {
                    JSON: {"schema": _ref("BundleRequest")}}},
                "responses": {"200": {"description": "The rendered bundle (media type by "
                                                     "format)"},
                              **_problems(400, 401, 403, 404, 413, 415, 503)},
            },
        },
        "/v1/services/{env}/{service}/credentials": {
            "post": {
                "operationId": "mintCredential", "tags": ["credentials"],
                "summary": "Mint a service credential (needs update on "
                           "specs/<env>/<service>/_credentials)",
                "security": OPERATOR, "parameters": [ENV, SERVICE],
                "responses": {"201": _json(_ref("Credential"), "A new credential"),
                              **_problems(400, 401, 403, 503)},
            },
            "delete": {
                "operationId": "revokeCredentials", "tags": ["credentials"],
                "summary": "Revoke every credential of the service (new generation)",
                "security": OPERATOR, "parameters": [ENV, SERVICE],
                "responses": {"200": _json(_ref("CredentialRevocation"), "Revoked"),
                              **_problems(400, 401, 403, 503)},
            },
        },
        "/v1/services/{env}/{service}/acme-accounts": {
            "post": {
                "operationId": "createAcmeBinding", "tags": ["credentials"],
                "summary": "An External Account Binding for a stock ACME client of the "
                           "service (same permission as minting its credentials; revoking "
                           "them stops it). The HMAC key is shown once.",
                "security": OPERATOR, "parameters": [ENV, SERVICE],
                "responses": {"201": _json({
                    "type": "object",
                    "required": ["directory_url", "eab_kid", "eab_hmac_key"],
                    "properties": {
                        "directory_url": {"type": "string", "description":
                                          "<public_url>/acme/<env>/directory"},
                        "eab_kid": {"type": "string"},
                        "eab_hmac_key": {"type": "string", "description":
                                         "base64url, unpadded"},
                        "environment": {"type": "string"},
                        "service": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"}}},
                    "A new binding"),
                              **_problems(400, 401, 403, 503)},
            },
        },
        "/v1/services/{env}/{service}/credentials/refresh": {
            "post": {
                "operationId": "refreshCredential", "tags": ["credentials"],
                "summary": "Exchange a valid credential for a fresh one",
                "security": SERVICE_CREDENTIAL, "parameters": [ENV, SERVICE],
                "responses": {"201": _json(_ref("Credential"), "A new credential"),
                              **_problems(400, 401, 403, 503)},
            },
        },
        "/v1/discovery": {
            "get": {
                "operationId": "listDiscovered", "tags": ["discovery"],
                "summary": "Discovered certificates, soonest expiry first",
                "security": OPERATOR,
                "parameters": [
                    {"name": "expiring_within", "in": "query",
                     "schema": {"type": "string", "pattern": r"^(\d+[smhdw])+$"}},
                    {"name": "state", "in": "query", "schema": {
                        "type": "string", "enum": ["unmanaged", "adopted", "all"],
                        "default": "unmanaged"}},
                    {"name": "limit", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                ],
                "responses": {"200": _json({"type": "object", "properties": {
                    "items": {"type": "array", "items": _ref("Discovered")},
                    "total": {"type": "integer"}, "limit": {"type": "integer"}}},
                    "Matching discoveries"), **_problems(400, 401, 403, 503)},
            },
        },
        "/v1/discovery/{sha256}": {
            "get": {
                "operationId": "getDiscovered", "tags": ["discovery"], "security": OPERATOR,
                "parameters": [SHA256],
                "responses": {"200": _json(_ref("Discovered"), "One discovery"),
                              **_problems(401, 403, 404, 503)},
            },
        },
        "/v1/discovery/{sha256}/adopt": {
            "post": {
                "operationId": "adoptDiscovered", "tags": ["discovery"],
                "summary": "Declare a managed certificate for a discovered one (its DNS "
                           "names are the discovered certificate's)",
                "security": OPERATOR, "parameters": [SHA256, WAIT],
                "requestBody": {"required": True, "content": {JSON: {"schema": {
                    "type": "object", "required": ["environment", "service", "name"],
                    "properties": {k: v for k, v in _schemas(rules)["CertificateDeclaration"][
                        "properties"].items() if k != "dns_names"}}}}},
                "responses": {**cert_answer,
                              **_problems(400, 401, 403, 404, 409, 413, 415, 503)},
            },
        },
        "/v1/discovery/scans": {
            "post": {
                "operationId": "startScan", "tags": ["discovery"],
                "summary": "Scan endpoints (host:port, CIDR ranges) for served certificates",
                "security": OPERATOR, "parameters": [WAIT],
                "requestBody": {"required": True, "content": {JSON: {"schema": {
                    "type": "object", "additionalProperties": False,
                    "required": ["endpoints"],
                    "properties": {"endpoints": {"type": "array", "items": {
                                       "type": "string"}, "minItems": 1},
                                   "sni": {"type": "string"},
                                   "timeout": {"type": "number"},
                                   "parallelism": {"type": "integer"}}}}}},
                "responses": {"201": _json(_ref("Scan"), "Finished (done or failed)"),
                              "202": _json(_ref("Scan"), "Running"),
                              **_problems(400, 401, 403, 413, 415, 503)},
            },
        },
        "/v1/discovery/scans/{scan_id}": {
            "get": {
                "operationId": "getScan", "tags": ["discovery"], "security": OPERATOR,
                "parameters": [{"name": "scan_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Scan"), "The scan"),
                              **_problems(401, 403, 404, 503)},
            },
        },
        "/v1/discovery/findings": {
            "post": {
                "operationId": "reportFindings", "tags": ["discovery"],
                "summary": "Report certificates found in files on a host",
                "security": OPERATOR,
                "requestBody": {"required": True, "content": {JSON: {"schema": {
                    "type": "object", "additionalProperties": False,
                    "required": ["host", "findings"],
                    "properties": {"host": {"type": "string"},
                                   "findings": {"type": "array",
                                                "items": {"type": "object"}}}}}}},
                "responses": {"200": _json({"type": "object"}, "Recorded"),
                              **_problems(400, 401, 403, 413, 415, 503)},
            },
        },
        "/v1/system/signing-keys/rotate": {
            "post": {
                "operationId": "rotateSigningKey", "tags": ["system"],
                "security": OPERATOR,
                "responses": {"201": _json(_ref("SigningKeyRotation"), "Rotated"),
                              **_problems(401, 403, 503)},
            },
        },
        "/.well-known/acme-challenge/{token}": {
            "get": {
                "operationId": "acmeHttp01", "tags": ["unauthenticated"],
                "summary": "RFC 8555 section 8.3 key authorization", "security": [],
                "parameters": [{"name": "token", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "key authorization", "content": {
                    "text/plain": {"schema": {"type": "string"}}}}, **_problems(404)},
            },
        },
        "/.well-known/jwks.json": {
            "get": {"operationId": "jwks", "tags": ["unauthenticated"], "security": [],
                    "responses": {"200": _json(_ref("Jwks"), "Published signing keys")}},
        },
        "/healthz": {"get": {"operationId": "healthz", "tags": ["unauthenticated"],
                             "security": [],
                             "responses": {"200": _json(_ref("Health"), "Alive")}}},
        "/readyz": {"get": {"operationId": "readyz", "tags": ["unauthenticated"],
                            "security": [],
                            "responses": {"200": _json(_ref("Health"), "Vault reachable and "
                                                       "certlocker's own token accepted"),
                                          "503": _json(_ref("Health"), "Vault unavailable "
                                                       "(vault-unavailable) or certlocker's "
                                                       "own token refused "
                                                       "(vault-token-invalid)")}}},
        "/metrics": {"get": {"operationId": "metrics", "tags": ["unauthenticated"],
                             "security": [],
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {"schema": {
                                                       "type": "string"}}}},
                                           **_problems(401)}}},
        "/openapi.json": {"get": {"operationId": "openapi", "tags": ["unauthenticated"],
                                  "security": [],
                                  "responses": {"200": _json({"type": "object"},
                                                             "This document")}}},
    }


def document(rules: SpecRules = PERMISSIVE) -> dict[str, Any]:
    """The document for a deployment's spec rules (its environments and issuers)."""
    statuses = (400, 401, 403, 404, 409, 413, 414, 415, 422, 429, 431, 502, 503)
    paths = {**_paths(rules), **openapi_replacements.paths()}
    for operations in paths.values():
        for operation in operations.values():
            # gunicorn's own refusals (gunicorn_worker), before any route is chosen
            operation["responses"] = {**operation["responses"], **_problems(414, 431)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "certlocker", "version": __version__,
                 "description": "TLS certificate lifecycle beside HashiCorp Vault / "
                                "OpenBao. Every error is an RFC 9457 problem document."},
        "servers": [{"url": "/"}],
        "security": OPERATOR,
        "paths": paths,
        "components": {
            "schemas": {**_schemas(rules), **openapi_replacements.schemas(rules)},
            "responses": {f"Problem{s}": {"description": _PROBLEM_TEXT[s], "content": {
                PROBLEM: {"schema": _ref("Problem")}}} for s in statuses},
            "securitySchemes": {
                "vaultToken": {"type": "apiKey", "in": "header", "name": "X-Vault-Token",
                               "description": "the operator's own Vault token; Vault's "
                                              "policies decide"},
                "bearerVaultToken": {"type": "http", "scheme": "bearer",
                                     "description": "the operator's Vault token as Bearer"},
                "serviceCredential": {"type": "http", "scheme": "bearer",
                                      "bearerFormat": "JWT",
                                      "description": "a service credential minted by "
                                                     "certlocker"},
            },
        },
    }


_PROBLEM_TEXT = {400: "Invalid input: `detail` and `field` name the bad field or parameter",
                 401: "No Vault token or credential, or an invalid one",
                 403: "Vault's policies deny this caller",
                 404: "No such certificate or route",
                 409: "Already declared, or a concurrent change won",
                 413: "The body is larger than max_request_bytes",
                 414: "The request line is longer than the server accepts",
                 415: "The body is not application/json",
                 422: "Well-formed but selects nothing (empty-selection)",
                 429: "The CA rate-limited certlocker (see Retry-After)",
                 431: "The request's header fields are larger than the server accepts",
                 502: "The CA refused or the challenge failed",
                 503: "Vault is unavailable"}


@bp.get("/openapi.json")
def openapi() -> Response:
    app = current_app
    doc = app.extensions.get("certlocker.openapi")
    if doc is None:
        doc = app.extensions["certlocker.openapi"] = document(
            SpecRules.from_settings(services().settings))
    resp = jsonify(doc)
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp
