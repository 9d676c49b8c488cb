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
