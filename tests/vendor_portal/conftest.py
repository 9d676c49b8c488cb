"""Vendor-portal test helpers: signing in as staff, re-authenticating for real, a tenant that owns its key."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import PASSWORD


def reauthenticate(client) -> None:
    """Re-enter the password on allauth's page, as a person would before a destructive action."""
    response = client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    assert response.status_code == 302, response.content[:500]


@pytest.fixture
def as_admin(client, vendor_admin):
    client.force_login(vendor_admin)
    return client


@pytest.fixture
def as_operator(client, vendor_operator):
    client.force_login(vendor_operator)
    return client


@pytest.fixture
def as_auditor(client, vendor_auditor):
    client.force_login(vendor_auditor)
    return client


@pytest.fixture
def tenant_own_key(tenant, moto):
    """acme brings its own AWS KMS key and makes it primary (as its administrator would in the tenant portal)."""
    from keycore.models import KmsConfig
    from keycore.services import keys
    from keycore.services.audit import Actor

    settings_, secrets = moto.provider_settings(moto.create_key())
    actor = Actor.system("tenant-admin")
    config = keys.kms_config_create(
        tenant=tenant, owner="tenant", data=keys.ConfigInput("aws", "Acme's AWS key", settings_, secrets), actor=actor
    )
    keys.kms_config_make_primary(config=config, actor=actor)
    return KmsConfig.objects.get(pk=config.pk)
