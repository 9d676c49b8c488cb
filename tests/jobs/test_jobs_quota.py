"""A KMS's request quota holds across workers: two processes share one token bucket (Redis or the database)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.conf import settings

from keycore.models import KmsConfig
from keycore.services.kms_quota import burst, kms_acquire, requests_allowed
from tests.conftest import require
from tests.workers import ROOT, process_env

RATE = 40
PER_PROCESS = 40

TAKER = """
import sys, time, django
django.setup()
from keycore.models import KmsConfig
from keycore.services.kms_quota import kms_acquire
config = KmsConfig.objects.get(pk=int(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(sys.argv[2])):
    kms_acquire(config, 1, using=sys.argv[3])
    print(repr(time.time()), flush=True)
"""


def _limited_config(tenant) -> KmsConfig:
    config = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    KmsConfig.objects.filter(pk=config.pk).update(rate_limit=RATE)
    config.refresh_from_db()
    return config


@pytest.mark.parametrize("backend", ["database", "redis"])
@pytest.mark.django_db(transaction=True)
def test_two_processes_together_stay_within_the_quota(tenant, backend):
    if backend == "redis":
        require(bool(settings.REDIS_URL), "Redis (REDIS_URL) for the shared token bucket")
    config = _limited_config(tenant)
    env = process_env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, str(config.pk), str(PER_PROCESS), backend],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        stamps = sorted(float(line) for proc in procs for line in proc.communicate(timeout=60)[0].split())
    finally:
        for proc in procs:
            proc.kill()
    assert len(stamps) == 2 * PER_PROCESS
    # over any one-second window, no more than the rate (plus the small burst) started
    worst = max(sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps)
    assert worst <= requests_allowed(RATE, 1.0), worst
    # and together they were held back: 80 requests at 40/s take about two seconds, not milliseconds
    assert stamps[-1] - stamps[0] >= (2 * PER_PROCESS - burst(RATE) - 1) / RATE * 0.95


def test_an_unlimited_configuration_never_waits(tenant):
    config = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    assert config.rate_limit == 0
    started = time.monotonic()
    assert sum(kms_acquire(config, 5, using="database") for _ in range(100)) == 0
    assert time.monotonic() - started < 1.0


def test_a_big_request_waits_for_the_tokens_it_borrows(tenant):
    config = _limited_config(tenant)
    slept = []
    kms_acquire(config, 4, sleep=slept.append, using="database")  # the burst of 4 is there
    waited = kms_acquire(config, 20, sleep=slept.append, using="database")
    assert waited == pytest.approx(20 / RATE, rel=0.1)
