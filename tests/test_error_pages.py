"""Error pages: KeyCore's own, styled ones, also with DEBUG on as `make run` serves it.

Django's technical pages style themselves inline, which the CSP refuses; a newcomer who
mistyped a URL in the demo saw them unstyled. With DEBUG on, keycore.middleware's
DebugErrorPagesMiddleware answers with the same pages production shows.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory

from keycore.middleware import DebugErrorPagesMiddleware

pytestmark = pytest.mark.django_db


def _is_ours(response) -> bool:
    page = response.content.decode()
    return ("/static/css/keycore.css" in page or "/static/vendor/pico/" in page) and "style=" not in page


@pytest.fixture
def demo(settings):
    settings.DEBUG = True


def test_an_unknown_url_shows_the_styled_not_found_page_in_the_demo(client, demo):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and _is_ours(response)
    assert "There is nothing here" in response.content.decode()
    assert "technical_404" not in response.content.decode() and "<style" not in response.content.decode()


def test_a_views_own_not_found_is_styled_too(client, demo, vendor_admin):
    client.force_login(vendor_admin)
    response = client.get("/vendor/tenants/no-such-tenant/")
    assert response.status_code == 404 and _is_ours(response)


def test_a_missing_slash_is_still_redirected_not_called_not_found(client, demo):
    response = client.get("/vendor")
    assert response.status_code == 301 and response["Location"] == "/vendor/"


def test_the_api_keeps_answering_problem_details(client, demo):
    response = client.get("/api/v1/no-such-endpoint/")
    assert response.status_code == 404 and response["Content-Type"] == "application/problem+json"


def test_a_view_that_refuses_or_breaks_shows_the_styled_page_and_logs_the_traceback(demo, caplog):
    middleware = DebugErrorPagesMiddleware(lambda request: None)
    request = RequestFactory().get("/vendor/")
    refused = middleware.process_exception(request, PermissionDenied("Only administrators may do this."))
    assert refused.status_code == 403 and "Only administrators may do this." in refused.content.decode()
    broken = middleware.process_exception(request, RuntimeError("boom"))
    assert broken.status_code == 500 and "Something went wrong" in broken.content.decode()
    assert "boom" not in broken.content.decode()
    assert any(r.exc_info and r.exc_info[1].args == ("boom",) for r in caplog.records)


def test_without_debug_the_middleware_leaves_errors_to_django(settings):
    settings.DEBUG = False
    middleware = DebugErrorPagesMiddleware(lambda request: None)
    assert middleware.process_exception(RequestFactory().get("/vendor/"), RuntimeError("boom")) is None
