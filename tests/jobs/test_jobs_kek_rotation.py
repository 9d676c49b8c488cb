"""Vendor-wide KEK rotation in process: a new KEK inside every local configuration, nothing lost."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from keycore import errors
from keycore.crypto.formats import LOCAL_WRAP_KIND, unpack_keyed
from keycore.models import AuditEvent, KmsConfig, RekeyJob, TenantKeyWrap
from keycore.providers.local import LocalProvider
from keycore.sealing import seal_secrets, unseal_secrets
from keycore.services import jobs, keyring, keys
from keycore.services.crypto import CallMeta, crypto_decrypt
from keycore.services.events import chain_verify
from keycore.services.jobs import kek_rotation
from tests.jobs.seeding import kek_fingerprints, seed_local_tenants, wrap_problems

META = CallMeta(requesting_id="tests")


@pytest.fixture
def documents(db, settings):
    settings.KEYCORE_JOB_CHUNK_SIZE = 7
    settings.KEYCORE_JOB_BATCH_SIZE = 3
    return seed_local_tenants(20, 3, prefix="kek")


def _decrypts_all(documents):
    keyring.clear_caches()
    for doc in documents:
        assert crypto_decrypt(tenant=doc.tenant, edek=doc.edek, fields=doc.fields, meta=META) == doc.plain


def test_it_gives_every_vendor_provided_configuration_a_new_kek_and_rewraps_its_keys(documents, actor):
    before = kek_fingerprints()
    job = jobs.job_start_kek_rotation(actor=actor)
    assert (job.kind, job.tenant, job.scope) == ("kek_rotation", None, "every vendor-provided KEK")
    job = jobs.job_run(job.pk)
    assert (job.state, job.done, job.failed, job.total, job.chunks_total) == ("succeeded", 20, 0, 20, 3)
    after = kek_fingerprints()
    assert set(after) == set(before) and all(after[pk] != before[pk] for pk in before)
    for config in KmsConfig.objects.filter(provider="local"):
        secrets = unseal_secrets(config)
        assert "previous" not in secrets, "the old KEK is forgotten once every wrap moved"
        wrapped = config.wraps.values_list("wrapped", flat=True)
        ids = {unpack_keyed(bytes(w), LOCAL_WRAP_KIND).key_id.hex() for w in wrapped}
        assert ids == {after[config.pk]}
    assert wrap_problems() == []
    _decrypts_all(documents)


def test_every_tenant_sees_the_rotation_in_its_own_verified_audit_chain(documents, actor):
    job = jobs.job_run(jobs.job_start_kek_rotation(actor=actor).pk)
    events = AuditEvent.objects.filter(action="kms_config.kek_rotated")
    assert events.count() == 20
    assert len(set(events.values_list("tenant_id", flat=True))) == 20
    event = events.first()
    assert event.changes["tenant_keys_rewrapped"] == [None, 3]
    assert event.changes["job"] == [None, str(job.uid)]
    assert len(event.changes["fingerprint"][1]) == 16
    for tenant_id in events.values_list("tenant_id", flat=True)[:5]:
        report = chain_verify(tenant_id)
        assert report.ok, report.problem


def test_a_rerun_does_not_rotate_a_configuration_twice(documents, actor):
    job = jobs.job_run(jobs.job_start_kek_rotation(actor=actor).pk)
    rotated = kek_fingerprints()
    wraps = dict(TenantKeyWrap.objects.values_list("pk", "wrapped"))
    for chunk in job.chunks.all():
        chunk.cursor, chunk.state = chunk.first_id - 1, "pending"
        chunk.save()
    RekeyJob.objects.filter(pk=job.pk).update(state="running")
    for chunk in job.chunks.all():
        jobs.job_run_chunk(chunk.pk, worker="again")
    assert kek_fingerprints() == rotated
    assert dict(TenantKeyWrap.objects.values_list("pk", "wrapped")) == wraps


def test_a_wrap_that_cannot_be_moved_keeps_its_old_kek_and_fails_its_configuration(documents, actor):
    config = KmsConfig.objects.filter(provider="local").order_by("id")[4]
    wrap = TenantKeyWrap.objects.filter(kms_config=config).order_by("id").first()
    good = bytes(wrap.wrapped)
    TenantKeyWrap.objects.filter(pk=wrap.pk).update(wrapped=good[:-1] + bytes([good[-1] ^ 1]))
    old_id = LocalProvider({}, unseal_secrets(config)).current_key_id
    job = jobs.job_run(jobs.job_start_kek_rotation(actor=actor).pk)
    assert (job.state, job.done, job.failed) == ("failed", 19, 1)
    assert config.tenant.external_id in job.last_error
    provider = LocalProvider({}, unseal_secrets(KmsConfig.objects.get(pk=config.pk)))
    assert provider.previous_key_ids == [old_id], "the KEK the damaged wrap needs is kept"
    # the damage repaired (say, restored from a backup), a retry moves it without rotating anyone again
    TenantKeyWrap.objects.filter(pk=wrap.pk).update(wrapped=good)
    rotated = kek_fingerprints()
    job = jobs.job_run(jobs.job_retry(job=job, actor=actor).pk)
    assert (job.state, job.done, job.failed) == ("succeeded", 20, 0)
    assert kek_fingerprints() == rotated
    assert LocalProvider({}, unseal_secrets(KmsConfig.objects.get(pk=config.pk))).previous_key_ids == []
    assert wrap_problems() == []
    _decrypts_all(documents)


def test_one_tenants_configuration_can_be_rotated_alone(documents, actor):
    config = KmsConfig.objects.filter(provider="local").order_by("id")[2]
    before = kek_fingerprints()
    job = jobs.job_run(jobs.job_start_kek_rotation(actor=actor, config=config).pk)
    assert (job.state, job.total, job.done, job.tenant_id) == ("succeeded", 1, 1, config.tenant_id)
    after = kek_fingerprints()
    assert [pk for pk in before if before[pk] != after[pk]] == [config.pk]


def test_it_refuses_external_kms_keys_and_a_second_rotation_of_the_same_keys(documents, actor):
    config = KmsConfig.objects.filter(provider="local").first()
    KmsConfig.objects.filter(pk=config.pk).update(provider="aws")
    with pytest.raises(errors.InvalidInput, match="external KMS"):
        jobs.job_start_kek_rotation(actor=actor, config=KmsConfig.objects.get(pk=config.pk))
    jobs.job_start_kek_rotation(actor=actor)
    with pytest.raises(errors.Conflict, match="already running"):
        jobs.job_start_kek_rotation(actor=actor)


def test_data_written_during_the_rotation_stays_readable(documents, actor, monkeypatch):
    """A tenant key created between batches lands under whatever KEK the configuration holds then."""
    from keycore.models import Tenant

    real = kek_rotation.KekRotation.run_batch
    created = []

    def create_keys_between_batches(runner, job, chunk, worker, cursor):
        tenant = Tenant.objects.order_by("id")[len(created)]
        created.append(keys.tenant_key_create(tenant=tenant, actor=actor))
        return real(runner, job, chunk, worker, cursor)

    monkeypatch.setattr(kek_rotation.KekRotation, "run_batch", create_keys_between_batches)
    job = jobs.job_run(jobs.job_start_kek_rotation(actor=actor).pk)
    assert job.state == "succeeded" and len(created) > 3
    assert wrap_problems() == []


def test_the_command_starts_and_runs_a_rotation(documents, capsys):
    call_command("rekey", "kek-rotation")
    job = RekeyJob.objects.get(kind="kek_rotation")
    assert str(job.uid) in capsys.readouterr().out
    call_command("rekey", "run", str(job.uid)[:8])
    out = capsys.readouterr().out
    assert "succeeded" in out and "20/20" in out
    assert AuditEvent.objects.get(action="rekey_job.started", target_id=str(job.uid)).actor_label == (
        "operator:manage.py"
    )
    call_command("rekey", "status")
    assert "kek_rotation" in capsys.readouterr().out


def test_replacing_secrets_refuses_to_write_back_what_a_rotation_replaced(documents, actor):
    config = KmsConfig.objects.filter(provider="local").first()
    stale = KmsConfig.objects.get(pk=config.pk)
    rotated = KmsConfig.objects.get(pk=config.pk)
    seal_secrets(rotated, LocalProvider.rotate_kek(unseal_secrets(rotated)))
    rotated.save()
    with pytest.raises(errors.Conflict, match="changed meanwhile"):
        keys.kms_config_replace_secrets(config=stale, secrets={}, actor=actor)
