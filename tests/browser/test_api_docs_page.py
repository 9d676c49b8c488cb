"""The API reference page in Chromium: Redoc renders every endpoint under the page's CSP, with nothing from a CDN."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_reference_renders_under_its_csp_without_a_cdn(page, live_server):
    errors, loaded, refused = [], set(), set()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfinished", lambda r: loaded.add(urlsplit(r.url).netloc) if r.url.startswith("http") else None)
    page.on("requestfailed", lambda r: refused.add(r.url) if not r.url.startswith("data:") else None)
    response = page.goto("/api/v1/docs/")
    assert "script-src 'self';" in response.headers["content-security-policy"]
    page.locator("h1", has_text="KeyCore API").wait_for()
    page.locator("h2", has_text="Encrypt a document for a tenant").wait_for()
    page.locator("h2", has_text="Create up to 1,000 tenants").wait_for()
    page.screenshot(path=str(page.results_dir / "api-docs.png"))  # the first screen; the whole page is ~35k px
    assert loaded == {urlsplit(live_server.url).netloc}
    assert not refused, refused
    assert not errors, errors  # no request refused by the policy, no script error
