"""The API reference page: Redoc from drf-spectacular-sidecar (served by us, no CDN) under a CSP of its own.

drf-spectacular's Redoc template loads Google Fonts and starts Redoc with an
inline script. This page does neither: Redoc starts itself from the ``<redoc>``
element, so scripts stay ``'self'`` only. Redoc injects its styles at run time
(styled-components) and builds its search index in a blob: worker, which is
what this page's policy allows beyond the portals' one. Redoc's sidebar footer
would ask Redocly's CDN for a logo: the bundle is served through ``redoc_script``,
which points that image at an empty ``data:`` URL, so the page asks no other host
for anything (Redoc hides an image that fails to load).
"""

from __future__ import annotations

import functools
from pathlib import Path

from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; worker-src blob:; connect-src 'self'; frame-ancestors 'none'; form-action 'none'; "
    "base-uri 'none'; object-src 'none'"
)
REDOC_SCRIPT = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
REDOC_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>KeyCore API reference</title>
<link rel="icon" href="{}" type="image/svg+xml">
</head>
<body>
<redoc spec-url="{}" required-props-first="true" sort-required-props-first="true"></redoc>
<script src="{}"></script>
</body>
</html>
"""


class ApiDocsView(APIView):
    authentication_classes = []
    permission_classes = []

    @extend_schema(exclude=True)
    def get(self, request):
        page = format_html(PAGE, static("img/keycore.svg"), reverse("api-schema"), reverse("api-docs-script"))
        response = HttpResponse(page)
        response["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
        return response


@functools.cache
def _redoc_bundle() -> bytes:
    source = Path(finders.find(REDOC_SCRIPT)).read_text(encoding="utf-8")
    return source.replace(REDOC_CDN_LOGO, "data:,").encode()


@require_GET
def redoc_script(request):
    """Redoc's bundle from drf-spectacular-sidecar, minus its one URL on another host (the footer logo)."""
    response = HttpResponse(_redoc_bundle(), content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=86400"
    return response
