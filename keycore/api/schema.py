"""The OpenAPI document's shared parts: the bearer scheme, the Idempotency-Key header and problem responses.

Every error KeyCore returns is ``application/problem+json``; the post-processing
hook gives each operation the problem responses it can produce (401/403/429
everywhere, 400 where it takes input, 404 where it names something, 413/415
where it takes a body, 409/422 where it honours ``Idempotency-Key``) and makes
every error response's media type ``application/problem+json``, so that what
the document promises is what the API sends (Schemathesis checks that in CI).
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter

from keycore.api.idempotency import HEADER, MAX_KEY_LENGTH

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string", "format": "uri", "description": "Stable: https://keycore.dev/problems/<code>."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "Field name → messages ('__all__' for the request as a whole).",
        },
    },
    "required": ["type", "title", "status", "detail"],
}
_DESCRIPTIONS = {
    "400": "Invalid input (problem `invalid-input`, `malformed-request`, `malformed-data`).",
    "401": "No API key, or one that is invalid, revoked or expired.",
    "403": "The API key lacks the scope this endpoint needs, or the action is not allowed.",
    "404": "Not found (`tenant-not-found` for an unknown tenant).",
    "409": "Conflicts with the current state, or a request with this Idempotency-Key is still running.",
    "413": "The body is larger than the server accepts.",
    "415": "The body is not application/json.",
    "422": "The Idempotency-Key was used for a different request.",
    "429": "Too many requests for this API key; retry after Retry-After.",
}

IDEMPOTENCY_KEY = OpenApiParameter(
    HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Any unique string (a UUID): a retry with the same key and body returns the first result instead "
    "of creating again. Kept for 24 hours.",
    pattern=rf"^[\x21-\x7e][\x20-\x7e]{{0,{MAX_KEY_LENGTH - 1}}}$",
)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "keycore.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer kc_…`. Created in the vendor portal or with "
            "`manage.py create_api_key`, shown once. Scopes: tenants:read, tenants:write, keys:write, jobs:write, "
            "events:read, crypto.",
        }


class KeyCoreAutoSchema(AutoSchema):
    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        handler = getattr(self.view, self.method.lower(), None)
        if getattr(handler, "idempotent", False):
            parameters = [*parameters, IDEMPOTENCY_KEY]
        return parameters


def add_problem_responses(result, generator, request, public):
    """Post-processing hook (SPECTACULAR_SETTINGS): problem responses everywhere, as described above."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = operation.get("parameters", [])
            codes = ["401", "403", "429"]
            if parameters or "requestBody" in operation:
                codes.append("400")
            if any(p.get("in") == "path" for p in parameters) or path.startswith("/api/v1/crypto/"):
                codes.append("404")
            if "requestBody" in operation or method == "post":
                codes += ["400", "413", "415"]
            if any(p.get("in") == "header" and p.get("name") == HEADER for p in parameters):
                codes += ["409", "422"]
            responses = operation["responses"]
            for code in codes:
                responses.setdefault(code, {"description": _DESCRIPTIONS[code]})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
                    if code in ("429", "503", "409"):
                        response.setdefault("headers", {})["Retry-After"] = {
                            "schema": {"type": "integer"},
                            "description": "Seconds to wait before retrying (when retrying can help).",
                        }
    return result
