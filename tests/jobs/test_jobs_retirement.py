"""Tenant-key retirement: an old version turns decrypt-only, and is destroyed only once confirmed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from keycore import errors
from keycore.crypto.envelope import edek_key_version
from keycore.models import KeyHistoryEntry, RekeyJob, TenantKey, TenantKeyWrap
from keycore.services import jobs, keyring, keys
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt, crypto_rekey

META = CallMeta(requesting_id="tests")


@pytest.fixture
def two_versions(tenant, actor):
    old_doc = crypto_encrypt(tenant="acme", fields={"f": b"old"}, meta=META)
    keys.tenant_key_create(tenant=tenant, actor=actor)
    keyring.clear_caches()
    return old_doc


def _v1(tenant):
    return TenantKey.objects.get(tenant=tenant, version=1)


def test_it_waits_for_a_confirmation_with_the_reason_shown(tenant, actor, two_versions):
    job = jobs.job_start_key_retirement(key=_v1(tenant), actor=actor, grace_days=30)
    assert (job.kind, job.state, job.total) == ("key_retirement", "paused", 1)
    assert "rekeyed its data off tenant key v1" in job.pause_reason and "grace period" in job.pause_reason
    assert _v1(tenant).state == "retiring"
    # still decrypts, and the application can move the data to the newest version
    assert crypto_decrypt(tenant="acme", edek=two_versions.edek, fields=two_versions.fields, meta=META)
    moved = crypto_rekey(tenant="acme", edeks=[two_versions.edek], meta=META)[0].value
    assert edek_key_version(moved) == 2
    assert jobs.job_plan(job.pk) == [], "nothing runs before the confirmation"


def test_confirmed_as_rekeyed_it_destroys_the_version_and_its_wraps(tenant, actor, two_versions):
    moved = crypto_rekey(tenant="acme", edeks=[two_versions.edek], meta=META)[0].value
    job = jobs.job_start_key_retirement(key=_v1(tenant), actor=actor)
    job = jobs.job_confirm_key_retirement(job=job, actor=actor, rekeyed=True)
    assert job.state == "pending"
    job = jobs.job_run(job.pk)
    assert (job.state, job.done, job.failed) == ("succeeded", 1, 0)
    key = _v1(tenant)
    assert key.state == "destroyed" and key.destroyed_at is not None
    assert not TenantKeyWrap.objects.filter(tenant_key=key).exists()
    assert KeyHistoryEntry.objects.filter(tenant=tenant, action="key_destroyed").exists()
    keyring.clear_caches()
    with pytest.raises(errors.KeyDestroyed):
        crypto_decrypt(tenant="acme", edek=two_versions.edek, fields=two_versions.fields, meta=META)
    assert crypto_decrypt(tenant="acme", edek=moved, fields=two_versions.fields, meta=META) == {"f": b"old"}


def test_the_tenant_alone_may_confirm_only_after_the_grace_period(tenant, actor, two_versions):
    job = jobs.job_start_key_retirement(key=_v1(tenant), actor=actor, grace_days=30)
    with pytest.raises(errors.Conflict, match="grace period ends"):
        jobs.job_confirm_key_retirement(job=job, actor=actor, rekeyed=False)
    RekeyJob.objects.filter(pk=job.pk).update(
        params={**job.params, "grace_until": (timezone.now() - timedelta(seconds=1)).isoformat()}
    )
    job = jobs.job_confirm_key_retirement(job=RekeyJob.objects.get(pk=job.pk), actor=actor, rekeyed=False)
    assert job.params["confirmed_as"] == "grace period over"
    assert jobs.job_run(job.pk).state == "succeeded"
    assert _v1(tenant).state == "destroyed"


def test_the_newest_version_cannot_be_retired(tenant, actor, two_versions):
    with pytest.raises(errors.Conflict, match="newest version"):
        jobs.job_start_key_retirement(key=TenantKey.objects.get(tenant=tenant, version=2), actor=actor)


def test_cancelling_a_retirement_makes_the_key_active_again(tenant, actor, two_versions):
    job = jobs.job_start_key_retirement(key=_v1(tenant), actor=actor)
    jobs.job_cancel(job=job, actor=actor)
    assert _v1(tenant).state == "active"
    with pytest.raises(errors.Conflict):
        jobs.job_confirm_key_retirement(job=RekeyJob.objects.get(pk=job.pk), actor=actor, rekeyed=True)


def test_the_last_decrypt_under_a_retiring_version_is_shown(tenant, actor, two_versions):
    from keycore.selectors import tenant_key_last_decrypt
    from keycore.services.keyuse import recorder

    key = _v1(tenant)
    assert tenant_key_last_decrypt(key) is None
    crypto_decrypt(tenant="acme", edek=two_versions.edek, fields=two_versions.fields, meta=META)
    recorder.flush()
    assert tenant_key_last_decrypt(key) is not None
    assert tenant_key_last_decrypt(TenantKey.objects.get(tenant=tenant, version=2)) is None


# --- drained or idle: retired without waiting ----------------------------------------------------------


def _settled(tenant, minutes=20):
    """As if the newest version appeared ``minutes`` ago: every use under older ones is counted by now."""
    TenantKey.objects.filter(tenant=tenant, version=2).update(created_at=timezone.now() - timedelta(minutes=minutes))


def test_a_drained_version_is_retired_without_waiting(tenant, actor, two_versions):
    from keycore.services.keyuse import recorder

    moved = crypto_rekey(tenant="acme", edeks=[two_versions.edek], meta=META)[0].value
    recorder.flush()
    assert dict(TenantKey.objects.filter(tenant=tenant).values_list("version", "documents")) == {1: 0, 2: 1}
    assert jobs.retirement_readiness(_v1(tenant)) is None, "counts are trusted only once uses had time to arrive"
    _settled(tenant)
    assert jobs.retirement_readiness(_v1(tenant)) == "drained"
    job = jobs.job_start_key_retirement(key=_v1(tenant), actor=actor)
    assert (job.state, job.params["confirmed_as"]) == ("pending", "drained")
    assert jobs.job_run(job.pk).state == "succeeded" and _v1(tenant).state == "destroyed"
    keyring.clear_caches()
    assert crypto_decrypt(tenant="acme", edek=moved, fields=two_versions.fields, meta=META) == {"f": b"old"}


def test_a_version_with_documents_waits_unless_idle_for_the_tenants_period(tenant, actor, two_versions):
    from keycore.services.keyuse import recorder

    recorder.flush()
    assert _v1(tenant).documents == 1
    _settled(tenant, minutes=60 * 24 * 8)
    assert jobs.retirement_readiness(_v1(tenant)) is None
    tenant.retire_idle_days = 7
    tenant.save(update_fields=["retire_idle_days"])
    assert jobs.retirement_readiness(_v1(tenant)) == "idle"
    crypto_decrypt(tenant="acme", edek=two_versions.edek, fields=two_versions.fields, meta=META)
    recorder.flush()
    assert jobs.retirement_readiness(_v1(tenant)) is None, "a decrypt yesterday is not idle"


def test_automatic_retirement_only_for_tenants_that_opted_in(tenant, other_tenant, actor, two_versions):
    keys.tenant_key_create(tenant=other_tenant, actor=actor)  # both tenants: a drained v1 under a settled v2
    TenantKey.objects.exclude(version=1).update(created_at=timezone.now() - timedelta(minutes=30))
    assert jobs.retire_ready_versions() == []
    tenant.auto_retire_versions = True
    tenant.save(update_fields=["auto_retire_versions"])
    started = jobs.retire_ready_versions()
    assert [(j.tenant_id, j.params["version"], j.state) for j in started] == [(tenant.pk, 1, "pending")]
    assert started[0].started_by_label == "system:auto-retirement"
    assert jobs.retire_ready_versions() == [], "a retirement under way is not started twice"
