"""Response headers the portals need beyond Django's SecurityMiddleware, styled error pages under DEBUG, and
paths that can reach no database refused first."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404

from keycore import metrics
from keycore.views import bad_request, forbidden, not_found, server_error

# Scripts only from our own origin (htmx and our small JS files); no inline scripts, no CDN.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


class MetricsMiddleware:
    """Time every request for ``keycore_http_request_seconds``, labelled by route *name*, never by path.

    A path holds tenant ids and object ids; a route name (``api:crypto-encrypt``) is one of a fixed set,
    so the number of series stays bounded however many tenants there are. What no route matched is
    ``unmatched``.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.view_name or "unnamed") if match is not None else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.HTTP_SECONDS.labels(route, method, f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
        return response


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RefuseNulInPathMiddleware:
    """A path with a NUL (``/api/v1/tenants/a%00b/``) is a 400 before any view looks a tenant up by it.

    PostgreSQL refuses NUL in text, so every lookup by a path parameter would be a 500. (Lone
    surrogates cannot occur: Django re-percent-encodes bytes that are not UTF-8.) The answer is
    ``config.urls.handler400``'s: a problem document under ``/api/``, a page elsewhere.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path:
            return bad_request(request)
        return self.get_response(request)


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # setdefault: the API docs page sets a policy of its own (keycore.api.docs), only a little wider
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if request.path.startswith("/api/") or (request.user.is_authenticated if hasattr(request, "user") else False):
            # pages of a key-management console, and API answers (plaintexts!), are never cached by a browser or proxy
            response.headers.setdefault("Cache-Control", "no-store")
        return response


class DebugErrorPagesMiddleware:
    """With DEBUG on (`make run`), KeyCore's own 404, 403 and 500 pages instead of Django's technical ones.

    Django's debug pages style themselves inline, which the CSP refuses, so a newcomer who
    mistyped a URL saw an unstyled wall of text. The technical detail is not lost: a 500's
    traceback is logged to the console as usual. Without DEBUG, Django already uses the
    handlers in config/urls.py and this middleware does nothing. The API answers its own
    errors (problem+json) and is left alone. Sits before CommonMiddleware, so that a URL
    missing its slash is still redirected rather than called not found.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            settings.DEBUG
            and response.status_code == 404
            and getattr(request, "resolver_match", None) is None  # no URL matched (a view's own 404s pass)
            and not request.path.startswith("/api/")
        ):
            return not_found(request)
        return response

    def process_exception(self, request, exception):
        if not settings.DEBUG or request.path.startswith("/api/"):
            return None
        if isinstance(exception, Http404):
            return not_found(request, exception)
        if isinstance(exception, PermissionDenied):
            return forbidden(request, exception)
        logging.getLogger("django.request").error(
            "Internal Server Error: %s", request.path, exc_info=exception, extra={"status_code": 500}
        )
        return server_error(request)
