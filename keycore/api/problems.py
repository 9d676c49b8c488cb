"""Errors as RFC 9457 problem details: ``application/problem+json``, a stable ``type``, a human ``detail``.

Never an HTML page, never a traceback: anything unexpected becomes a plain 500
problem (and is logged server-side), except that KeyCore's own database or broker
being unreachable is a 503 with ``Retry-After`` (keycore/availability.py). Errors
raised outside DRF's views (middleware, rendering) reach ``keycore.views.server_error``,
which answers the same problems under ``/api/``. Unknown URLs under ``/api/v1/`` reach
:func:`unknown_endpoint` instead of the portals' HTML 404 page.

The ``type`` of a problem is ``https://keycore.dev/problems/<code>``; ``code`` is
the stable slug clients branch on (the Python client maps each to an exception).
Field errors, when there are any, are in ``errors`` as ``{field: [messages]}``;
nested fields are dotted (``settings.key_id``, ``items[3].fields``).
"""

from __future__ import annotations

import json
import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response

from keycore import errors
from keycore.availability import unavailable

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://keycore.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"
#: seconds a client should wait before retrying a retryable error (KMS unreachable, throttled KMS)
RETRY_AFTER_SECONDS = 2


# --- errors of the API layer itself (the domain's are in keycore.errors) ---------------


class RequestTooLarge(errors.KeyCoreError):
    code = "request-too-large"
    title = "Request too large"
    http_status = 413


class IdempotencyKeyReused(errors.KeyCoreError):
    """The Idempotency-Key was first used for a different request (another body or endpoint)."""

    code = "idempotency-key-reused"
    title = "Idempotency key reused for a different request"
    http_status = 422


class IdempotencyKeyInProgress(errors.KeyCoreError):
    """The first request with this Idempotency-Key has not finished yet; retry shortly to get its result."""

    code = "idempotency-key-in-progress"
    title = "A request with this idempotency key is in progress"
    http_status = 409
    retryable = True


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


def problem_body(code: str, title: str, status_code: int, detail: str, **extra) -> dict:
    return {"type": PROBLEM_BASE + code, "title": title, "status": status_code, "detail": detail, **extra}


def problem(code: str, title: str, status_code: int, detail: str, **extra) -> Response:
    body = problem_body(code, title, status_code, detail, **extra)
    return Response(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def error_body(exc: errors.KeyCoreError) -> dict:
    """The problem object of a typed error; also used for the per-item errors of batch calls."""
    extra = {"errors": exc.field_errors} if exc.field_errors else {}
    return problem_body(exc.code, exc.title, exc.http_status, exc.detail, **extra)


def problem_for(exc: errors.KeyCoreError) -> Response:
    response = Response(error_body(exc), status=exc.http_status, content_type=PROBLEM_CONTENT_TYPE)
    if exc.retryable:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as ``{"admins[0].email": [...]}``; "__all__" for errors of the whole body."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        items = detail.items()
    elif isinstance(detail, list) and any(isinstance(v, dict | list) for v in detail):
        items = enumerate(detail)
    else:
        messages = detail if isinstance(detail, list) else [detail]
        return {prefix or "__all__": [str(m) for m in messages]}
    for key, value in items:
        if isinstance(key, int):
            name = f"{prefix}[{key}]"
        elif key == "non_field_errors":
            name = prefix or "__all__"
        else:
            name = f"{prefix}.{key}" if prefix else str(key)
        if value in ({}, []):
            continue  # a list item without errors
        for field, messages in _flatten(value, name).items():
            out.setdefault(field, []).extend(messages)
    return out


def exception_handler(exc, context):
    if isinstance(exc, errors.KeyCoreError):
        return problem_for(exc)
    down = unavailable(exc)
    if down is not None:
        log.warning("answering 503: %s (%s)", down.code, exc.__class__.__name__)
        return problem_for(down)
    if isinstance(exc, RequestDataTooBig):
        return problem_for(RequestTooLarge("The request body is larger than this server accepts; split it up."))
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


@csrf_exempt
def unknown_endpoint(request, *args, **kwargs) -> HttpResponse:
    """Any URL under /api/v1/ that no route matches: a problem, not the portals' HTML page."""
    body = problem_body(
        "not-found", "Not found", 404, f"There is no API endpoint at {request.path}; see /api/v1/docs/."
    )
    return HttpResponse(json.dumps(body), status=404, content_type=PROBLEM_CONTENT_TYPE)
