import pytest
from django.urls import reverse


def test_liveness_needs_nothing(client):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_checks_database_and_broker(client):
    response = client.get(reverse("readyz"))
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "ok", body
    assert response.status_code == 200


@pytest.mark.django_db
def test_readiness_reports_an_unreachable_broker(client, monkeypatch):
    from config.celery import app
    from tests.workers import _reset_pool

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery lets the environment win over its conf
    old = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    _reset_pool(app)
    try:
        response = client.get(reverse("readyz"))
    finally:
        app.conf.broker_url = old
        _reset_pool(app)
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")


def test_pages_carry_security_headers(client):
    response = client.get(reverse("account_login"))
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_unknown_pages_get_the_404_page(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404


def test_ci_runs_against_postgresql_and_redis(settings):
    """In CI (KEYCORE_REQUIRE_SERVICES=1) the suite must really use PostgreSQL and Redis."""
    import os

    from django.db import connection

    if os.environ.get("KEYCORE_REQUIRE_SERVICES") != "1":
        pytest.skip("only meaningful in CI")
    assert connection.vendor == "postgresql"
    assert settings.CELERY_BROKER_URL.startswith("redis://")
