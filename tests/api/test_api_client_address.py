"""Behind a reverse proxy, the API records the client's real address, not the first X-Forwarded-For hop."""

from __future__ import annotations

import pytest

from keycore.models import AuditEvent

ATTACKER = "203.0.113.9"


@pytest.fixture
def one_proxy(settings):
    settings.KEYCORE_TRUSTED_PROXY_COUNT = 1


@pytest.mark.django_db
def test_api_audit_events_record_the_real_client(api, one_proxy):
    answer = api.request(
        "POST",
        "/api/v1/tenants/",
        {"external_id": "initech", "name": "Initech"},
        headers={"X-Forwarded-For": f"192.0.2.1, {ATTACKER}"},
    )
    assert answer.status == 201, answer.json
    assert AuditEvent.objects.get(action="tenant.created").source_ip == ATTACKER
