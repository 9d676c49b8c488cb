"""Rewrap jobs in process: a tenant's keys move under its new primary key, verified, resumable, exact."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from keycore import errors
from keycore.models import AuditEvent, KmsConfig, RekeyJob, TenantKey, TenantKeyWrap
from keycore.models.jobs import ChunkState, RekeyJobChunk
from keycore.services import jobs, keyring, keys
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.jobs import engine, rewrap
from keycore.services.keys import ConfigInput

META = CallMeta(requesting_id="tests")


def _new_primary(tenant, actor, name="Next"):
    config = keys.kms_config_create(tenant=tenant, owner="vendor", data=ConfigInput("local", name, {}, {}), actor=actor)
    return config, keys.kms_config_make_primary(config=config, actor=actor)


@pytest.fixture
def versions(tenant, actor):
    """Acme with four tenant-key versions and a document under each."""
    docs = [crypto_encrypt(tenant="acme", fields={"n": b"v1"}, meta=META)]
    for n in range(2, 5):
        keys.tenant_key_create(tenant=tenant, actor=actor)
        keyring.clear_caches()
        docs.append(crypto_encrypt(tenant="acme", fields={"n": f"v{n}".encode()}, meta=META))
    return docs


def test_it_moves_every_tenant_key_under_the_new_primary_and_drops_the_old_wraps(tenant, actor, versions):
    old = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    new, job = _new_primary(tenant, actor)
    assert (job.kind, job.state, job.total) == ("rewrap", "pending", 4)
    job = jobs.job_run(job.pk)
    assert (job.state, job.done, job.failed, job.total) == ("succeeded", 4, 0, 4)
    assert job.finished_at and job.started_at and not job.pause_reason
    wraps = TenantKeyWrap.objects.filter(tenant_key__tenant=tenant)
    assert set(wraps.values_list("kms_config_id", flat=True)) == {new.pk}
    assert wraps.filter(verified_at__isnull=False).count() == 4
    assert KmsConfig.objects.get(pk=old.pk).state == "decrypt_only"
    keyring.clear_caches()
    for n, doc in enumerate(versions, start=1):
        assert crypto_decrypt(tenant="acme", edek=doc.edek, fields=doc.fields, meta=META) == {"n": f"v{n}".encode()}
    actions = list(AuditEvent.objects.filter(tenant=tenant, target_id=str(job.uid)).values_list("action", flat=True))
    assert sorted(actions) == ["rekey_job.started", "rekey_job.succeeded"]


def test_a_chunk_run_again_after_it_finished_does_nothing_twice(tenant, actor, versions):
    _, job = _new_primary(tenant, actor)
    jobs.job_run(job.pk)
    before = dict(TenantKeyWrap.objects.filter(tenant_key__tenant=tenant).values_list("pk", "wrapped"))
    chunk = RekeyJobChunk.objects.get(job=job)
    assert jobs.job_run_chunk(chunk.pk, worker="another") is True
    job.refresh_from_db()
    assert (job.done, job.failed) == (4, 0)
    assert dict(TenantKeyWrap.objects.filter(tenant_key__tenant=tenant).values_list("pk", "wrapped")) == before


def test_a_restarted_chunk_resumes_after_its_last_committed_batch(tenant, actor, versions, monkeypatch, settings):
    settings.KEYCORE_JOB_BATCH_SIZE = 1
    new, job = _new_primary(tenant, actor)
    chunk_id = jobs.job_plan(job.pk)[0]
    calls = []
    real = rewrap.Rewrap.run_batch

    def crash_on_third(runner, job_, chunk, worker, cursor):
        calls.append(cursor)
        if len(calls) == 3:
            raise KeyboardInterrupt("worker killed")
        return real(runner, job_, chunk, worker, cursor)

    monkeypatch.setattr(rewrap.Rewrap, "run_batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        jobs.job_run_chunk(chunk_id, worker="first")
    chunk = RekeyJobChunk.objects.get(pk=chunk_id)
    assert (chunk.done, chunk.state) == (2, "running")
    assert TenantKeyWrap.objects.filter(kms_config=new).count() == 2
    monkeypatch.setattr(rewrap.Rewrap, "run_batch", real)
    seen = []
    real_unwrap = keyring.unwrap_raw

    def recording_unwrap(tenant_, key, wraps=None):
        seen.append(key.version)
        return real_unwrap(tenant_, key, wraps)

    monkeypatch.setattr(rewrap, "unwrap_raw", recording_unwrap)
    with pytest.raises(jobs.ChunkBusy):
        jobs.job_run_chunk(chunk_id, worker="second")  # the killed worker's lease has not run out yet
    RekeyJobChunk.objects.filter(pk=chunk_id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert jobs.job_run_chunk(chunk_id, worker="second") is True
    assert seen == [3, 4], "the versions committed before the crash are not unwrapped again"
    job.refresh_from_db()
    assert (job.state, job.done, job.failed) == ("succeeded", 4, 0)


def test_a_second_worker_cannot_take_a_leased_chunk_until_the_lease_runs_out(tenant, actor, versions):
    _, job = _new_primary(tenant, actor)
    chunk_id = jobs.job_plan(job.pk)[0]
    assert engine._claim(chunk_id, "first") is not None
    with pytest.raises(jobs.ChunkBusy) as busy:
        engine._claim(chunk_id, "second")
    assert 0 < busy.value.wait <= engine.lease_seconds() + 1
    RekeyJobChunk.objects.filter(pk=chunk_id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert engine._claim(chunk_id, "second").lease_owner == "second"
    # the first worker, back from a long pause, cannot commit anything any more
    chunk = RekeyJobChunk.objects.get(pk=chunk_id)
    with pytest.raises(engine.LeaseLost):
        rewrap.Rewrap().run_batch(job, chunk, "first", chunk.cursor)
    assert TenantKeyWrap.objects.filter(kms_config=job.target_config).count() == 0


def test_a_new_wrap_that_does_not_verify_is_never_written(tenant, actor, versions, monkeypatch):
    old = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    new, job = _new_primary(tenant, actor)
    provider = keyring.provider_for(KmsConfig.objects.get(pk=new.pk))  # the instance the job will use
    monkeypatch.setattr(provider, "unwrap", lambda wrapped, context: b"\x00" * 32)
    job = jobs.job_run(job.pk)
    assert (job.state, job.done, job.failed) == ("failed", 0, 4)
    assert "did not verify" in job.last_error or "Verification" in job.last_error
    assert not TenantKeyWrap.objects.filter(kms_config=new).exists()
    assert TenantKeyWrap.objects.filter(kms_config=old).count() == 4, "the old wraps stay when the job fails"
    monkeypatch.undo()
    keyring.clear_caches()
    for doc in versions:
        crypto_decrypt(tenant="acme", edek=doc.edek, fields=doc.fields, meta=META)


def test_retry_redoes_only_what_failed(tenant, actor, versions, monkeypatch):
    new, job = _new_primary(tenant, actor)
    provider = keyring.provider_for(KmsConfig.objects.get(pk=new.pk))  # the instance the job will use
    real_wrap = provider.wrap
    version_three = TenantKey.objects.get(tenant=tenant, version=3)

    def refuse_v3(key, context):
        if context.key_version == 3:
            raise errors.KmsAccessDenied("access denied for this one key")
        return real_wrap(key, context)

    monkeypatch.setattr(provider, "wrap", refuse_v3)
    job = jobs.job_run(job.pk)
    assert (job.state, job.done, job.failed) == ("failed", 3, 1)
    assert "v3" in job.last_error and "access denied" in job.last_error
    first_wraps = dict(TenantKeyWrap.objects.filter(kms_config=new).values_list("tenant_key_id", "wrapped"))
    monkeypatch.undo()
    job = jobs.job_retry(job=job, actor=actor)
    assert (job.state, job.done, job.failed) == ("pending", 0, 0)
    job = jobs.job_run(job.pk)
    assert (job.state, job.done, job.failed) == ("succeeded", 4, 0)
    after = dict(TenantKeyWrap.objects.filter(kms_config=new).values_list("tenant_key_id", "wrapped"))
    assert set(after) == set(first_wraps) | {version_three.pk}
    assert all(after[k] == v for k, v in first_wraps.items()), "keys wrapped the first time are not wrapped again"


def test_a_revoked_target_fails_the_job_with_the_reason(tenant, actor, versions):
    new, job = _new_primary(tenant, actor)
    KmsConfig.objects.filter(pk=new.pk).update(state="revoked")
    job = jobs.job_run(job.pk)
    assert job.state == "failed"
    assert "revoked" in job.last_error


def test_a_cancelled_job_stops_and_keeps_what_it_committed(tenant, actor, versions, monkeypatch, settings):
    settings.KEYCORE_JOB_BATCH_SIZE = 1
    new, job = _new_primary(tenant, actor)
    real = rewrap.Rewrap.run_batch

    def cancel_after_first(runner, job_, chunk, worker, cursor):
        result = real(runner, job_, chunk, worker, cursor)
        if not RekeyJob.objects.filter(pk=job_.pk, state="cancelled").exists():
            jobs.job_cancel(job=job_, actor=actor)
        return result

    monkeypatch.setattr(rewrap.Rewrap, "run_batch", cancel_after_first)
    job = jobs.job_run(job.pk)
    assert (job.state, job.done) == ("cancelled", 1)
    assert TenantKeyWrap.objects.filter(kms_config=new).count() == 1
    assert RekeyJobChunk.objects.get(job=job).state != ChunkState.DONE
    with pytest.raises(errors.Conflict):
        jobs.job_cancel(job=job, actor=actor)


def test_a_newer_primary_change_supersedes_the_running_rewrap(tenant, actor, versions):
    _, first = _new_primary(tenant, actor, "Second")
    third, second = _new_primary(tenant, actor, "Third")
    first.refresh_from_db()
    assert first.state == "cancelled" and "Superseded" in first.last_error
    assert jobs.job_run(second.pk).state == "succeeded"
    live = TenantKey.objects.filter(tenant=tenant)
    assert all(TenantKeyWrap.objects.filter(tenant_key=k, kms_config=third).exists() for k in live)
