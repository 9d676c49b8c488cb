"""Suspend, reactivate, offboard and crypto-shred a tenant: confirmed, re-authenticated where destructive, audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from keycore import errors
from keycore.models import AuditEvent, KmsConfig, Tenant, TenantKey
from keycore.services.crypto import CallMeta, crypto_encrypt
from tests.vendor_portal.conftest import reauthenticate

pytestmark = pytest.mark.django_db
META = CallMeta(requesting_id="tests")


def _status(client, transition: str, **extra):
    return client.post(reverse("vendor:tenant_status", args=["acme"]), {"transition": transition, **extra})


def test_suspending_stops_crypto_and_reactivating_restores_it(
    as_operator, tenant, vendor_operator, django_capture_on_commit_callbacks
):
    crypto_encrypt(tenant="acme", fields={"x": b"1"}, meta=META)
    with django_capture_on_commit_callbacks(execute=True):  # the commit empties this process's caches
        response = _status(as_operator, "suspend", reason="unpaid invoices")
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert tenant.status == "suspended"
    with pytest.raises(errors.TenantInactive):
        crypto_encrypt(tenant="acme", fields={"x": b"1"}, meta=META)
    event = AuditEvent.objects.for_tenant(tenant).get(action="tenant.suspend")
    assert event.actor_user == vendor_operator
    assert event.changes == {"status": ["active", "suspended"], "reason": [None, "unpaid invoices"]}
    with django_capture_on_commit_callbacks(execute=True):
        _status(as_operator, "reactivate")
    tenant.refresh_from_db()
    assert tenant.status == "active"
    crypto_encrypt(tenant="acme", fields={"x": b"1"}, meta=META)


def test_the_page_asks_before_suspending(as_admin, tenant):
    page = as_admin.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert 'data-confirm="Suspend Acme Corporation?' in page


def test_a_transition_that_does_not_fit_is_explained(as_admin, tenant):
    response = _status(as_admin, "reactivate")
    assert "cannot reactivate" in as_admin.get(response["Location"]).content.decode()
    assert _status(as_admin, "explode").status_code == 302
    tenant.refresh_from_db()
    assert tenant.status == "active"


def test_offboarding_needs_the_password_again_and_starts_the_grace_period(as_admin, tenant, settings):
    settings.KEYCORE_OFFBOARD_GRACE_DAYS = 30
    response = _status(as_admin, "offboard")
    assert reverse("account_reauthenticate") in response["Location"]
    tenant.refresh_from_db()
    assert tenant.status == "active"
    reauthenticate(as_admin)
    response = _status(as_admin, "offboard", reason="contract ended")
    tenant.refresh_from_db()
    assert tenant.status == "offboarding"
    assert timedelta(days=29, hours=23) < tenant.shred_after - timezone.now() <= timedelta(days=30)
    page = as_admin.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert "30-day grace period" in page and f"{tenant.shred_after:%Y-%m-%d}" in page
    assert "Shred the keys of acme" not in page and "Ask to shred early" in page  # the grace period runs


def test_shredding_needs_the_external_id_typed_and_the_password(as_admin, tenant):
    reauthenticate(as_admin)
    _status(as_admin, "offboard")
    Tenant.objects.filter(pk=tenant.pk).update(shred_after=timezone.now())  # the grace period is over
    url = reverse("vendor:tenant_shred", args=["acme"])
    wrong = as_admin.post(url, {"confirm": "ACME"})
    assert wrong.status_code == 400
    assert "nothing was shredded" in wrong.context["shred_form"].errors["confirm"][0]
    assert KmsConfig.objects.get(tenant=tenant).state != "destroyed"

    response = as_admin.post(url, {"confirm": "acme"})
    assert response.status_code == 302
    config = KmsConfig.objects.get(tenant=tenant)
    assert config.sealed_secrets is None and config.secret_fields_set == []
    assert TenantKey.objects.get(tenant=tenant).state == "destroyed"
    tenant.refresh_from_db()
    assert tenant.status == "offboarded"
    assert AuditEvent.objects.for_tenant(tenant).filter(action="tenant.shredded").exists()
    assert "Crypto-shredded 1 vendor-provided key" in as_admin.get(response["Location"]).content.decode()


def test_shredding_a_tenant_that_is_not_offboarding_is_refused(as_admin, tenant):
    reauthenticate(as_admin)
    response = as_admin.post(reverse("vendor:tenant_shred", args=["acme"]), {"confirm": "acme"}, follow=True)
    assert "Only an offboarding tenant" in response.content.decode()
    assert Tenant.objects.get(pk=tenant.pk).status == "active"
    assert TenantKey.objects.get(tenant=tenant).state == "active"


def test_shredding_asks_for_the_password_first(as_admin, tenant, vendor_admin):
    reauthenticate(as_admin)
    _status(as_admin, "offboard")
    Tenant.objects.filter(pk=tenant.pk).update(shred_after=timezone.now())
    as_admin.logout()
    as_admin.force_login(vendor_admin)  # a new session: no recent password entry
    response = as_admin.post(reverse("vendor:tenant_shred", args=["acme"]), {"confirm": "acme"})
    assert reverse("account_reauthenticate") in response["Location"]
    assert TenantKey.objects.get(tenant=tenant).state == "active"
