"""The API reference page: Redoc from drf-spectacular-sidecar (served by us, no CDN) under a CSP of its own.

drf-spectacular's Redoc template loads Google Fonts and starts Redoc with an
inline script. This page does neither: Redoc starts itself from the ``<redoc>``
element, so scripts stay ``'self'`` only. Redoc injects its styles at run time
(styled-components) and builds its search index in a blob: worker, which is
what this page's policy allows beyond the portals' one. Redoc's footer asks for
Redocly's logo from their CDN; the policy refuses it and Redoc hides the image.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; worker-src blob:; connect-src 'self'; frame-ancestors 'none'; form-action 'none'; "
    "base-uri 'none'; object-src 'none'"
)
REDOC_SCRIPT = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"

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
        page = format_html(PAGE, static("img/keycore.svg"), reverse("api-schema"), static(REDOC_SCRIPT))
        response = HttpResponse(page)
        response["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
        return response
