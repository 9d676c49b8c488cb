"""Who may reach which portal: anonymous users sign in, each audience stays in its own portal,
and another tenant's pages are a 404."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_anonymous_users_are_sent_to_sign_in(client, tenant):
    for url in (reverse("vendor:dashboard"), reverse("tenant:overview", args=[tenant.external_id]), reverse("home")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))


def test_a_tenant_member_cannot_reach_the_vendor_portal(client, owner):
    client.force_login(owner)
    response = client.get(reverse("vendor:dashboard"))
    assert response.status_code == 403
    assert b"for the vendor" in response.content


def test_a_tenant_member_sees_only_its_own_tenant(client, owner, tenant, other_tenant):
    client.force_login(owner)
    assert client.get(reverse("tenant:overview", args=[tenant.external_id])).status_code == 200
    assert client.get(reverse("tenant:overview", args=[other_tenant.external_id])).status_code == 404
    assert client.get(reverse("tenant:overview", args=["no-such-tenant"])).status_code == 404


def test_vendor_staff_cannot_use_the_tenant_portal(client, vendor_admin, tenant):
    client.force_login(vendor_admin)
    response = client.get(reverse("tenant:overview", args=[tenant.external_id]))
    assert response.status_code == 403


@pytest.mark.parametrize("who", ["vendor_admin", "vendor_operator", "vendor_auditor"])
def test_every_vendor_role_reads_the_dashboard(client, request, who):
    client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("vendor:dashboard")).status_code == 200


def test_home_sends_each_person_to_their_portal(client, owner, vendor_admin, tenant):
    client.force_login(owner)
    assert client.get(reverse("home"))["Location"] == reverse("tenant:overview", args=[tenant.external_id])
    client.force_login(vendor_admin)
    assert client.get(reverse("home"))["Location"] == reverse("vendor:dashboard")


def test_a_member_of_two_tenants_picks_one_in_the_switcher(client, owner, other_tenant):
    from keycore.models import Membership

    Membership.objects.create(tenant=other_tenant, user=owner, role="auditor")
    client.force_login(owner)
    assert client.get(reverse("home"))["Location"] == reverse("tenant:switch")
    page = client.get(reverse("tenant:switch")).content.decode()
    assert "Acme Corporation" in page and "Globex Industries" in page
    # each tenant is reachable only under its own entry, with that tenant's role
    assert client.get(reverse("tenant:overview", args=["globex"])).context["request"].membership.role == "auditor"
    assert client.get(reverse("tenant:overview", args=["acme"])).context["request"].membership.role == "owner"


@override_settings(KEYCORE_REQUIRE_ADMIN_MFA=True)
def test_administrators_without_mfa_must_enrol_first(client, tenant):
    from keycore.roles import TenantRole, VendorRole
    from tests.factories import make_member, make_staff

    staff = make_staff("nomfa@vendor.example", VendorRole.ADMIN, mfa=False)
    client.force_login(staff)
    assert client.get(reverse("vendor:dashboard"))["Location"] == reverse("mfa_index")
    admin = make_member(tenant, "nomfa@acme.example", TenantRole.ADMIN, mfa=False)
    client.force_login(admin)
    assert client.get(reverse("tenant:overview", args=[tenant.external_id]))["Location"] == reverse("mfa_index")


def test_operators_need_mfa_auditors_do_not_but_a_tenant_can_require_it(client, tenant):
    from keycore.roles import TenantRole, VendorRole
    from tests.factories import make_member, make_staff

    client.force_login(make_staff("op@vendor.example", VendorRole.OPERATOR, mfa=False))
    assert client.get(reverse("vendor:dashboard"))["Location"] == reverse("mfa_index")  # operators can offboard
    client.force_login(make_staff("va@vendor.example", VendorRole.AUDITOR, mfa=False))
    assert client.get(reverse("vendor:dashboard")).status_code == 200
    auditor = make_member(tenant, "aud@acme.example", TenantRole.AUDITOR, mfa=False)
    client.force_login(auditor)
    url = reverse("tenant:overview", args=[tenant.external_id])
    assert client.get(url).status_code == 200
    tenant.require_mfa = True
    tenant.save()
    assert client.get(url)["Location"] == reverse("mfa_index")


def test_offboarded_tenants_disappear_from_their_members_portal(client, owner, tenant):
    tenant.status = "offboarded"
    tenant.save()
    client.force_login(owner)
    assert client.get(reverse("tenant:overview", args=[tenant.external_id])).status_code == 404
