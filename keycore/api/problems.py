"""Errors as RFC 9457 problem details: ``application/problem+json``, a stable ``type``, a human ``detail``.

Never an HTML page, never a traceback: anything unexpected becomes a plain 500
problem (and is logged server-side).
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from keycore import errors

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://keycore.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

_DRF_CODES = {
    exceptions.NotAuthenticated: ("not-authenticated", "Authentication required"),
    exceptions.AuthenticationFailed: ("authentication-failed-api-key", "API key rejected"),
    exceptions.PermissionDenied: ("forbidden", "Not allowed"),
    exceptions.NotFound: ("not-found", "Not found"),
    exceptions.MethodNotAllowed: ("method-not-allowed", "Method not allowed"),
    exceptions.NotAcceptable: ("not-acceptable", "Not acceptable"),
    exceptions.UnsupportedMediaType: ("unsupported-media-type", "Unsupported media type"),
    exceptions.Throttled: ("throttled", "Too many requests"),
    exceptions.ParseError: ("malformed-request", "Malformed request"),
    exceptions.ValidationError: ("invalid-input", "Invalid input"),
}


def problem(code: str, title: str, status_code: int, detail: str, **extra) -> Response:
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status_code, "detail": detail, **extra}
    return Response(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def problem_for(exc: errors.KeyCoreError, **extra) -> Response:
    payload = dict(extra)
    if exc.field_errors:
        payload["errors"] = exc.field_errors
    response = problem(exc.code, exc.title, exc.http_status, exc.detail, **payload)
    if exc.retryable:
        response["Retry-After"] = "2"
    return response


def _flatten(detail) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            if isinstance(value, dict):
                for sub, msgs in _flatten(value).items():
                    out[f"{key}.{sub}"] = msgs
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for i, item in enumerate(value):
                    for sub, msgs in _flatten(item).items():
                        out[f"{key}[{i}].{sub}"] = msgs
            else:
                out[key] = [str(v) for v in (value if isinstance(value, list) else [value])]
        return out
    if isinstance(detail, list):
        return {"__all__": [str(v) for v in detail]}
    return {"__all__": [str(detail)]}


def exception_handler(exc, context):
    if isinstance(exc, errors.KeyCoreError):
        return problem_for(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.APIException):
        code, title = next((v for k, v in _DRF_CODES.items() if isinstance(exc, k)), ("error", "Error"))
        extra = {}
        if isinstance(exc, exceptions.ValidationError):
            extra["errors"] = _flatten(exc.detail)
            detail = "The request has errors; see 'errors'."
        else:
            detail = str(exc.detail)
        response = problem(code, title, exc.status_code, detail, **extra)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            response["Retry-After"] = str(int(exc.wait) + 1)
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            response["WWW-Authenticate"] = 'Bearer realm="keycore"'
            response.status_code = status.HTTP_401_UNAUTHORIZED
        return response
    log.exception("unhandled error in the API", exc_info=exc)
    return problem("internal-error", "Internal error", 500, "Something went wrong on our side; it has been logged.")
