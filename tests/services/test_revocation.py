"""Revocation reaches other processes within two seconds; a real Celery worker runs rekey jobs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from keycore.models import KmsConfig, RekeyJob, RevocationEpoch
from keycore.services import keys
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_create
from tests.conftest import require
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


HUNG_LOOP = """
import sys, threading, time, django
django.setup()
from keycore import errors
from keycore.services.crypto import CallMeta, crypto_encrypt
meta = CallMeta(requesting_id="probe")
printing = threading.Lock()

def say(what):
    with printing:
        print(what, time.time(), flush=True)

crypto_encrypt(tenant=sys.argv[1], fields={"f": b"x"}, meta=meta)
say("ready")

def loop():
    while True:
        try:
            crypto_encrypt(tenant=sys.argv[1], fields={"f": b"x"}, meta=meta)
            say("ok")
        except errors.KeyCoreError as exc:
            say(exc.code)
        time.sleep(0.02)

for _ in range(3):
    threading.Thread(target=loop, daemon=True).start()
time.sleep(120)
"""


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_hung_revocation_check_stops_the_other_threads_from_serving_cached_keys():
    """A database that stops answering (here: a lock on the epoch table) must not leave keys in use.

    One thread's read of the revocation epoch hangs; the others refuse once its last
    completed read is more than two intervals old, instead of serving for the cache's
    whole lifetime (5 minutes).
    """
    from django.db import connection, transaction

    require(connection.vendor == "postgresql", "a read that hangs on a table lock needs PostgreSQL")
    tenant = tenant_create(external_id="hung-poll", name="Hung Poll", actor=Actor.system("tests"))
    poll = 0.3
    proc = subprocess.Popen(
        [sys.executable, "-c", HUNG_LOOP, tenant.external_id],
        cwd=ROOT,
        env=process_env(KEYCORE_REVOCATION_POLL=str(poll)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[tuple[str, float]] = []

    def read() -> None:
        for line in proc.stdout:
            words = line.split()
            if len(words) == 2:
                lines.append((words[0], float(words[1])))

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        wait_for(lambda: lines and lines[0][0] == "ready", timeout=60, what="the other process")
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {RevocationEpoch._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            locked_at = time.time()
            wait_for(
                lambda: any(code == "revocation-status-unknown" for code, _ in lines), timeout=10, what="a refusal"
            )
            time.sleep(1.0)
            during = [(code, at) for code, at in lines if at > locked_at]
        served_late = [at - locked_at for code, at in during if code == "ok" and at - locked_at > 2 * poll + 0.5]
        assert not served_late, f"cached keys were served {served_late} s after the revocation check hung"
        assert {code for code, _ in during} <= {"ok", "revocation-status-unknown"}
        released_at = time.time()
        wait_for(lambda: any(code == "ok" and at > released_at for code, at in lines), timeout=10, what="recovery")
    finally:
        proc.kill()
        proc.wait()
