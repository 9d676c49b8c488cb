"""An OpenBao outage in the middle of a rekey job on real Celery workers: the job pauses and resumes, nothing lost."""

from __future__ import annotations

import time

import pytest

from keycore.models import KmsConfig, RekeyJob, TenantKeyWrap
from keycore.providers.openbao import transit_key_version
from keycore.services import keyring, keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from tests.conftest import require
from tests.providers.servers import ServiceUnavailable, start_openbao_server
from tests.workers import wait_for

META = CallMeta(requesting_id="fault-drill")
ACTOR = Actor.system("fault-drill")


@pytest.fixture
def openbao(tmp_path_factory):
    """An OpenBao server of this test's own, which it may stop and start again."""
    try:
        server = start_openbao_server(tmp_path_factory.mktemp("openbao-outage"))
    except ServiceUnavailable as exc:
        require(False, f"OpenBao: {exc}")
    yield server
    server.stop()


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


def test_an_openbao_outage_pauses_the_job_with_the_reason_and_it_finishes_when_openbao_is_back(worker_pool, openbao):
    from tests.factories import make_tenant

    tenant = make_tenant("acme", "Acme Corporation")
    documents = [(crypto_encrypt(tenant="acme", fields={"v": b"1"}, meta=META), b"1")]
    for version in range(2, 19):
        keys.tenant_key_create(tenant=tenant, actor=ACTOR)
        if version % 6 == 0:
            keyring.clear_caches()
            plain = str(version).encode()
            documents.append((crypto_encrypt(tenant="acme", fields={"v": plain}, meta=META), plain))
    key = openbao.create_key()
    settings_, secrets = openbao.provider_settings(key, openbao.grant(key))
    own = keys.kms_config_create(
        tenant=tenant,
        owner="tenant",
        data=keys.ConfigInput("openbao", "Own OpenBao key", settings_, secrets),
        actor=ACTOR,
    )
    local = KmsConfig.objects.get(tenant=tenant, provider="local")
    worker_pool.start(KEYCORE_JOB_REMOTE_BATCH_SIZE="3", KEYCORE_TEST_FAULTS="sleep:batch_committed:0.3")
    job = keys.kms_config_make_primary(config=own, actor=ACTOR)
    wait_for(lambda: _job(job.pk).done >= 3, timeout=30, interval=0.02, what="the first keys moved")
    openbao.stop()
    paused = _wait_for_state(job.pk, "paused", worker_pool, timeout=30)
    assert paused.pause_reason.startswith("KMS unreachable:"), paused.pause_reason
    assert f"Connection refused by OpenBao at {openbao.url}" in paused.pause_reason
    assert paused.retry_at is not None and 3 <= paused.done < 18
    time.sleep(2.0)  # it keeps retrying with backoff, and stays paused, not failed, while OpenBao is down
    still = _job(job.pk)
    assert (still.state, still.done, still.failed) == ("paused", paused.done, 0)
    assert TenantKeyWrap.objects.filter(kms_config=local).count() == 18, "old wraps kept while paused"
    openbao.start()  # same port, unsealed, same key and token
    job = _wait_for_state(job.pk, "succeeded", worker_pool, timeout=60)
    # 18 versions moved, and the 19th made under the tenant's key when it became primary
    assert (job.done, job.failed, job.total, job.pause_reason) == (19, 0, 19, "")
    moved = TenantKeyWrap.objects.filter(kms_config=own, verified_at__isnull=False)
    assert moved.count() == 19
    assert {transit_key_version(bytes(w.wrapped)) for w in moved} == {1}
    assert not TenantKeyWrap.objects.filter(kms_config=local).exists()
    assert KmsConfig.objects.get(pk=local.pk).state == "decrypt_only"
    keyring.clear_caches()
    for doc, plain in documents:
        assert crypto_decrypt(tenant="acme", edek=doc.edek, fields=doc.fields, meta=META) == {"v": plain}
