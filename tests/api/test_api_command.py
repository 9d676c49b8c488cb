"""manage.py create_api_key: the key is printed once, stored only hashed, and works at once."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from keycore.models import ApiKey, AuditEvent
from keycore.services.apikeys import hash_key

pytestmark = pytest.mark.django_db


def run(*args) -> list[str]:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_it_prints_a_working_key_once_and_stores_only_its_hash(api, tenant):
    lines = run("billing-service", "--scope", "crypto", "--tenant", "acme", "--expires-days", "30")
    raw = lines[-1]
    key = ApiKey.objects.get(name="billing-service")
    assert raw.startswith(f"kc_{key.prefix}_") and key.key_hash == hash_key(raw)
    assert raw not in str(ApiKey.objects.values().get(pk=key.pk))
    assert key.scopes == ["crypto"] and [t.external_id for t in key.tenants.all()] == ["acme"]
    assert key.expires_at is not None and "tenants acme" in lines[0]
    assert AuditEvent.objects.filter(action="api_key.created", actor_label="system:create_api_key").exists()
    body = {"tenant": "acme", "fields": {}, "requesting_id": "t"}
    assert api.post("/api/v1/crypto/encrypt", body, key=raw).status == 200


def test_scopes_may_be_repeated_or_comma_separated_and_quiet_prints_only_the_key(api):
    [raw] = run("onboarding", "--scope", "tenants:read,tenants:write", "--scope", "jobs:write", "--quiet")
    assert sorted(ApiKey.objects.get(name="onboarding").scopes) == ["jobs:write", "tenants:read", "tenants:write"]
    assert api.get("/api/v1/tenants/", key=raw).status == 200


def test_it_refuses_unknown_scopes_tenants_and_limits_on_non_crypto_keys(tenant):
    with pytest.raises(CommandError, match="Choose scopes"):
        run("x", "--scope", "admin")
    with pytest.raises(CommandError, match="nobody"):
        run("x", "--scope", "crypto", "--tenant", "nobody")
    with pytest.raises(CommandError, match="Only crypto"):
        run("x", "--scope", "tenants:read", "--tenant", "acme")
    with pytest.raises(CommandError, match="at least 1"):
        run("x", "--scope", "crypto", "--expires-days", "0")
    assert not ApiKey.objects.exists()
