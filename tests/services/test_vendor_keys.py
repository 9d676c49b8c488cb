"""Vendor keys through the services: named shared keys, the default for new tenants, tenants moved onto one by
a rekey job, and everything tenant sovereignty says still holding. The same key in each real KMS (moto, PyKMIP,
SoftHSM2, OpenBao) is in tests/providers/test_vendor_key_binding.py."""

from __future__ import annotations

import pytest
from django.utils import timezone

from keycore import errors, selectors
from keycore.models import AuditEvent, KmsConfig, RekeyJob, Tenant, TenantKeyWrap, VendorKey
from keycore.models.jobs import JobKind, JobState
from keycore.models.keys import ConfigOwner, ConfigState
from keycore.roles import VendorRole
from keycore.sealing import unseal_secrets
from keycore.services import jobs, keyring, keys, vendor_keys
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.keys import ConfigInput
from keycore.services.tenants import tenant_create
from tests.factories import make_member, make_staff

META = CallMeta(requesting_id="tests")


@pytest.fixture
def vendor(db):
    return Actor.for_user(make_staff("ops@vendor.example", VendorRole.ADMIN))


def make_local_key(actor, name="EU key", **kwargs) -> VendorKey:
    return vendor_keys.vendor_key_create(name=name, provider="local", settings_={}, secrets={}, actor=actor, **kwargs)


def make(external_id, actor, **kwargs):
    return tenant_create(external_id=external_id, name=external_id.title(), actor=actor, send=False, **kwargs)


def test_a_vendor_key_holds_its_kek_sealed_and_never_in_clear(vendor):
    vendor_key = make_local_key(vendor)
    secret = unseal_secrets(vendor_key)["kek"]
    stored = VendorKey.objects.filter(pk=vendor_key.pk).values_list("sealed_secrets", flat=True).get()
    assert secret.encode() not in bytes(stored)
    assert vendor_key.health == "ok"
    event = AuditEvent.objects.get(action="vendor_key.created")
    assert secret not in str(event.changes)


def test_a_vendor_keys_sealed_secrets_cannot_be_moved_onto_a_configuration(vendor, tenant):
    vendor_key = make_local_key(vendor)
    config = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    KmsConfig.objects.filter(pk=config.pk).update(sealed_secrets=vendor_key.sealed_secrets)
    with pytest.raises(errors.KeyCoreError):
        unseal_secrets(KmsConfig.objects.get(pk=config.pk))


def test_new_tenants_get_the_default_vendor_key_and_a_request_may_name_another(vendor):
    eu = make_local_key(vendor, "EU key", make_default=True)
    us = make_local_key(vendor, "US key")
    first = make("first", vendor)
    second = make("second", vendor, vendor_key=us)
    assert KmsConfig.objects.get(tenant=first, is_primary=True).vendor_key == eu
    assert KmsConfig.objects.get(tenant=second, is_primary=True).vendor_key == us
    # both work from the first moment, through the one shared KEK each
    for tenant in (first, second):
        out = crypto_encrypt(tenant=tenant.external_id, fields={"f": b"secret"}, meta=META)
        assert crypto_decrypt(tenant=tenant.external_id, edek=out.edek, fields=out.fields, meta=META) == {
            "f": b"secret"
        }


def test_without_any_vendor_key_a_new_tenant_still_gets_a_kek_of_its_own(vendor):
    tenant = make("plain", vendor)
    config = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    assert config.vendor_key is None and config.provider == "local" and config.sealed_secrets


def test_only_one_default_and_a_retired_key_cannot_be_it(vendor):
    eu = make_local_key(vendor, "EU key", make_default=True)
    us = make_local_key(vendor, "US key")
    vendor_keys.vendor_key_make_default(vendor_key=us, actor=vendor)
    assert list(VendorKey.objects.filter(is_default=True)) == [us]
    vendor_keys.vendor_key_retire(vendor_key=eu, actor=vendor)
    with pytest.raises(errors.Conflict):
        vendor_keys.vendor_key_make_default(vendor_key=eu, actor=vendor)
    assert AuditEvent.objects.filter(action="vendor_key.made_default").count() == 2


def test_one_tenants_wrap_copied_onto_another_tenant_does_not_open(vendor):
    shared = make_local_key(vendor, make_default=True)
    alice, bob = make("alice", vendor), make("bob", vendor)
    alice_wrap = TenantKeyWrap.objects.get(tenant_key__tenant=alice)
    bob_wrap = TenantKeyWrap.objects.get(tenant_key__tenant=bob)
    assert alice_wrap.kms_config.vendor_key == bob_wrap.kms_config.vendor_key == shared
    provider = keyring.provider_for(bob_wrap.kms_config)
    # the attack at the provider: Alice's wrap presented as Bob's v1, under the very same KEK
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(bytes(alice_wrap.wrapped), keyring.wrap_context(bob_wrap.kms_config, bob, 1))
    # and through the database: Alice's wrap written over Bob's row
    TenantKeyWrap.objects.filter(pk=bob_wrap.pk).update(wrapped=alice_wrap.wrapped)
    keyring.clear_caches()
    with pytest.raises(errors.KeyCoreError):
        crypto_encrypt(tenant="bob", fields={"f": b"x"}, meta=META)


def test_assigning_tenants_moves_them_with_their_data_and_retires_what_they_used(vendor):
    old = [make(f"t{i}", vendor) for i in range(3)]  # software KEKs of their own
    documents = {t.external_id: crypto_encrypt(tenant=t.external_id, fields={"f": b"doc"}, meta=META) for t in old}
    keys.tenant_key_create(tenant=old[0], actor=vendor)  # a second version
    eu = make_local_key(vendor, "EU key")
    job, refused = jobs.job_start_vendor_key_move(vendor_key=eu, tenants=old, actor=vendor)
    assert refused == [] and job.kind == JobKind.VENDOR_KEY_MOVE and job.total == 3
    job = jobs.job_run(job.pk)
    assert job.state == JobState.SUCCEEDED and job.done == 3 and job.failed == 0
    keyring.clear_caches()
    for tenant in old:
        primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
        assert primary.vendor_key == eu and primary.state == ConfigState.ACTIVE
        previous = KmsConfig.objects.get(tenant=tenant, vendor_key__isnull=True)
        assert previous.state == ConfigState.RETIRED
        assert not TenantKeyWrap.objects.filter(kms_config=previous).exists()
        doc = documents[tenant.external_id]
        assert crypto_decrypt(tenant=tenant.external_id, edek=doc.edek, fields=doc.fields, meta=META) == {"f": b"doc"}
        assert AuditEvent.objects.filter(tenant=tenant, action="vendor_key.assigned").count() == 1
    assert TenantKeyWrap.objects.filter(kms_config__vendor_key=eu).count() == 4
    summary = {row["vendor_key"].name: row for row in selectors.vendor_key_summaries()}
    assert summary["EU key"]["tenants"] == 3 and summary["EU key"]["key_versions"] == 4


def test_one_vendor_keys_tenants_move_to_another_and_the_first_can_then_be_retired(vendor):
    eu = make_local_key(vendor, "EU key", make_default=True)
    tenants = [make(f"t{i}", vendor) for i in range(2)]
    doc = crypto_encrypt(tenant="t0", fields={"f": b"doc"}, meta=META)
    eu2 = make_local_key(vendor, "EU key 2026")
    with pytest.raises(errors.Conflict):
        vendor_keys.vendor_key_retire(vendor_key=eu, actor=vendor)
    job, _ = jobs.job_start_vendor_key_move(
        vendor_key=eu2, tenants=selectors.vendor_key_tenants(eu), actor=vendor, source=eu
    )
    assert jobs.job_run(job.pk).state == JobState.SUCCEEDED
    assert set(selectors.vendor_key_tenants(eu2)) == set(tenants)
    vendor_keys.vendor_key_make_default(vendor_key=eu2, actor=vendor)
    vendor_keys.vendor_key_retire(vendor_key=eu, actor=vendor)
    keyring.clear_caches()
    assert crypto_decrypt(tenant="t0", edek=doc.edek, fields=doc.fields, meta=META) == {"f": b"doc"}


def test_moving_a_tenant_already_there_starts_nothing(vendor):
    eu = make_local_key(vendor, "EU key", make_default=True)
    tenant = make("t0", vendor)
    assert jobs.job_start_vendor_key_move(vendor_key=eu, tenants=[tenant], actor=vendor) == (None, [])


def _own_key(tenant, tenant_actor):
    config = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "Own", {}, {}), actor=Actor.system("tests")
    )
    KmsConfig.objects.filter(pk=config.pk).update(owner=ConfigOwner.TENANT)
    own = KmsConfig.objects.get(pk=config.pk)
    jobs.job_run(keys.kms_config_make_primary(config=own, actor=tenant_actor).pk)
    return own


def test_a_tenant_that_owns_its_key_is_refused_and_the_refusal_is_on_its_chain(vendor, tenant, other_tenant):
    owner = make_member(tenant, "owner@acme.example", "owner")
    own = _own_key(tenant, Actor.for_user(owner))
    eu = make_local_key(vendor, "EU key")
    job, refused = jobs.job_start_vendor_key_move(vendor_key=eu, tenants=[tenant, other_tenant], actor=vendor)
    assert refused == [tenant] and job.total == 1
    refusal = AuditEvent.objects.get(tenant=tenant, action="vendor.refused")
    assert refusal.changes["attempted"][1] == "vendor_key.assign" and refusal.actor_label == "ops@vendor.example"
    jobs.job_run(job.pk)
    assert KmsConfig.objects.get(tenant=tenant, is_primary=True) == own
    assert not KmsConfig.objects.filter(tenant=tenant, vendor_key=eu).exists()


def test_a_tenant_that_brings_its_key_while_the_job_waits_is_refused_when_its_turn_comes(vendor, tenant):
    owner = make_member(tenant, "owner@acme.example", "owner")
    eu = make_local_key(vendor, "EU key")
    job, _ = jobs.job_start_vendor_key_move(vendor_key=eu, tenants=[tenant], actor=vendor)
    own = _own_key(tenant, Actor.for_user(owner))
    job = jobs.job_run(job.pk)
    assert job.state == JobState.FAILED and job.failed == 1
    assert KmsConfig.objects.get(tenant=tenant, is_primary=True) == own
    assert not TenantKeyWrap.objects.filter(kms_config__vendor_key=eu).exists()
    assert AuditEvent.objects.filter(tenant=tenant, action="vendor.refused").count() == 1


def test_a_tenant_whose_vendor_key_the_vendor_disabled_stays_dark(vendor, tenant):
    config = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    keys.kms_config_disable(config=config, actor=vendor)
    eu = make_local_key(vendor, "EU key")
    job, _ = jobs.job_start_vendor_key_move(vendor_key=eu, tenants=[tenant], actor=vendor)
    job = jobs.job_run(job.pk)
    assert job.failed == 1 and "disabled" in job.last_error
    assert KmsConfig.objects.get(tenant=tenant, is_primary=True) == config


def test_the_job_says_what_it_does(vendor, tenant):
    eu = make_local_key(vendor, "EU key")
    job, _ = jobs.job_start_vendor_key_move(vendor_key=eu, tenants=[tenant], actor=vendor)
    assert RekeyJob.objects.get(pk=job.pk).title == "Move tenants to EU key"
    assert job.unit == "tenant"


def test_a_retired_vendor_key_takes_no_tenant(vendor, tenant):
    eu = make_local_key(vendor, "EU key")
    vendor_keys.vendor_key_retire(vendor_key=eu, actor=vendor)
    with pytest.raises(errors.Conflict):
        jobs.job_start_vendor_key_move(vendor_key=eu, tenants=[tenant], actor=vendor)
    with pytest.raises(errors.InvalidInput):
        vendor_keys.vendor_key_resolve("EU key")


def test_shredding_one_tenant_under_a_shared_key_leaves_the_others_readable(vendor):
    from keycore.services.tenants import tenant_set_status, tenant_shred

    make_local_key(vendor, make_default=True)
    leaving, staying = make("leaving", vendor), make("staying", vendor)
    assert KmsConfig.objects.get(tenant=staying, is_primary=True).vendor_key_id
    gone = crypto_encrypt(tenant="leaving", fields={"f": b"x"}, meta=META)
    kept = crypto_encrypt(tenant="staying", fields={"f": b"y"}, meta=META)
    tenant_set_status(tenant=leaving, transition="offboard", actor=vendor)
    Tenant.objects.filter(pk=leaving.pk).update(shred_after=timezone.now())  # the grace period is over
    tenant_shred(tenant=leaving, actor=vendor)
    keyring.clear_caches()
    assert not TenantKeyWrap.objects.filter(tenant_key__tenant=leaving).exists()
    assert crypto_decrypt(tenant="staying", edek=kept.edek, fields=kept.fields, meta=META) == {"f": b"y"}
    leaving.refresh_from_db()
    with pytest.raises(errors.KeyCoreError):
        crypto_decrypt(tenant="leaving", edek=gone.edek, fields=gone.fields, meta=META)
    # the shared key itself is untouched: its credentials live on the vendor key, not on the tenant's row
    assert unseal_secrets(VendorKey.objects.get())["kek"]


def test_a_configuration_under_a_shared_key_takes_no_credentials_of_its_own(vendor, tenant):
    eu = make_local_key(vendor, make_default=True)
    other = make("other", vendor)
    config = KmsConfig.objects.get(tenant=other, vendor_key=eu)
    with pytest.raises(errors.Conflict):
        keys.kms_config_replace_secrets(config=config, secrets={"kek": "x" * 44}, actor=vendor)
