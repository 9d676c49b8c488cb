"""Tenant sovereignty through the vendor bridge: with an API key holding every scope, the vendor still cannot take a
tenant's key away, stop the data moving under it, weaken the tenant's settings or invite itself in. Each refusal is
a 403 ``tenant-sovereignty`` problem, and the attempt is on the tenant's own chain."""

from __future__ import annotations

import pytest
from django.core import mail

from keycore.models import AuditEvent, Invitation, KmsConfig, RekeyJob, Tenant, TenantKey
from keycore.roles import TenantRole
from keycore.services import jobs, keys
from keycore.services.audit import Actor
from keycore.services.keys import ConfigInput
from tests.factories import make_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_actor(tenant):
    return Actor.for_user(make_member(tenant, "owner@acme.example", TenantRole.OWNER))


@pytest.fixture
def own_key(tenant, owner_actor):
    """Acme's own key, primary; the job that moves its older version under it has not run yet."""
    config = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "Acme's own key", {}, {}), actor=Actor.system("t")
    )
    KmsConfig.objects.filter(pk=config.pk).update(owner="tenant")
    job = keys.kms_config_make_primary(config=KmsConfig.objects.get(pk=config.pk), actor=owner_actor)
    return KmsConfig.objects.get(pk=config.pk), job


def _refused(answer, tenant, attempted: str) -> None:
    assert answer.status == 403 and answer.problem_type == "tenant-sovereignty", answer.json
    event = AuditEvent.objects.filter(tenant=tenant, action="vendor.refused").latest("id")
    assert event.changes["attempted"] == [None, attempted]
    assert event.actor_api_key_id is not None, "the key that tried is named"


def test_the_vendor_cannot_put_its_key_back_nor_stop_the_job_moving_data_under_the_tenants(api, tenant, own_key):
    config, job = own_key
    vendor_key = KmsConfig.objects.get(tenant=tenant, owner="vendor")
    _refused(
        api.post(f"/api/v1/tenants/acme/kms-configs/{vendor_key.uid}/make-primary/"), tenant, "kms_config.make_primary"
    )
    _refused(api.post(f"/api/v1/rekey-jobs/{job.uid}/cancel/"), tenant, "rekey_job.cancel")
    created = api.post(
        "/api/v1/tenants/acme/kms-configs/", {"provider": "local", "name": "Sneaky", "make_primary": True}
    )
    _refused(created, tenant, "kms_config.make_primary")
    assert not KmsConfig.objects.filter(name="Sneaky").exists(), "refused before anything was created"
    assert KmsConfig.objects.get(pk=config.pk).is_primary
    assert RekeyJob.objects.get(pk=job.pk).state == "pending"


def test_the_tenants_own_configuration_is_not_the_vendors_to_change(api, tenant, own_key):
    config, _ = own_key
    for action in ("decrypt-only", "retire", "make-primary"):
        answer = api.post(f"/api/v1/tenants/acme/kms-configs/{config.uid}/{action}/")
        assert answer.status in (403, 404), (action, answer.json)
    assert KmsConfig.objects.get(pk=config.pk).state == "active"


def test_suspend_and_reactivate_leave_every_key_where_it_is(api, tenant, own_key):
    config, job = own_key
    jobs.job_run(job.pk)
    before = set(TenantKey.objects.filter(tenant=tenant).values_list("version", "wraps__kms_config_id"))
    assert api.post("/api/v1/tenants/acme/suspend/").status == 200
    assert api.post("/api/v1/tenants/acme/reactivate/").status == 200
    assert set(TenantKey.objects.filter(tenant=tenant).values_list("version", "wraps__kms_config_id")) == before
    assert {c for _, c in before} == {config.pk}


@pytest.mark.parametrize("change", [{"event_retention_days": 1}, {"require_mfa": False}, {"key_cache_seconds": 300}])
def test_the_tenants_own_settings_are_not_the_vendors_once_it_has_an_owner(api, tenant, owner_actor, change):
    Tenant.objects.filter(pk=tenant.pk).update(require_mfa=True, event_retention_days=400)
    answer = api.patch("/api/v1/tenants/acme/", change)
    _refused(answer, tenant, "tenant.update")
    tenant.refresh_from_db()
    assert (tenant.require_mfa, tenant.event_retention_days, tenant.key_cache_seconds) == (True, 400, None)
    assert api.patch("/api/v1/tenants/acme/", {"name": "Acme Corp."}).status == 200


def test_a_new_tenants_defaults_are_set_by_the_vendor(api):
    assert api.post("/api/v1/tenants/", {"external_id": "initech", "name": "Initech"}).status == 201
    answer = api.patch("/api/v1/tenants/initech/", {"event_retention_days": 90, "require_mfa": True})
    assert answer.status == 200 and answer.json["event_retention_days"] == 90


def test_an_invitation_to_a_tenant_with_an_owner_waits_for_the_owners(api, tenant, owner_actor):
    mail.outbox.clear()
    answer = api.post("/api/v1/tenants/acme/invitations/", {"email": "me@vendor-side.example", "role": "owner"})
    assert answer.status == 201 and answer.json["state"] == "awaiting approval"
    assert mail.outbox == []
    invitation = Invitation.objects.get(uid=answer.json["uid"])
    assert api.post(f"/api/v1/tenants/acme/invitations/{invitation.uid}/resend/").status == 409
    assert AuditEvent.objects.filter(tenant=tenant, action="invitation.requested").exists()


def test_key_versions_say_how_much_data_each_holds_and_who_ever_held_it(api, tenant, own_key):
    config, job = own_key
    jobs.job_run(job.pk)
    TenantKey.objects.filter(tenant=tenant, version=1).update(documents=41)
    answer = api.get("/api/v1/tenants/acme/key-versions/")
    assert answer.status == 200
    rows = {row["version"]: row for row in answer.json["results"]}
    assert rows[2]["vendor_held"] is False and rows[1]["vendor_held"] is True
    assert rows[1]["documents"] == 41
    assert [w["owner"] for w in rows[1]["wrapped_under"]] == ["tenant"]
    assert [w["config"] for w in rows[2]["wrapped_under"]] == [str(config.uid)]
