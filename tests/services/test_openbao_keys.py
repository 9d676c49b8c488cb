"""A tenant's own OpenBao Transit key, end to end: what the tenant does in OpenBao reaches KeyCore.

Through the public services, against a real OpenBao server: revoking KeyCore's
token or AppRole, removing its policy, deleting or soft-deleting the key stops
another KeyCore process within its key-cache lifetime, with the reason; Transit
rotation keeps old data readable and a rekey moves every wrap to the newest
version, after which the tenant can retire the old one.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

import pytest

from keycore.models import KmsConfig, TenantKeyWrap
from keycore.providers.openbao import transit_key_version
from keycore.services import jobs, keyring, keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from tests.factories import make_tenant
from tests.workers import ROOT, process_env

ACTOR = Actor.system("tests")
META = CallMeta(requesting_id="openbao-tests")
#: the key-cache lifetime of the probing process: a revocation inside OpenBao must bite within it
CACHE_TTL = 2.0
#: a loop round of the probe, a KMS round trip and reading its output
SLACK = 1.0

PROBE = """
import sys, time, django
django.setup()
from keycore import errors
from keycore.services.crypto import CallMeta, crypto_encrypt
meta = CallMeta(requesting_id="probe")
while True:
    for tenant in sys.argv[1:]:
        try:
            crypto_encrypt(tenant=tenant, fields={"f": b"x"}, meta=meta)
            code = "ok"
        except errors.KeyCoreError as exc:
            code = exc.code
        print(tenant, code, time.time(), flush=True)
    time.sleep(0.05)
"""


def bring_own_openbao_key(server, external_id: str, *, approle: bool = False):
    """A tenant whose primary key is its own Transit key; returns (tenant, config, key name, credentials)."""
    tenant = make_tenant(external_id, external_id.title())
    key = server.create_key(f"kc-{external_id}")
    if approle:
        role_id, secret_id = server.approle(key)
        settings, _ = server.provider_settings(key, auth_method="approle")
        secrets = {"role_id": role_id, "secret_id": secret_id}
    else:
        settings, secrets = server.provider_settings(key, server.grant(key))
    config = keys.kms_config_create(
        tenant=tenant,
        owner="tenant",
        data=keys.ConfigInput("openbao", "Own OpenBao key", settings, secrets),
        actor=ACTOR,
    )
    job = jobs.job_run(keys.kms_config_make_primary(config=config, actor=ACTOR).pk)
    assert job.state == "succeeded", job.last_error
    assert not TenantKeyWrap.objects.filter(tenant_key__tenant=tenant).exclude(kms_config=config).exists()
    return tenant, config, key, secrets


def revoke_token(server, key, secrets):
    server.admin().auth.token.revoke(secrets["token"])


def remove_policy(server, key, secrets):
    server.admin().sys.delete_policy(key)


def delete_key(server, key, secrets):
    transit = server.admin().secrets.transit
    transit.update_key_configuration(key, deletion_allowed=True)
    transit.delete_key(key)


def soft_delete_key(server, key, secrets):
    server.admin().adapter.delete(f"/v1/transit/keys/{key}/soft-delete")


def shut_out_approle(server, key, secrets):
    admin = server.admin()
    admin.auth.approle.destroy_secret_id(key, secrets["secret_id"])
    admin.sys.revoke_prefix("auth/approle/login")  # the tokens it was issued


#: external id → (how the tenant shuts KeyCore out, AppRole?, the error KeyCore then answers with)
REVOCATIONS = {
    "revoked-token": (revoke_token, False, "kms-access-denied"),
    "removed-policy": (remove_policy, False, "kms-access-denied"),
    "deleted-key": (delete_key, False, "kms-key-not-found"),
    "soft-deleted-key": (soft_delete_key, False, "kms-key-disabled"),
    "approle-shut-out": (shut_out_approle, True, "kms-access-denied"),
}


@pytest.mark.django_db(transaction=True)
def test_a_tenant_shutting_keycore_out_in_openbao_stops_another_process_within_the_cache_lifetime(openbao_server):
    tenants = {
        name: bring_own_openbao_key(openbao_server, name, approle=approle)
        for name, (_, approle, _) in REVOCATIONS.items()
    }
    bring_own_openbao_key(openbao_server, "untouched")
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE, *tenants, "untouched"],
        cwd=ROOT,
        env=process_env(KEYCORE_KEY_CACHE_TTL=str(CACHE_TTL)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in probe.stdout], daemon=True).start()

    def next_line(deadline: float) -> tuple[str, str, float]:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"the probe went quiet: {probe.stderr.read() if probe.poll() is not None else ''}"
            ) from None
        tenant, code, at = line.split()
        return tenant, code, float(at)

    try:
        ready: set[str] = set()
        deadline = time.monotonic() + 60
        while len(ready) < len(tenants) + 1:  # every tenant's key is now in the probe's cache
            tenant, code, _ = next_line(deadline)
            assert code == "ok", (tenant, code)
            ready.add(tenant)
        for name, (revoke, _, _) in REVOCATIONS.items():
            _, _, key, secrets = tenants[name]
            revoke(openbao_server, key, secrets)
        revoked_at = time.time()
        refused: dict[str, tuple[str, float]] = {}
        deadline = time.monotonic() + CACHE_TTL + SLACK + 5
        while len(refused) < len(tenants):
            tenant, code, at = next_line(deadline)
            if tenant == "untouched":
                assert code == "ok", "a tenant that revoked nothing keeps working"
            elif code != "ok":
                refused.setdefault(tenant, (code, at - revoked_at))
            else:
                assert tenant not in refused, f"{tenant} worked again after being refused"
    finally:
        probe.kill()
        probe.wait()

    for name, (_, _, expected) in REVOCATIONS.items():
        code, after = refused[name]
        assert code == expected, (name, code)
        assert after <= CACHE_TTL + SLACK, f"{name}: refused {after:.2f}s after the revocation"
        # the health check says why, for the tenant's and the vendor's portals
        result = keys.kms_config_check(config=KmsConfig.objects.get(pk=tenants[name][1].pk))
        assert (result.ok, result.error_code) == (False, expected), result.detail


@pytest.mark.django_db(transaction=True)
def test_transit_rotation_keeps_data_readable_and_a_rekey_lets_the_tenant_retire_the_old_version(openbao_server):
    tenant, config, key, _ = bring_own_openbao_key(openbao_server, "rotating")
    before = [crypto_encrypt(tenant="rotating", fields={"v": b"before"}, meta=META)]
    transit = openbao_server.admin().secrets.transit
    transit.rotate_key(key)
    keyring.clear_caches()
    assert crypto_decrypt(tenant="rotating", edek=before[0].edek, fields=before[0].fields, meta=META) == {
        "v": b"before"
    }
    keys.tenant_key_create(tenant=tenant, actor=ACTOR)  # a new tenant key version: wrapped under Transit v2
    after = crypto_encrypt(tenant="rotating", fields={"v": b"after"}, meta=META)
    versions = {transit_key_version(bytes(w.wrapped)) for w in TenantKeyWrap.objects.filter(kms_config=config)}
    assert versions == {1, 2}

    # the same Transit key as a second configuration, made primary: its rekey job rewraps under version 2
    settings, secrets = openbao_server.provider_settings(key, openbao_server.grant(key))
    again = keys.kms_config_create(
        tenant=tenant,
        owner="tenant",
        data=keys.ConfigInput("openbao", "Own OpenBao key, rotated", settings, secrets),
        actor=ACTOR,
    )
    assert jobs.job_run(keys.kms_config_make_primary(config=again, actor=ACTOR).pk).state == "succeeded"
    wraps = TenantKeyWrap.objects.filter(tenant_key__tenant=tenant)
    assert {transit_key_version(bytes(w.wrapped)) for w in wraps} == {2}
    assert not wraps.filter(kms_config=config).exists()

    transit.update_key_configuration(key, min_decryption_version=2)  # the tenant retires version 1
    keyring.clear_caches()
    for document, plain in ((before[0], b"before"), (after, b"after")):
        assert crypto_decrypt(tenant="rotating", edek=document.edek, fields=document.fields, meta=META) == {"v": plain}
