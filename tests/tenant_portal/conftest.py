"""Fixtures of the tenant-portal tests: the three people (owner, member = auditor, outsider) plus an
administrator, a real moto AWS KMS endpoint, and the tenant's own AWS configuration on it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import PASSWORD

#: what tests type as an AWS secret access key; no response may ever contain it after it was sent
SECRET = "Wr1teOnly/Secret+NeverShown0123456789abcd"


@pytest.fixture
def admin(tenant):
    from keycore.roles import TenantRole
    from tests.factories import make_member

    return make_member(tenant, "admin@acme.example", TenantRole.ADMIN)


@pytest.fixture
def kms_key(moto) -> str:
    """A fresh symmetric key in moto's KMS; its ARN."""
    return moto.create_key()


def aws_form(moto, key_arn: str, **overrides) -> dict:
    """The POST body of the AWS KMS form for ``key_arn`` on the moto endpoint."""
    data = {
        "config_name": "Acme production key",
        "key_id": key_arn,
        "region": "",
        "endpoint_url": moto.url,
        "access_key_id": "AKIAKEYCORETESTING01",
        "secret_access_key": SECRET,
        "config_rate_limit": "0",
    }
    data.update(overrides)
    return data


@pytest.fixture
def own_config(tenant, moto, kms_key):
    """Acme's own AWS KMS configuration, saved (tested) but not primary."""
    from keycore.models.keys import ConfigOwner
    from keycore.services.audit import Actor
    from keycore.services.keys import ConfigInput, kms_config_create

    settings, secrets = moto.provider_settings(kms_key)
    secrets["secret_access_key"] = SECRET
    return kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.TENANT,
        data=ConfigInput(provider="aws", name="Acme AWS key", settings=settings, secrets=secrets),
        actor=Actor.system("tests"),
    )


def reauthenticate(client, password: str = PASSWORD) -> None:
    """Confirm the password the way a person does (allauth's re-authentication form)."""
    response = client.post(reverse("account_reauthenticate"), {"password": password})
    assert response.status_code == 302, response.content[:500]


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def url(name: str, tenant, **kwargs) -> str:
    return reverse(f"tenant:{name}", kwargs={"tenant": tenant.external_id, **kwargs})
