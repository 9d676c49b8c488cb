"""Nobody destroys on a password alone (issue 19, item 5): every vendor role that can change anything needs
MFA; crypto-shredding is for administrators, honours the grace period, and ending it early takes two
administrators (one asks, another approves, both re-authenticated and audited); creating API keys and
inviting or promoting staff ask for the password again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from keycore import errors
from keycore.models import AuditEvent, KmsConfig, Tenant, TenantKey
from keycore.roles import VendorRole
from keycore.services import tenants
from keycore.services.audit import Actor
from tests.factories import make_staff
from tests.vendor_portal.conftest import reauthenticate

pytestmark = pytest.mark.django_db


@pytest.fixture
def second_admin(db):
    return make_staff("second.admin@vendor.example", VendorRole.ADMIN)


@pytest.fixture
def offboarding(tenant):
    return tenants.tenant_set_status(tenant=tenant, transition="offboard", actor=Actor.system("tests"))


def _shredded(tenant) -> bool:
    return TenantKey.objects.get(tenant=tenant).state == "destroyed"


def _post(client, name, data=None, *args):
    return client.post(reverse(f"vendor:{name}", args=args or ["acme"]), data or {})


# --- MFA for every role that can change something ------------------------------------------------


def test_an_operator_without_mfa_is_sent_to_enrol_before_anything(client, tenant):
    operator = make_staff("op.nomfa@vendor.example", VendorRole.OPERATOR, mfa=False)
    client.force_login(operator)
    for response in (
        client.get(reverse("vendor:tenants")),
        client.post(reverse("vendor:tenant_status", args=["acme"]), {"transition": "suspend"}),
        client.post(reverse("vendor:tenant_status", args=["acme"]), {"transition": "offboard"}),
    ):
        assert response.status_code == 302 and response["Location"] == reverse("mfa_index")
    assert Tenant.objects.get(pk=tenant.pk).status == "active"


def test_an_auditor_who_can_only_read_needs_no_mfa(client):
    client.force_login(make_staff("aud.nomfa@vendor.example", VendorRole.AUDITOR, mfa=False))
    assert client.get(reverse("vendor:tenants")).status_code == 200


def test_the_mfa_requirement_can_still_be_turned_off_for_the_demo(client, settings):
    settings.KEYCORE_REQUIRE_ADMIN_MFA = False
    client.force_login(make_staff("op.demo@vendor.example", VendorRole.OPERATOR, mfa=False))
    assert client.get(reverse("vendor:tenants")).status_code == 200


# --- crypto-shredding: administrators, the grace period, dual control ----------------------------


def test_an_operator_cannot_shred_even_after_the_grace_period(as_operator, offboarding, vendor_operator):
    Tenant.objects.filter(pk=offboarding.pk).update(shred_after=timezone.now() - timedelta(days=1))
    reauthenticate(as_operator)
    for name in ("tenant_shred", "tenant_shred_request", "tenant_shred_approve"):
        assert _post(as_operator, name, {"confirm": "acme"}).status_code == 403
    with pytest.raises(errors.PermissionDenied):
        tenants.tenant_shred(tenant=offboarding, actor=Actor.for_user(vendor_operator))
    assert not _shredded(offboarding)


def test_an_administrator_cannot_shred_during_the_grace_period(as_admin, offboarding, vendor_admin):
    reauthenticate(as_admin)
    response = _post(as_admin, "tenant_shred", {"confirm": "acme"})
    assert response.status_code == 302
    assert "The grace period runs until" in as_admin.get(response["Location"]).content.decode()
    with pytest.raises(errors.Conflict, match="grace period"):
        tenants.tenant_shred(tenant=offboarding, actor=Actor.for_user(vendor_admin))
    assert "force" not in tenants.tenant_shred.__code__.co_varnames, "no way to skip the grace period"
    assert not _shredded(offboarding)


def test_shredding_early_takes_a_second_administrators_approval(client, offboarding, vendor_admin, second_admin):
    client.force_login(vendor_admin)
    reauthenticate(client)
    page = client.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert "Ask to shred early" in page and "Shred the keys of acme" not in page
    assert _post(client, "tenant_shred_request", {"reason": "customer asked in writing"}).status_code == 302
    asked = AuditEvent.objects.for_tenant(offboarding).get(action="tenant.shred_early_requested")
    assert asked.actor_user_id == vendor_admin.pk and asked.changes["reason"] == [None, "customer asked in writing"]

    # the one who asked cannot approve: not offered, and refused if posted anyway
    page = client.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert "waiting for another administrator" in page and "Approve: end the grace period now" not in page
    response = _post(client, "tenant_shred_approve")
    assert "another administrator must approve" in client.get(response["Location"]).content.decode()
    assert _post(client, "tenant_shred", {"confirm": "acme"}).status_code == 302
    assert not _shredded(offboarding)
    assert not AuditEvent.objects.filter(action="tenant.shred_early_approved").exists()

    client.force_login(second_admin)
    assert reverse("account_reauthenticate") in _post(client, "tenant_shred_approve")["Location"]
    reauthenticate(client)
    assert _post(client, "tenant_shred_approve").status_code == 302
    approved = AuditEvent.objects.for_tenant(offboarding).get(action="tenant.shred_early_approved")
    assert approved.actor_user_id == second_admin.pk
    assert approved.changes["requested_by"] == [None, vendor_admin.email]
    assert Tenant.objects.get(pk=offboarding.pk).shred_after <= timezone.now()

    assert _post(client, "tenant_shred", {"confirm": "acme"}).status_code == 302
    assert _shredded(offboarding)
    assert KmsConfig.objects.get(tenant=offboarding).sealed_secrets is None


def test_dual_control_needs_people_and_ends_with_a_reactivation(offboarding, vendor_admin, second_admin):
    with pytest.raises(errors.PermissionDenied):
        tenants.tenant_shred_early_request(tenant=offboarding, actor=Actor.system("script"))
    tenants.tenant_shred_early_request(tenant=offboarding, actor=Actor.for_user(vendor_admin))
    with pytest.raises(errors.Conflict):
        tenants.tenant_shred_early_request(tenant=offboarding, actor=Actor.for_user(second_admin))
    # reactivating and offboarding again starts a new grace period, and the old request is gone
    tenants.tenant_set_status(tenant=offboarding, transition="reactivate", actor=Actor.system("tests"))
    tenants.tenant_set_status(tenant=offboarding, transition="offboard", actor=Actor.system("tests"))
    with pytest.raises(errors.Conflict, match="Nobody has asked"):
        tenants.tenant_shred_early_approve(tenant=offboarding, actor=Actor.for_user(second_admin))


def test_an_operator_can_still_offboard_with_mfa_and_the_password(as_operator, tenant):
    reauthenticate(as_operator)
    _post(as_operator, "tenant_status", {"transition": "offboard"})
    assert Tenant.objects.get(pk=tenant.pk).status == "offboarding"


# --- re-authentication for what grants power -----------------------------------------------------


def test_creating_or_rotating_api_keys_and_inviting_or_promoting_staff_ask_for_the_password(as_admin, vendor_operator):
    from keycore.services.apikeys import api_key_create

    key, _ = api_key_create(name="old", scopes=["tenants:read"], actor=Actor.system("tests"))
    staff = vendor_operator.vendor_staff
    attempts = {
        "api_key_create": (reverse("vendor:api_key_create"), {"name": "ci", "scopes": ["tenants:read"]}),
        "api_key_rotate": (reverse("vendor:api_key_rotate", args=[key.uid]), {}),
        "staff_invite": (reverse("vendor:staff_invite"), {"email": "new@vendor.example", "role": "admin"}),
        "staff_role": (reverse("vendor:staff_role", args=[staff.pk]), {"role": "admin"}),
    }
    for name, (url, data) in attempts.items():
        response = as_admin.post(url, data)
        assert response.status_code == 302 and reverse("account_reauthenticate") in response["Location"], name
    staff.refresh_from_db()
    assert staff.role == "operator"
    done = AuditEvent.objects.filter(action__in=["api_key.created", "invitation.created"])
    assert not done.exclude(actor_label="system:tests").exists()

    reauthenticate(as_admin)
    assert as_admin.post(*attempts["staff_role"]).status_code == 302
    staff.refresh_from_db()
    assert staff.role == "admin"
