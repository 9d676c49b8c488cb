"""Nothing KeyCore serves makes a browser ask another host for anything: no CDN, no font service, no logo.

Every page of the tenant portal (walked from its URL list), the vendor portal's pages, the
sign-in and error pages and the API reference are rendered, and every URL a browser would
follow or load from them (href, src, action, srcset, poster, data, CSS url()) must stay on
KeyCore's own host. The static files KeyCore ships (CSS, JS) must name no other host either,
bar XML namespaces, which are names, not addresses.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.urls import reverse

from tests.tenant_portal.walk import path_for, sample_objects, tenant_routes

pytestmark = pytest.mark.django_db

URL_ATTRIBUTES = {"href", "src", "action", "formaction", "srcset", "poster", "data", "hx-get", "hx-post"}
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")
ANY_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s'\"<>)]*")
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml", "http://www.w3.org/1999/xlink"}
OUR_HOST = "testserver"


class _Urls(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if not value:
                continue
            if name == "srcset":
                self.urls.extend(candidate.strip().split(" ")[0] for candidate in value.split(","))
            elif name in URL_ATTRIBUTES:
                self.urls.append(value)
            elif name == "style":
                self.urls.extend(CSS_URL.findall(value))

    def handle_data(self, data):
        if self.lasttag == "style":
            self.urls.extend(CSS_URL.findall(data))


def _foreign(urls: list[str]) -> list[str]:
    out = []
    for url in urls:
        parts = urlsplit(url.strip())
        other_host = parts.scheme in ("", "http", "https") and parts.netloc and parts.netloc != OUR_HOST
        if other_host or parts.scheme not in ("", "http", "https", "data", "mailto", "blob"):
            out.append(url)
    return out


def _check(client, path: str, problems: list[str]) -> None:
    response = client.get(path)
    if response.status_code >= 500:
        problems.append(f"{path}: HTTP {response.status_code}")
        return
    if "html" not in response.get("Content-Type", ""):
        return
    parser = _Urls()
    parser.feed(response.content.decode())
    problems.extend(f"{path}: {url}" for url in _foreign(parser.urls))


def test_no_page_of_either_portal_loads_or_links_anything_from_another_host(client, tenant, owner, vendor_admin):
    problems: list[str] = []
    for path in ("/accounts/login/", "/accounts/password/reset/", "/no-such-page/", "/api/v1/docs/"):
        _check(client, path, problems)

    client.force_login(owner)
    objects = sample_objects(tenant)
    for route in tenant_routes():  # POST-only ones answer 405 and are skipped
        _check(client, path_for(route, tenant.external_id, objects), problems)

    client.force_login(vendor_admin)
    for name, args in [
        ("vendor:dashboard", []),
        ("vendor:tenants", []),
        ("vendor:tenant", [tenant.external_id]),
        ("vendor:tenant_audit", [tenant.external_id]),
        ("vendor:key_create", [tenant.external_id]),
        ("vendor:tenant_create", []),
        ("vendor:tenant_import", []),
        ("vendor:jobs", []),
        ("vendor:audit", []),
        ("vendor:event_chains", []),
        ("vendor:staff", []),
        ("vendor:api_keys", []),
    ]:
        _check(client, reverse(name, args=args), problems)
    _check(client, reverse("vendor:key_create", args=[tenant.external_id]) + "?provider=aws", problems)
    assert not problems, "\n".join(problems)


def test_the_static_files_name_no_other_host():
    problems = []
    for path in sorted(Path(settings.BASE_DIR, "static").rglob("*")):
        if path.suffix not in (".css", ".js", ".svg", ".html"):
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".css":
            text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)  # licence headers name their project's site
        problems.extend(f"{path.name}: {url}" for url in ANY_URL.findall(text) if url not in NAMESPACES)
    assert not problems, problems


def test_the_checks_above_can_fail():
    """The parser sees what a browser would load: a CDN script, a stylesheet, a CSS url() in a style attribute."""
    parser = _Urls()
    parser.feed(
        '<script src="https://cdn.example.net/x.js"></script><link href="//fonts.example.com/css" rel="stylesheet">'
        '<div style="background: url(https://img.example.org/a.png)"></div><a href="/vendor/">ok</a>'
        '<img srcset="/static/a.png 1x, https://img.example.org/b.png 2x">'
    )
    assert _foreign(parser.urls) == [
        "https://cdn.example.net/x.js",
        "//fonts.example.com/css",
        "https://img.example.org/a.png",
        "https://img.example.org/b.png",
    ]
    assert ANY_URL.findall("a('https://cdn.example.net/lib.js')") == ["https://cdn.example.net/lib.js"]
