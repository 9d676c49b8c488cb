"""Tenant sovereignty through the vendor portal and the operator's command line: a vendor administrator (and the
operator at a shell) cannot stop the data moving under the tenant's key, nor invite itself into a tenant that has
an owner; each attempt is refused with the reason and is on the tenant's trail."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.urls import reverse

from keycore.models import AuditEvent, Invitation, RekeyJob
from keycore.roles import TenantRole
from tests.factories import make_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def rewrap_to_own_key(tenant, tenant_own_key):
    return RekeyJob.objects.filter(tenant=tenant, target_config=tenant_own_key).latest("id")


def test_staff_cannot_cancel_the_job_moving_data_under_the_tenants_key(as_admin, tenant, rewrap_to_own_key):
    response = as_admin.post(reverse("vendor:job_cancel", args=[rewrap_to_own_key.uid]), follow=True)
    assert "only the tenant can stop it" in response.content.decode()
    assert RekeyJob.objects.get(pk=rewrap_to_own_key.pk).state != "cancelled"
    assert AuditEvent.objects.filter(tenant=tenant, action="vendor.refused").count() == 1


def test_the_operators_command_cannot_cancel_it_either(tenant, rewrap_to_own_key):
    with pytest.raises(CommandError, match="only the tenant can stop it"):
        call_command("rekey", "cancel", str(rewrap_to_own_key.uid))
    assert RekeyJob.objects.get(pk=rewrap_to_own_key.pk).state != "cancelled"
    refused = AuditEvent.objects.get(tenant=tenant, action="vendor.refused")
    assert refused.actor_label == "operator:manage.py"


def test_an_invitation_from_the_vendor_portal_waits_for_the_tenants_owner(as_admin, tenant):
    make_member(tenant, "owner@acme.example", TenantRole.OWNER)
    mail.outbox.clear()
    response = as_admin.post(
        reverse("vendor:invitation_create", args=["acme"]), {"email": "me@vendor.example", "role": "owner"}, follow=True
    )
    assert "waits for one of its owners to approve it" in response.content.decode()
    assert Invitation.objects.get(email="me@vendor.example").awaiting_approval
    assert mail.outbox == []
