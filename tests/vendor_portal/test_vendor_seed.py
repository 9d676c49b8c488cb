"""seed_tenants: bulk tenants that are as usable as ones made by tenant_create."""

from __future__ import annotations

import io
import random

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from keycore.models import AuditEvent, KeyHistoryEntry, KmsConfig, Tenant, TenantKey, TenantKeyWrap
from keycore.sealing import unseal_secrets
from keycore.services import jobs, keyring, keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt

pytestmark = pytest.mark.django_db
META = CallMeta(requesting_id="tests")


def test_seeded_tenants_have_working_keys_and_one_summary_event(db):
    call_command("seed_tenants", 30, "--batch", "7", "--random-seed", "3", stdout=io.StringIO())
    seeded = Tenant.objects.filter(external_id__startswith="seed-")
    assert seeded.count() == 30
    assert sorted(seeded.values_list("external_id", flat=True))[0] == "seed-0000001"
    assert set(seeded.values_list("status", "key_ownership", "primary_provider", "health")) == {
        ("active", "vendor", "local", "ok")
    }
    assert KmsConfig.objects.filter(tenant__in=seeded, is_primary=True, owner="vendor").count() == 30
    assert TenantKey.objects.filter(tenant__in=seeded, version=1, state="active").count() == 30
    assert TenantKeyWrap.objects.filter(tenant_key__tenant__in=seeded).count() == 30
    assert KeyHistoryEntry.objects.filter(tenant__in=seeded).count() == 60
    # each tenant has a KEK of its own, sealed to its own configuration row
    keks = {unseal_secrets(c)["kek"] for c in KmsConfig.objects.filter(tenant__in=seeded)}
    assert len(keks) == 30
    summary = AuditEvent.objects.get(action="tenant.bulk_seeded")
    assert summary.changes["count"] == [None, 30]
    assert not AuditEvent.objects.filter(tenant__in=seeded).exists()

    # a random seeded tenant encrypts and decrypts through the KMS path (no key in any cache yet)
    external_id = random.choice(list(seeded.values_list("external_id", flat=True)))
    keyring.clear_caches()
    sealed = crypto_encrypt(tenant=external_id, fields={"iban": b"DE89 3704 0044 0532 0130 00"}, meta=META)
    keyring.clear_caches()
    assert crypto_decrypt(tenant=external_id, edek=sealed.edek, fields=sealed.fields, meta=META) == {
        "iban": b"DE89 3704 0044 0532 0130 00"
    }


def test_a_seeded_tenant_can_move_to_another_key(db):
    call_command("seed_tenants", 3, stdout=io.StringIO())
    tenant = Tenant.objects.get(external_id="seed-0000002")
    actor = Actor.system("tests")
    new = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Next", {}, {}), actor=actor
    )
    job = keys.kms_config_make_primary(config=new, actor=actor)
    assert jobs.job_run(job.pk).state == "succeeded"
    keyring.clear_caches()
    crypto_encrypt(tenant=tenant.external_id, fields={"x": b"1"}, meta=META)


def test_seeding_again_continues_the_numbering(db):
    call_command("seed_tenants", 2, stdout=io.StringIO())
    call_command("seed_tenants", 2, stdout=io.StringIO())
    assert sorted(Tenant.objects.values_list("external_id", flat=True)) == [
        "seed-0000001",
        "seed-0000002",
        "seed-0000003",
        "seed-0000004",
    ]


def test_it_refuses_a_prefix_that_makes_invalid_external_ids(db):
    with pytest.raises(CommandError):
        call_command("seed_tenants", 2, "--prefix", "has space")
