"""KeyCore's own database or broker being unreachable is a 503 with Retry-After, never a 500.

The outages here are real refusals: the database connection goes to a port where
nothing listens (or, on SQLite, a file that cannot be opened), the broker to a
closed port. The restart of a real PostgreSQL server under load is in
tests/test_database_restart.py.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from django.db import connection
from django.test import Client

from keycore import client as kc
from tests.providers.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def database_refusing_connections():
    """Every new connection of this process is refused until the block ends."""
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent/keycore/database.sqlite3"
    else:
        connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", str(free_port())
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def _assert_503_problem(response, code: str) -> dict:
    assert response.status_code == 503, response.content[:300]
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) > 0
    body = json.loads(response.content)
    assert body["type"].endswith("/" + code) and body["status"] == 503
    assert b"Traceback" not in response.content
    return body


def test_the_api_answers_503_while_the_database_refuses_connections(make_key, tenant):
    key = make_key()
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/tenants/acme/").status_code == 200
    with database_refusing_connections():
        for path in ("/api/v1/tenants/acme/", "/api/v1/tenants/"):
            _assert_503_problem(client.get(path), "database-unavailable")
        response = client.post(
            "/api/v1/crypto/encrypt",
            {"tenant": "acme", "fields": {"f": "eA=="}, "requesting_id": "tests"},
            content_type="application/json",
        )
        assert response.status_code in (200, 503)  # a cached key may still serve: what fails is a 503
        if response.status_code == 503:
            _assert_503_problem(response, "database-unavailable")
    assert client.get("/api/v1/tenants/acme/").status_code == 200


def test_the_portals_answer_a_503_page_while_the_database_refuses_connections(vendor_admin):
    client = Client(raise_request_exception=False)
    client.force_login(vendor_admin)
    with database_refusing_connections():
        response = client.get("/vendor/")
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert response["Content-Type"].startswith("text/html")
    assert b"briefly unavailable" in response.content
    assert b"Traceback" not in response.content


def test_an_unexpected_error_outside_the_api_views_is_still_a_problem_under_api(make_key, monkeypatch):
    """The last-resort handler answers problem details under /api/ (not the portals' HTML page)."""
    from keycore.api import views

    key = make_key()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views.TenantListView, "dispatch", broken)
    response = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/v1/tenants/")
    assert response.status_code == 500 and response["Content-Type"] == "application/problem+json"
    assert json.loads(response.content)["type"].endswith("/internal-error")


def test_the_api_answers_503_when_the_broker_refuses_the_work_a_change_queues(make_key, tenant, monkeypatch):
    from config.celery import app
    from tests.workers import _reset_pool

    key = make_key()
    closed = f"redis://127.0.0.1:{free_port()}/0"
    # read before the environment changes: Celery prefers the environment to its configuration
    saved = app.conf.broker_url, app.conf.task_always_eager, app.conf.broker_transport_options
    monkeypatch.setenv("CELERY_BROKER_URL", closed)
    app.conf.broker_url = closed
    app.conf.task_always_eager = False
    app.conf.broker_transport_options = {}
    _reset_pool(app)
    try:
        response = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {key}").post(
            "/api/v1/tenants/acme/rekey-jobs/", content_type="application/json"
        )
    finally:
        app.conf.broker_url, app.conf.task_always_eager, app.conf.broker_transport_options = saved
        _reset_pool(app)
    body = _assert_503_problem(response, "broker-unavailable")
    assert "may have been saved" in body["detail"]


def test_the_client_maps_keycores_own_unavailability_to_a_retryable_error():
    for code in ("database-unavailable", "broker-unavailable", "revocation-status-unknown"):
        error = kc.error_from_problem({"type": f"https://keycore.dev/problems/{code}", "status": 503})
        assert type(error) is kc.ServiceUnavailable
    assert type(kc.error_from_problem({"status": 503, "detail": "from a load balancer"})) is kc.ServiceUnavailable
    assert type(kc.error_from_problem({"type": "https://keycore.dev/problems/kms-unreachable"})) is kc.KmsUnavailable
