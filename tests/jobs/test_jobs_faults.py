"""Fault drills on real Celery workers: a killed worker, a KMS outage, a dropped database connection,
two workers on one job. Each ends with every document encrypted before the job still decrypting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import F

from keycore.models import AuditEvent, KmsConfig, RekeyJob, TenantKey, TenantKeyWrap
from keycore.models.jobs import RekeyJobChunk
from keycore.sealing import unseal_secrets
from keycore.services import jobs, keyring, keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.events import chain_verify
from tests.jobs.seeding import kek_fingerprints, seed_local_tenants, wrap_problems
from tests.workers import wait_for

META = CallMeta(requesting_id="fault-drill")
ACTOR = Actor.system("fault-drill")


def _job(job_id: int) -> RekeyJob:
    return RekeyJob.objects.get(pk=job_id)


def _wait_for_state(job_id: int, state: str, pool, timeout: float) -> RekeyJob:
    try:
        wait_for(lambda: _job(job_id).state == state, timeout=timeout, interval=0.05, what=f"job {state}")
    except AssertionError:
        job = _job(job_id)
        raise AssertionError(
            f"job is {job.state} ({job.done}/{job.total}, failed {job.failed}, {job.last_error!r})\n{pool.output()}"
        ) from None
    return _job(job_id)


def _assert_rotated_exactly_once(job: RekeyJob, before: dict[int, str], documents) -> None:
    """The end state of a KEK rotation: every KEK new, no previous one left, every wrap and document good."""
    assert (job.state, job.failed, job.done, job.total) == ("succeeded", 0, len(before), len(before))
    assert job.chunks_done == job.chunks_total
    after = kek_fingerprints()
    assert all(after[pk] != before[pk] for pk in before), "every KEK was rotated"
    for config in KmsConfig.objects.filter(provider="local"):
        secrets = unseal_secrets(config)
        assert secrets.get("rotation") == job.uid.hex and "previous" not in secrets
    assert wrap_problems() == [], "no tenant key lost"
    rotated = AuditEvent.objects.filter(action="kms_config.kek_rotated")
    assert rotated.count() == len(before), "no configuration rotated twice"
    assert rotated.values("tenant_id").distinct().count() == len(before)
    for tenant_id in rotated.values_list("tenant_id", flat=True)[:10]:
        report = chain_verify(tenant_id)
        assert report.ok, report.problem
    keyring.clear_caches()
    for doc in documents:
        assert crypto_decrypt(tenant=doc.tenant, edek=doc.edek, fields=doc.fields, meta=META) == doc.plain


@pytest.mark.slow
def test_a_worker_killed_mid_rotation_of_10000_keys_loses_nothing_and_a_new_worker_finishes(worker_pool):
    started = time.monotonic()
    documents = seed_local_tenants(1000, 10, prefix="kill")
    assert TenantKey.objects.count() == 10_000
    seeded = time.monotonic() - started
    assert seeded < 30, f"seeding took {seeded:.1f}s"
    before = kek_fingerprints()
    first = worker_pool.start(
        KEYCORE_JOB_CHUNK_SIZE="100", KEYCORE_JOB_BATCH_SIZE="10", KEYCORE_TEST_FAULTS="sleep:batch_committed:0.02"
    )
    job = jobs.job_start_kek_rotation(actor=ACTOR)
    wait_for(lambda: _job(job.pk).done >= 150, timeout=60, interval=0.02, what="the rotation under way")
    first.kill()
    at_kill = _job(job.pk)
    assert 150 <= at_kill.done < 1000 and at_kill.state == "running", "killed in the middle of the job"
    half_done = list(
        RekeyJobChunk.objects.filter(job=job, state="running", cursor__lt=F("last_id")).values_list("pk", flat=True)
    )
    # at the moment of the crash every configuration is whole: old KEK with old wraps, or new with new
    assert wrap_problems() == []
    worker_pool.start(KEYCORE_JOB_CHUNK_SIZE="100", KEYCORE_JOB_BATCH_SIZE="10")
    job = _wait_for_state(job.pk, "succeeded", worker_pool, timeout=90)
    _assert_rotated_exactly_once(job, before, documents)
    if half_done:
        assert all(c.attempts >= 2 for c in RekeyJobChunk.objects.filter(pk__in=half_done)), "taken over"


def test_a_kms_outage_pauses_the_job_with_the_reason_and_it_finishes_when_the_kms_is_back(worker_pool, moto):
    from tests.factories import make_tenant

    tenant = make_tenant("acme", "Acme Corporation")
    documents = [crypto_encrypt(tenant="acme", fields={"v": b"1"}, meta=META)]
    for version in range(2, 19):
        keys.tenant_key_create(tenant=tenant, actor=ACTOR)
        if version % 6 == 0:
            keyring.clear_caches()
            documents.append(crypto_encrypt(tenant="acme", fields={"v": str(version).encode()}, meta=META))
    settings_, secrets = moto.provider_settings(moto.create_key())
    own = keys.kms_config_create(
        tenant=tenant, owner="tenant", data=keys.ConfigInput("aws", "Own AWS key", settings_, secrets), actor=ACTOR
    )
    local = KmsConfig.objects.get(tenant=tenant, provider="local")
    worker_pool.start(KEYCORE_JOB_REMOTE_BATCH_SIZE="3", KEYCORE_TEST_FAULTS="sleep:batch_committed:0.3")
    job = keys.kms_config_make_primary(config=own, actor=ACTOR)
    wait_for(lambda: _job(job.pk).done >= 3, timeout=30, interval=0.02, what="the first keys moved")
    moto.stop()
    paused = _wait_for_state(job.pk, "paused", worker_pool, timeout=30)
    assert paused.pause_reason.startswith("KMS unreachable:"), paused.pause_reason
    assert "Could not connect to AWS KMS" in paused.pause_reason
    assert paused.retry_at is not None and 3 <= paused.done < 18
    time.sleep(2.0)  # it keeps retrying with backoff, and stays paused, not failed, while the KMS is down
    still = _job(job.pk)
    assert (still.state, still.done, still.failed) == ("paused", paused.done, 0)
    assert TenantKeyWrap.objects.filter(kms_config=local).count() == 18, "old wraps kept while paused"
    moto.start()
    job = _wait_for_state(job.pk, "succeeded", worker_pool, timeout=60)
    # 18 versions moved, and the 19th made under the tenant's key when it became primary
    assert (job.done, job.failed, job.total, job.pause_reason) == (19, 0, 19, "")
    assert TenantKeyWrap.objects.filter(kms_config=own, verified_at__isnull=False).count() == 19
    assert not TenantKeyWrap.objects.filter(kms_config=local).exists()
    assert KmsConfig.objects.get(pk=local.pk).state == "decrypt_only"
    keyring.clear_caches()
    for doc in documents:
        crypto_decrypt(tenant="acme", edek=doc.edek, fields=doc.fields, meta=META)


def test_a_database_connection_dropped_mid_batch_leaves_nothing_half_written(worker_pool, tmp_path):
    documents = seed_local_tenants(40, 3, prefix="drop")
    before = kek_fingerprints()
    worker_pool.start(
        concurrency=1,
        KEYCORE_JOB_BATCH_SIZE="10",
        KEYCORE_TEST_FAULTS="dbdrop:batch_written:2",
        KEYCORE_TEST_FAULT_DIR=str(tmp_path),
    )
    job = jobs.job_start_kek_rotation(actor=ACTOR)
    marker = wait_for(lambda: next(Path(tmp_path).glob("dbdrop-*"), None), timeout=30, what="the fault point")
    # the worker sits inside its second batch: everything written, nothing committed
    assert _job(job.pk).done == 10
    assert wrap_problems() == []
    assert sum(before[pk] != now for pk, now in kek_fingerprints().items()) == 10
    if connection.vendor == "postgresql":
        pid = int(marker.name.split("-")[1])
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            assert cursor.fetchone()[0] is True
    marker.unlink()
    job = _wait_for_state(job.pk, "succeeded", worker_pool, timeout=60)
    _assert_rotated_exactly_once(job, before, documents)
    log = worker_pool.output()
    assert "retry" in log.lower(), log


def test_two_workers_and_redelivered_tasks_on_one_job_do_no_double_work(worker_pool):
    from keycore.tasks import run_rekey_chunk

    documents = seed_local_tenants(150, 2, prefix="pair")
    before = kek_fingerprints()
    tuning = {
        "KEYCORE_JOB_CHUNK_SIZE": "15",
        "KEYCORE_JOB_BATCH_SIZE": "3",
        "KEYCORE_TEST_FAULTS": "sleep:batch_committed:0.02",
    }
    worker_pool.start(**tuning)
    worker_pool.start(**tuning)
    job = jobs.job_start_kek_rotation(actor=ACTOR)
    wait_for(lambda: _job(job.pk).chunks_total > 0, timeout=30, what="the plan")
    for chunk_id in RekeyJobChunk.objects.filter(job=job).values_list("pk", flat=True):
        run_rekey_chunk.delay(chunk_id)  # as if the broker delivered every chunk once more
    job = _wait_for_state(job.pk, "succeeded", worker_pool, timeout=60)
    _assert_rotated_exactly_once(job, before, documents)
    logs = [w.output() for w in worker_pool.workers]
    assert all("run_rekey_chunk" in log and "succeeded" in log for log in logs), "both workers took chunks"
