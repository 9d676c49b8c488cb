"""Response headers the portals need beyond Django's SecurityMiddleware."""

from __future__ import annotations

# Scripts only from our own origin (htmx and our small JS files); no inline scripts, no CDN.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


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
