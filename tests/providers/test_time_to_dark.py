"""Time to dark when a tenant pulls its key inside its own KMS, without telling KeyCore.

The key object is destroyed in SoftHSM2, or revoked in the PyKMIP server, while two other KeyCore processes
encrypt and decrypt the tenant's data with the key in their cache. Every process must refuse within the
key-cache lifetime (a few seconds here, ``KEYCORE_KEY_CACHE_TTL``; 30–300 s for a tenant that sets its own),
with a typed problem that says the key is gone or unreachable — never an internal error. moto does not enforce
AWS key states, so AWS is not part of this drill.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from keycore.models import KmsConfig
from keycore.services import jobs, keyring, keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_encrypt
from keycore.services.keys import ConfigInput
from keycore.services.tenants import tenant_create
from tests.workers import ROOT, process_env

#: the key-cache lifetime of the processes under test (the operator's bound; a tenant may only shorten it)
TTL = 3.0
#: what a refusal may take beyond the lifetime: the cache check, one KMS round trip, the loop's own pause
SLACK = 2.0
#: the problem types a refusal may have; anything else (internal-error above all) fails the drill
DARK = {"kms-key-not-found", "kms-key-disabled", "kms-access-denied", "kms-unreachable", "key-revoked"}

LOOP = """
import sys, time, django
django.setup()
from keycore import errors
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
meta = CallMeta(requesting_id="time-to-dark")
doc = crypto_encrypt(tenant=sys.argv[1], fields={"f": b"x"}, meta=meta)
while True:
    try:
        crypto_encrypt(tenant=sys.argv[1], fields={"f": b"x"}, meta=meta)
        crypto_decrypt(tenant=sys.argv[1], edek=doc.edek, fields=doc.fields, meta=meta)
        print("ok", time.time(), flush=True)
    except errors.KeyCoreError as exc:
        print(exc.code, time.time(), flush=True)
    except Exception as exc:  # what a web process would answer as 500
        print("internal-error", time.time(), type(exc).__name__, flush=True)
    time.sleep(0.05)
"""


def _tenant_on_its_own_key(provider: str, settings_: dict, secrets: dict):
    actor = Actor.system("tests")
    tenant = tenant_create(external_id=f"dark-{uuid.uuid4().hex[:6]}", name="Goes Dark", actor=actor)
    config = keys.kms_config_create(
        tenant=tenant, owner="tenant", data=ConfigInput(provider, "Own key", settings_, secrets), actor=actor
    )
    job = keys.kms_config_make_primary(config=config, actor=actor)
    assert jobs.job_run(job.pk).state == "succeeded"
    assert KmsConfig.objects.get(pk=config.pk).is_primary
    return tenant


def _processes(tenant, count: int = 2) -> list[subprocess.Popen]:
    env = process_env(KEYCORE_KEY_CACHE_TTL=str(TTL), KEYCORE_KEYUSE_AUTOFLUSH="0")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOOP, tenant.external_id],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        line = proc.stdout.readline().split()
        assert line and line[0] == "ok", proc.stderr.read() if proc.poll() is not None else line
    return procs


def _time_to_refusal(proc: subprocess.Popen, since: float, limit: float) -> tuple[str, float]:
    """The first answer that is not ok after ``since``: its problem type and how long after ``since`` it came."""
    deadline = time.monotonic() + limit + 10
    while time.monotonic() < deadline:
        parts = proc.stdout.readline().split()
        if not parts:
            raise AssertionError(f"the process ended: {proc.stderr.read()[-2000:]}")
        if parts[0] != "ok" and float(parts[1]) >= since:
            return parts[0], float(parts[1]) - since
    raise AssertionError(f"still serving the tenant's data {limit + 10:.0f}s after its key was pulled")


def _drill(tenant, pull) -> None:
    procs = _processes(tenant)
    try:
        time.sleep(0.5)  # every process holds the key in its cache and uses it
        pulled = time.time()
        pull()
        for proc in procs:
            code, after = _time_to_refusal(proc, pulled, TTL + SLACK)
            assert code in DARK, f"refused with {code!r}, not a typed 'key gone' problem"
            assert after <= TTL + SLACK, f"{after:.1f}s to refuse, over the {TTL:.0f}s cache lifetime"
            for _ in range(5):  # and it stays dark
                parts = proc.stdout.readline().split()
                assert parts[0] in DARK, parts
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.django_db(transaction=True)
def test_a_key_destroyed_in_the_tenants_hsm_goes_dark_within_the_cache_lifetime(softhsm_token):
    label = f"dark-{uuid.uuid4().hex[:8]}"
    softhsm_token.create_aes_key(label)
    tenant = _tenant_on_its_own_key("pkcs11", *softhsm_token.provider_settings(label))
    _drill(tenant, lambda: softhsm_token.destroy_key(label))


@pytest.mark.django_db(transaction=True)
def test_a_key_revoked_in_the_tenants_kmip_server_goes_dark_within_the_cache_lifetime(kmip_server):
    uid = kmip_server.create_key()
    tenant = _tenant_on_its_own_key("kmip", *kmip_server.provider_settings(uid))
    _drill(tenant, lambda: kmip_server.revoke(uid))


@pytest.mark.django_db(transaction=True)
def test_a_tenants_own_bound_shortens_how_long_its_key_stays_cached(softhsm_token, settings):
    label = f"bound-{uuid.uuid4().hex[:8]}"
    softhsm_token.create_aes_key(label)
    tenant = _tenant_on_its_own_key("pkcs11", *softhsm_token.provider_settings(label))
    settings.KEYCORE_KEY_CACHE_TTL = 300
    keyring.clear_caches()
    tenant.key_cache_seconds = 30
    tenant.save(update_fields=["key_cache_seconds"])
    crypto_encrypt(tenant=tenant.external_id, fields={"f": b"x"}, meta=CallMeta(requesting_id="t"))
    cache = keyring.key_cache()
    entry = cache._entries[(tenant.pk, 2)]
    assert entry[1] - time.monotonic() == pytest.approx(30, abs=2), "the tenant's 30 s, not the operator's 300 s"
