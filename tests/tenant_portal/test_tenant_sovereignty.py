"""The tenant's side of sovereignty: its key versions and how much data each holds, retiring a drained one,
its own time-to-dark bound, what the vendor did (and was refused), and approving what the vendor asks for."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from keycore import errors
from keycore.models import Invitation, KmsConfig, RekeyJob, TenantKey
from keycore.roles import VendorRole
from keycore.services import jobs, keys, tenants
from keycore.services.audit import Actor
from keycore.services.keys import ConfigInput
from tests.factories import make_staff
from tests.tenant_portal.conftest import reauthenticate, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def byok(tenant, owner):
    """Acme on its own key (a relabelled local one: the pages care about ownership), the rekey job done."""
    config = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "Acme's own key", {}, {}), actor=Actor.system("t")
    )
    KmsConfig.objects.filter(pk=config.pk).update(owner="tenant")
    job = keys.kms_config_make_primary(config=KmsConfig.objects.get(pk=config.pk), actor=Actor.for_user(owner))
    jobs.job_run(job.pk)
    TenantKey.objects.filter(tenant=tenant, version=1).update(documents=1234)
    TenantKey.objects.filter(tenant=tenant, version=2).update(documents=56)
    return KmsConfig.objects.get(pk=config.pk)


def test_the_versions_page_says_how_much_data_a_pre_byok_backup_could_still_open(client, member, tenant, byok):
    client.force_login(member)
    page = client.get(url("versions", tenant)).content.decode()
    assert "v1: 1234 documents" in page and "was under the vendor's key" in page
    assert "only your keys ever" in page  # v2, made under the tenant's key alone
    assert "What a backup from before your own key could still open" in page
    assert "v1) was once under the vendor" in page
    assert "Retire…" not in page, "an auditor sees, and changes nothing"


def test_an_owner_retires_a_drained_version_for_good(client, owner, tenant, byok):
    TenantKey.objects.filter(tenant=tenant, version=1).update(documents=0)
    TenantKey.objects.filter(tenant=tenant, version=2).update(created_at=timezone.now() - timedelta(hours=1))
    client.force_login(owner)
    page = client.get(url("versions", tenant)).content.decode()
    assert url("version_retire", tenant, version=1) in page and "drained" in page
    confirm = client.get(url("version_retire", tenant, version=1)).content.decode()
    assert "At once" in confirm and "nor any backup of KeyCore" in confirm
    reauthenticate(client)
    assert client.post(url("version_retire", tenant, version=1), {"confirm_name": "Acme"}).status_code == 400
    response = client.post(url("version_retire", tenant, version=1), {"confirm_name": tenant.name})
    job = RekeyJob.objects.get(tenant=tenant, kind="key_retirement")
    assert response["Location"] == url("job", tenant, job=job.uid)
    assert job.params["confirmed_as"] == "drained"
    jobs.job_run(job.pk)
    assert TenantKey.objects.get(tenant=tenant, version=1).state == "destroyed"


def test_the_current_version_cannot_be_retired(client, owner, tenant, byok):
    client.force_login(owner)
    reauthenticate(client)
    response = client.post(url("version_retire", tenant, version=2), {"confirm_name": tenant.name})
    assert response.status_code == 409 and "newest version" in response.content.decode()


def test_the_vendor_actions_page_lists_what_the_vendor_did_and_was_refused(client, member, tenant, byok):
    staff = Actor.for_user(make_staff("ops@vendor.example", VendorRole.OPERATOR))
    tenants.tenant_set_status(tenant=tenant, transition="suspend", actor=staff)
    vendor_key = KmsConfig.objects.get(tenant=tenant, owner="vendor")
    with pytest.raises(errors.TenantSovereignty):
        keys.kms_config_make_primary(config=vendor_key, actor=staff)
    tenants.tenant_set_status(tenant=tenant, transition="reactivate", actor=staff)
    client.force_login(member)
    page = client.get(url("vendor_actions", tenant)).content.decode()
    assert page.count("ops@vendor.example") == 3
    for action in ("tenant.suspend", "vendor.refused", "tenant.reactivate"):
        assert action in page
    assert "kms_config.make_primary" in page and "can never replace it" in page
    assert "kms_config.made_primary" not in page, "the tenant's own actions are not the vendor's"


def test_an_owner_approves_what_the_vendor_asked_for_and_only_then_a_link_goes_out(
    client, owner, admin, tenant, django_capture_on_commit_callbacks
):
    staff = Actor.for_user(make_staff("support@vendor.example", VendorRole.ADMIN))
    invitation, _ = tenants.invitation_create(tenant=tenant, email="help@acme.example", role="admin", actor=staff)
    mail.outbox.clear()
    client.force_login(admin)
    page = client.get(url("members", tenant)).content.decode()
    assert "asked by the vendor" in page and "Approve and send" not in page
    reauthenticate(client)
    client.post(url("invitation_approve", tenant, invitation=invitation.uid))
    assert Invitation.objects.get(pk=invitation.pk).awaiting_approval, "an administrator cannot approve"
    client.force_login(owner)
    assert "Approve and send" in client.get(url("members", tenant)).content.decode()
    reauthenticate(client)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url("invitation_approve", tenant, invitation=invitation.uid))
    assert not Invitation.objects.get(pk=invitation.pk).awaiting_approval
    assert [m.to for m in mail.outbox] == [["help@acme.example"]]


def test_a_tenant_sets_its_own_time_to_dark_and_retirement(client, owner, tenant):
    client.force_login(owner)
    page = client.get(url("settings", tenant)).content.decode()
    assert "now <strong>300 seconds</strong>" in page
    reauthenticate(client)
    form = {"event_retention_days": "365", "key_cache_seconds": "60", "retire_idle_days": "90"}
    response = client.post(url("settings_save", tenant), {**form, "auto_retire_versions": "on"})
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.key_cache_seconds, tenant.retire_idle_days, tenant.auto_retire_versions) == (60, 90, True)
    assert "now <strong>60 seconds</strong>" in client.get(url("settings", tenant)).content.decode()
    assert client.post(url("settings_save", tenant), {**form, "key_cache_seconds": "5"}).status_code == 400
