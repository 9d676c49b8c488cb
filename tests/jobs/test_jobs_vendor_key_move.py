"""The vendor-key move job on the engine: a real Celery worker moves tenants with progress, and an outage of the
vendor's KMS (moto's AWS KMS, stopped) pauses the job with the reason; it resumes and loses nothing."""

from __future__ import annotations

import pytest

from keycore.models import KmsConfig, RekeyJob, TenantKeyWrap
from keycore.models.jobs import JobState
from keycore.services import jobs, keyring, vendor_keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.tenants import tenant_create
from tests.workers import wait_for

ACTOR = Actor(label="operator:tests")
META = CallMeta(requesting_id="tests")


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_moves_tenants_onto_a_vendor_key(celery_worker):
    tenants = [tenant_create(external_id=f"t{i}", name=f"T{i}", actor=ACTOR, send=False) for i in range(5)]
    eu = vendor_keys.vendor_key_create(name="EU key", provider="local", settings_={}, secrets={}, actor=ACTOR)
    job, _ = jobs.job_start_vendor_key_move(vendor_key=eu, tenants=tenants, actor=ACTOR)
    try:
        wait_for(lambda: RekeyJob.objects.get(pk=job.pk).state == "succeeded", timeout=60, what="the move job")
    except AssertionError:
        raise AssertionError(celery_worker.output()[-3000:]) from None
    job.refresh_from_db()
    assert (job.done, job.total, job.failed, job.progress_percent) == (5, 5, 0, 100)
    assert KmsConfig.objects.filter(vendor_key=eu, is_primary=True).count() == 5


@pytest.mark.django_db
def test_an_outage_of_the_vendors_kms_pauses_the_move_and_it_resumes_losing_nothing(moto, settings):
    settings.KEYCORE_KMS_TIMEOUT = 1
    tenants = [tenant_create(external_id=f"t{i}", name=f"T{i}", actor=ACTOR, send=False) for i in range(3)]
    documents = [crypto_encrypt(tenant=t.external_id, fields={"f": b"doc"}, meta=META) for t in tenants]
    kms_settings, secrets = moto.provider_settings(moto.create_key())
    aws = vendor_keys.vendor_key_create(
        name="EU AWS key", provider="aws", settings_=kms_settings, secrets=secrets, actor=ACTOR
    )
    job, _ = jobs.job_start_vendor_key_move(vendor_key=aws, tenants=tenants, actor=ACTOR)
    moto.stop()
    with pytest.raises(jobs.ChunkPaused):
        jobs.job_run(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.PAUSED and job.pause_reason and job.done == 0
    # nothing moved, nothing lost: every tenant still on its own KEK, and reading
    for tenant, doc in zip(tenants, documents, strict=True):
        assert KmsConfig.objects.get(tenant=tenant, is_primary=True).vendor_key is None
        assert crypto_decrypt(tenant=tenant.external_id, edek=doc.edek, fields=doc.fields, meta=META)
    moto.start()
    job = jobs.job_run(job.pk)
    assert job.state == JobState.SUCCEEDED and job.done == 3
    keyring.clear_caches()
    for tenant, doc in zip(tenants, documents, strict=True):
        assert KmsConfig.objects.get(tenant=tenant, is_primary=True).vendor_key == aws
        assert crypto_decrypt(tenant=tenant.external_id, edek=doc.edek, fields=doc.fields, meta=META) == {"f": b"doc"}
    assert TenantKeyWrap.objects.filter(kms_config__vendor_key=aws).count() == 3
