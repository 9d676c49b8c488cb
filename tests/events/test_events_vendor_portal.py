"""Chain verification in the vendor portal: any tenant's chain or the vendor's, for every staff role;
tenant members never get in."""

from __future__ import annotations

import pytest
from django.urls import reverse

from keycore.models import AuditEvent, ChainVerification
from keycore.services.events import chain_verification_run

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("who", ["vendor_admin", "vendor_operator", "vendor_auditor"])
def test_every_staff_role_verifies_a_tenants_chain(client, request, who, tenant):
    client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("vendor:event_chains")).status_code == 200
    response = client.post(reverse("vendor:event_chains"), {"tenant": "acme"})
    verification = ChainVerification.objects.get(tenant=tenant)
    assert response["Location"] == reverse("vendor:event_chain_verification", args=[verification.uid])
    chain_verification_run(verification.pk)
    page = client.get(response["Location"]).content.decode()
    assert "The chain is intact" in page and "Acme Corporation" in page


def test_the_vendor_chain_is_verified_when_no_tenant_is_named(client, vendor_auditor):
    client.force_login(vendor_auditor)
    client.post(reverse("vendor:event_chains"), {"tenant": ""})
    verification = ChainVerification.objects.get()
    assert verification.chain == "vendor" and verification.tenant is None
    chain_verification_run(verification.pk)
    verification.refresh_from_db()
    assert verification.state == "ok"


def test_a_broken_chain_is_listed_with_its_first_broken_event(client, vendor_auditor, tenant):
    victim = AuditEvent.objects.filter(tenant=tenant).order_by("seq").first()
    AuditEvent.objects.filter(pk=victim.pk).delete()
    client.force_login(vendor_auditor)
    client.post(reverse("vendor:event_chains"), {"tenant": "acme"})
    verification = ChainVerification.objects.get(tenant=tenant)
    chain_verification_run(verification.pk)
    partial = client.get(
        reverse("vendor:event_chain_verification", args=[verification.uid]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert f"broken at event {victim.seq}" in partial and "missing" in partial
    listing = client.get(reverse("vendor:event_chains")).content.decode()
    assert "Broken chains found" in listing


def test_an_unknown_tenant_is_explained(client, vendor_auditor):
    client.force_login(vendor_auditor)
    response = client.post(reverse("vendor:event_chains"), {"tenant": "nope"})
    assert response.status_code == 400 and "No tenant has the external id" in response.content.decode()
    assert not ChainVerification.objects.exists()


def test_tenant_members_and_strangers_cannot_reach_it(client, owner, tenant):
    verification = ChainVerification.objects.create(tenant=tenant, chain=f"tenant:{tenant.pk}", requested_by_label="x")
    assert client.get(reverse("vendor:event_chains")).status_code == 302
    client.force_login(owner)
    assert client.get(reverse("vendor:event_chains")).status_code == 403
    assert client.get(reverse("vendor:event_chain_verification", args=[verification.uid])).status_code == 403


def test_the_sidebar_links_it(client, vendor_auditor):
    client.force_login(vendor_auditor)
    page = client.get(reverse("vendor:dashboard")).content.decode()
    assert reverse("vendor:event_chains") in page
