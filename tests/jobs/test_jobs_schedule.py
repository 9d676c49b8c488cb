"""Scheduled tenant-key rotation: set-based selection of due tenants, one new version each, never two."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from keycore.models import KmsConfig, Tenant, TenantKey
from keycore.services import keys
from keycore.tasks import rotate_tenant_keys


def _age(tenant, days):
    TenantKey.objects.filter(tenant=tenant).update(created_at=timezone.now() - timedelta(days=days))


def test_it_selects_exactly_the_tenants_whose_period_has_passed(tenant, other_tenant, actor):
    from tests.factories import make_tenant

    never = make_tenant("initech", "Initech")
    suspended = make_tenant("umbrella", "Umbrella")
    revoked = make_tenant("hooli", "Hooli")
    Tenant.objects.filter(pk__in=[tenant.pk, other_tenant.pk, suspended.pk, revoked.pk]).update(key_rotation_days=90)
    Tenant.objects.filter(pk=never.pk).update(key_rotation_days=None)
    Tenant.objects.filter(pk=suspended.pk).update(status="suspended")
    KmsConfig.objects.filter(tenant=revoked).update(state="revoked")
    for t in (tenant, never, suspended, revoked):
        _age(t, 91)
    _age(other_tenant, 89)
    assert keys.tenants_due_for_rotation() == [tenant.pk]
    Tenant.objects.filter(pk=other_tenant.pk).update(key_rotation_days=30)
    assert sorted(keys.tenants_due_for_rotation()) == sorted([tenant.pk, other_tenant.pk])


def test_the_task_rotates_a_due_tenant_once_however_often_it_is_delivered(tenant, actor):
    Tenant.objects.filter(pk=tenant.pk).update(key_rotation_days=90)
    _age(tenant, 100)
    assert rotate_tenant_keys([tenant.pk]) == 1
    assert rotate_tenant_keys([tenant.pk]) == 0
    versions = list(TenantKey.objects.filter(tenant=tenant).order_by("version").values_list("version", "state"))
    assert versions == [(1, "active"), (2, "active")]
    assert keys.tenants_due_for_rotation() == []


def test_the_schedule_is_wired_into_celery_beat():
    from config.celery import app

    app.loader.import_default_modules()
    schedule = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert {"keycore.tasks.rotate_due_tenant_keys", "keycore.tasks.resume_rekey_jobs"} <= schedule
