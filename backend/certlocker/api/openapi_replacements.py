"""The OpenAPI entries of /v1/replacements (mass replacement), merged into the document
by ``api.openapi``; kept apart so the certificate paths stay readable."""

from __future__ import annotations

from typing import Any

from ..lifecycle.policy.replacement import MAX_REASON, MAX_SERIALS, STATES
from ..lifecycle.revocation import REASONS
from ..specs import SpecRules

JSON = "application/json"
OPERATOR: list[dict[str, list[str]]] = [{"vaultToken": []}, {"bearerVaultToken": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/Problem{s}"} for s in statuses}


def schemas(rules: SpecRules) -> dict[str, Any]:
    issuer: dict[str, Any] = {"type": "string"}
    if rules.issuers:
        issuer["enum"] = sorted(rules.issuers)
    environment: dict[str, Any] = {"type": "string"}
    if rules.environments:
        environment["enum"] = list(rules.environments)
    counts = {"type": "object", "properties": {s.value: {"type": "integer"} for s in STATES}}
    return {
        "ReplacementRequest": {
            "type": "object", "additionalProperties": False,
            "description": "A selector (every criterion given must hold; `all: true` alone "
                           "selects every certificate the caller may list) and options. "
                           "Only issued certificates are selected.",
            "properties": {
                "issuer": {**issuer, "description": "a configured issuer's name"},
                "issuing_intermediate": {"type": "string", "maxLength": 1024,
                                         "description": "a substring of the issuer DN, or "
                                         "the SHA-256 (hex) of the issuing intermediate"},
                "serials": {"type": "array", "minItems": 1, "maxItems": MAX_SERIALS,
                            "items": {"type": "string", "pattern": "^(0x)?[0-9a-fA-F:]+$"}},
                "names": {"type": "string", "maxLength": 253,
                          "description": "a glob (* ? [..]) over dns_names"},
                "environment": environment,
                "service": {"type": "string", "description": "needs environment"},
                "all": {"type": "boolean", "enum": [True]},
                "revoke_old": {"type": "boolean", "default": False,
                               "description": "revoke each old certificate once its "
                               "replacement is served on every target node"},
                "revocation_reason": {"type": "string", "enum": sorted(REASONS),
                                      "default": "superseded"},
                "reason": {"type": "string", "maxLength": MAX_REASON,
                           "description": "the operator's words, kept in the record and "
                           "the audit trail"},
            },
        },
        "Replacement": {
            "type": "object",
            "required": ["id", "state", "selected", "created_at", "total", "counts"],
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "state": {"type": "string", "enum": ["running", "done"]},
                "selected": {"type": "integer"},
                "created_at": {"type": "string", "format": "date-time"},
                "created_by": {"type": "string"},
                "done_at": {"oneOf": [{"type": "string", "format": "date-time"},
                                      {"type": "null"}]},
                "selector": {"type": "object"},
                "revoke_old": {"type": "boolean"},
                "revocation_reason": {"oneOf": [{"type": "string"}, {"type": "null"}]},
                "reason": {"oneOf": [{"type": "string"}, {"type": "null"}]},
                "total": {"type": "integer"},
                "counts": {**counts, "description": "certificates per state: pending, "
                           "awaiting-client (an ACME client holds the key; its ARI window "
                           "moved to now), failing, issued, verified (every node serves "
                           "the new one), revoked, revoke-failed, gone"},
                "finished": {"type": "integer"},
                "eta_seconds": {"oneOf": [{"type": "number"}, {"type": "null"}],
                                "description": "left / (finished per second so far)"},
                "awaiting_client": {"type": "integer"},
                "failures": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "state": {"type": "string"},
                    "last_error": {"oneOf": [{"type": "string"}, {"type": "null"}]}}}},
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "state": {"type": "string", "enum": [s.value for s in STATES]},
                    "old_serial": {"type": "string"},
                    "serial": {"oneOf": [{"type": "string"}, {"type": "null"}]},
                    "not_after": {"type": "string", "format": "date-time"},
                    "nodes": {"type": "integer"},
                    "revoked_at": {"oneOf": [{"type": "string"}, {"type": "null"}]},
                    "last_error": {"oneOf": [{"type": "string"}, {"type": "null"}]}}}},
            },
        },
    }


def paths() -> dict[str, Any]:
    op_id = {"name": "op_id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
    return {
        "/v1/replacements": {
            "post": {
                "operationId": "startReplacement", "tags": ["replacements"],
                "summary": "Replace every selected certificate, most urgent first (needs "
                           "update on every selected spec, as a renewal does); durable "
                           "before the answer",
                "security": OPERATOR,
                "requestBody": {"required": True, "content": {
                    JSON: {"schema": _ref("ReplacementRequest")}}},
                "responses": {
                    "202": {"description": "Started (see Location)",
                            "headers": {"Location": {"schema": {"type": "string"}}},
                            "content": {JSON: {"schema": _ref("Replacement")}}},
                    **_problems(400, 401, 403, 413, 415, 422, 503)},
            },
            "get": {
                "operationId": "listReplacements", "tags": ["replacements"],
                "summary": "Every operation whose certificates the caller may all read, "
                           "newest first", "security": OPERATOR,
                "responses": {"200": {"description": "Operations", "content": {JSON: {
                    "schema": {"type": "object", "properties": {"items": {
                        "type": "array", "items": _ref("Replacement")}}}}}},
                    **_problems(401, 503)},
            },
        },
        "/v1/replacements/{op_id}": {
            "get": {
                "operationId": "getReplacement", "tags": ["replacements"],
                "summary": "An operation's progress, computed from every certificate's "
                           "status now", "security": OPERATOR,
                "parameters": [op_id, {"name": "items", "in": "query", "schema": {
                    "type": "string", "enum": ["true", "false"], "default": "true"}}],
                "responses": {"200": {"description": "The operation", "content": {
                    JSON: {"schema": _ref("Replacement")}}},
                    **_problems(400, 401, 404, 503)},
            },
        },
    }
