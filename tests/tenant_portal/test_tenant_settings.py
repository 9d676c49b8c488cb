"""Tenant settings, for owners only: MFA for every member, tenant-key rotation, event retention."""

from __future__ import annotations

import pytest
from django.urls import reverse

from keycore.models import AuditEvent, TenantKey
from keycore.roles import TenantRole
from tests.factories import make_member
from tests.tenant_portal.conftest import reauthenticate, url

pytestmark = pytest.mark.django_db


def form(**changes) -> dict:
    return {"key_rotation_days": "", "event_retention_days": "365", **changes}


def test_only_owners_reach_the_settings(client, owner, admin, member, tenant):
    for user, status in ((owner, 200), (admin, 403), (member, 403)):
        client.force_login(user)
        assert client.get(url("settings", tenant)).status_code == status, user.email
        overview = client.get(url("overview", tenant)).content.decode()
        assert (url("settings", tenant) in overview) is (status == 200)


def test_saving_asks_for_the_password_and_is_audited(client, owner, tenant):
    client.force_login(owner)
    response = client.post(url("settings_save", tenant), form(key_rotation_days="90", event_retention_days="400"))
    assert response["Location"].startswith(reverse("account_reauthenticate"))
    reauthenticate(client)
    response = client.post(url("settings_save", tenant), form(key_rotation_days="90", event_retention_days="400"))
    assert response["Location"] == url("settings", tenant)
    tenant.refresh_from_db()
    assert (tenant.key_rotation_days, tenant.event_retention_days) == (90, 400)
    event = AuditEvent.objects.get(tenant=tenant, action="tenant.updated")
    assert event.changes["key_rotation_days"] == [None, 90] and event.actor_user == owner


def test_out_of_range_values_are_refused_per_field(client, owner, tenant):
    client.force_login(owner)
    reauthenticate(client)
    response = client.post(url("settings_save", tenant), form(key_rotation_days="0", event_retention_days="99999"))
    assert response.status_code == 400
    assert set(response.context["form"].errors) == {"key_rotation_days", "event_retention_days"}


def test_requiring_mfa_sends_members_without_it_to_enrol(client, owner, tenant):
    auditor = make_member(tenant, "no.mfa@acme.example", TenantRole.AUDITOR, mfa=False)
    client.force_login(auditor)
    assert client.get(url("overview", tenant)).status_code == 200
    client.force_login(owner)
    reauthenticate(client)
    client.post(url("settings_save", tenant), form(require_mfa="on"))
    tenant.refresh_from_db()
    assert tenant.require_mfa
    client.force_login(auditor)
    assert client.get(url("overview", tenant))["Location"] == reverse("mfa_index")


def test_rotate_now_creates_a_new_tenant_key_version(client, owner, tenant):
    client.force_login(owner)
    reauthenticate(client)
    response = client.post(url("rotate_key", tenant), follow=True)
    assert b"Tenant key v2 was created" in response.content
    assert list(TenantKey.objects.for_tenant(tenant).values_list("version", flat=True)) == [2, 1]
    assert b"Current version: v2" in response.content


def test_rotation_is_refused_with_the_reason_while_the_primary_key_is_revoked(client, owner, tenant):
    from keycore.models import KmsConfig
    from keycore.services.audit import Actor
    from keycore.services.keys import kms_config_revoke

    kms_config_revoke(config=KmsConfig.objects.for_tenant(tenant).get(is_primary=True), actor=Actor.system("t"))
    client.force_login(owner)
    reauthenticate(client)
    response = client.post(url("rotate_key", tenant), follow=True)
    assert b"is revoked" in response.content
    assert TenantKey.objects.for_tenant(tenant).count() == 1
