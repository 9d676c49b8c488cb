"""The password page before a destructive action says which action it confirms, and names its object
only to someone who may see it."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from keycore.models import KmsConfig
from keycore.services.apikeys import api_key_create
from keycore.services.audit import Actor
from tests.tenant_portal.conftest import url

pytestmark = pytest.mark.django_db


def _follow_to_password_page(client, response) -> str:
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_reauthenticate"))
    location = urlsplit(response["Location"])
    return client.get(f"{location.path}?{location.query}").content.decode()


def test_it_names_the_tenant_action_and_its_key(client, owner, tenant, own_config):
    client.force_login(owner)
    page = _follow_to_password_page(client, client.post(url("key_revoke", tenant, config=own_config.uid)))
    assert "You asked to <strong>revoke Acme AWS key</strong>" in page
    assert "Enter your password:" not in page and "Please reauthenticate" not in page
    assert page.count('<label for="id_password">Password</label>') == 1 and 'placeholder="Password"' not in page

    page = _follow_to_password_page(client, client.post(url("key_primary", tenant, config=own_config.uid)))
    assert "make Acme AWS key the primary key of Acme Corporation" in page


def test_it_names_the_vendor_action(client, vendor_admin):
    client.force_login(vendor_admin)
    key, _ = api_key_create(name="billing-service", scopes=["crypto"], actor=Actor.for_user(vendor_admin))
    page = _follow_to_password_page(client, client.post(reverse("vendor:api_key_revoke", args=[key.uid])))
    assert "revoke the API key billing-service" in page


def test_another_tenants_key_is_never_named(client, owner, tenant, other_tenant, outsider):
    foreign = KmsConfig.objects.for_tenant(other_tenant).get()
    client.force_login(owner)
    target = reverse("tenant:key_revoke", kwargs={"tenant": other_tenant.external_id, "config": foreign.uid})
    page = client.get(reverse("account_reauthenticate"), {"next": target}).content.decode()
    assert foreign.name not in page and other_tenant.name not in page
    assert "asks for fresh proof that it is you" in page


def test_an_unknown_or_foreign_next_url_gets_the_general_wording(client, owner):
    client.force_login(owner)
    for target in ("/no-such-page/", "https://evil.example/tenant/acme/keys/", ""):
        page = client.get(reverse("account_reauthenticate"), {"next": target}).content.decode()
        assert "You asked to" not in page and "asks for fresh proof that it is you" in page
