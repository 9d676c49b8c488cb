"""Revocation reaches other processes within two seconds; a real Celery worker runs rekey jobs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from keycore.models import KmsConfig, RekeyJob
from keycore.services import keys
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_create
from tests.workers import ROOT, process_env, wait_for

LOOP = """
import sys, time, django
django.setup()
from keycore import errors
from keycore.services.crypto import CallMeta, crypto_encrypt
meta = CallMeta(requesting_id="probe")
while True:
    try:
        crypto_encrypt(tenant=sys.argv[1], fields={"f": b"x"}, meta=meta)
        print("ok", time.time(), flush=True)
    except errors.KeyCoreError as exc:
        print(exc.code, time.time(), flush=True)
    time.sleep(0.05)
"""


@pytest.mark.django_db(transaction=True)
def test_a_revocation_takes_effect_in_another_process_within_two_seconds():
    actor = Actor.system("tests")
    tenant = tenant_create(external_id="revoke-me", name="Revoke Me", actor=actor)
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP, tenant.external_id],
        cwd=ROOT,
        env=process_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().split()
        assert first and first[0] == "ok", proc.stderr.read() if proc.poll() is not None else first
        # the other process now holds the tenant key in its cache
        keys.kms_config_revoke(config=KmsConfig.objects.get(tenant=tenant, is_primary=True), actor=actor)
        revoked_at = time.time()
        while True:
            code, at = proc.stdout.readline().split()
            if code != "ok":
                break
        assert code == "key-revoked"
        assert float(at) - revoked_at < 2.0
        keys.kms_config_reenable(config=KmsConfig.objects.get(tenant=tenant, is_primary=True), actor=actor)
        reenabled_at = time.time()
        while True:
            code, at = proc.stdout.readline().split()
            if code == "ok":
                break
        assert float(at) - reenabled_at < 2.0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_runs_the_rekey_job_of_a_primary_change(celery_worker):
    actor = Actor.system("tests")
    tenant = tenant_create(external_id="moving", name="Moving", actor=actor)
    for _ in range(3):
        keys.tenant_key_create(tenant=tenant, actor=actor)
    new = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Next", {}, {}), actor=actor
    )
    job = keys.kms_config_make_primary(config=new, actor=actor)
    try:
        wait_for(lambda: RekeyJob.objects.get(pk=job.pk).state == "succeeded", timeout=60, what="the rekey job")
    except AssertionError:
        raise AssertionError(celery_worker.output()[-3000:]) from None
    job.refresh_from_db()
    assert (job.done, job.total, job.failed) == (4, 4, 0)
    assert "run_rekey_job" in celery_worker.output()
