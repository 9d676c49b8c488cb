"""The portals answer bad input with a form error or a 400, never a 500: a NUL in a search box, a filter,
a form field or the path, an address longer than email allows (issue 19, item 10). The API's side is
tests/api/test_api_bad_input.py."""

from __future__ import annotations

import pytest
from django.urls import reverse

from keycore.models import Invitation, Tenant

pytestmark = pytest.mark.django_db

NUL = "a\x00b"
LONG_EMAIL = "a" * 250 + "@acme.example"

VENDOR_LISTS = {
    "vendor:tenants": ("q", "status", "key_ownership", "provider", "health", "sort", "cursor", "match"),
    "vendor:tenants_export": ("q", "status", "provider"),
    "vendor:jobs": ("state", "kind", "tenant", "cursor"),
    "vendor:audit": ("tenant", "actor", "action", "cursor"),
    "vendor:api_keys": ("cursor",),
    "vendor:event_chains": ("tenant",),
}


@pytest.mark.parametrize("name", VENDOR_LISTS)
def test_a_nul_in_a_vendor_search_or_filter_is_not_a_server_error(client, vendor_admin, tenant, name):
    client.force_login(vendor_admin)
    for param in VENDOR_LISTS[name]:
        response = client.get(reverse(name), {param: NUL})
        assert response.status_code in (200, 400), (name, param, response.status_code)


def test_a_nul_in_the_tenant_portals_event_filters_is_not_a_server_error(client, owner, tenant):
    client.force_login(owner)
    url = reverse("tenant:events", args=[tenant.external_id])
    for param in ("label", "requesting_id", "api_key", "operation", "result", "actor", "action", "cursor", "before"):
        for view in ("usage", "admin"):
            response = client.get(url, {param: NUL, "view": view})
            assert response.status_code in (200, 400), (param, view, response.status_code)


@pytest.mark.parametrize("path", ["/vendor/tenants/a%00b/", "/vendor/tenants/a%00b/audit/", "/tenant/a%00b/"])
def test_a_nul_in_a_portal_path_is_a_400_page(client, vendor_admin, owner, path):
    client.force_login(vendor_admin if path.startswith("/vendor/") else owner)
    response = client.get(path)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html") and b"Bad request" in response.content


def test_a_nul_in_a_form_field_is_a_form_error(client, vendor_admin):
    client.force_login(vendor_admin)
    response = client.post(reverse("vendor:tenant_create"), {"external_id": "new-one", "name": NUL})
    assert response.status_code in (200, 400)
    assert not Tenant.objects.filter(external_id="new-one").exists()


def test_an_invitation_address_longer_than_email_allows_is_a_form_error(client, vendor_admin, owner, tenant):
    client.force_login(vendor_admin)
    url = reverse("vendor:invitation_create", args=[tenant.external_id])
    response = client.post(url, {"email": LONG_EMAIL, "role": "admin"})
    assert response.status_code < 500
    client.force_login(owner)
    response = client.post(
        reverse("tenant:member_invite", args=[tenant.external_id]), {"email": LONG_EMAIL, "role": "admin"}
    )
    assert response.status_code < 500
    assert not Invitation.objects.filter(email=LONG_EMAIL).exists()
