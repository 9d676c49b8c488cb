"""Bulk provisioning: ``tenant_create_many`` leaves every tenant exactly as ``tenant_create`` does.

Set-based writes are where shortcuts hide (an event not written, a KEK shared, a secret in the clear), so
each tenant made in bulk is compared, row by row, with one made on its own, and then attacked as someone
holding a database backup would.
"""

from __future__ import annotations

import pytest
from django.core import mail

from keycore import errors
from keycore.models import (
    AuditEvent,
    Invitation,
    KeyHistoryEntry,
    KmsConfig,
    Tenant,
    TenantKey,
    TenantKeyWrap,
    VendorKey,
)
from keycore.providers.base import HealthResult
from keycore.services import vendor_keys
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.events import chain_verify
from keycore.services.keyring import clear_caches, read_epoch
from keycore.services.summary import tenant_counts, tenant_counts_recompute, tenant_summary_sync
from keycore.services.tenants import AdminInvite, NewTenant, tenant_create, tenant_create_many

pytestmark = pytest.mark.django_db
META = CallMeta(requesting_id="tests")


def _shape(tenant: Tenant) -> dict:
    """Everything tenant_create leaves, without what differs by nature (ids, uids, times, random keys)."""
    tenant.refresh_from_db()
    skip_tenant = {"id", "uid", "external_id", "name", "created_at", "updated_at", "status_changed_at"}
    configs = list(
        KmsConfig.objects.filter(tenant=tenant).values(
            "owner",
            "provider",
            "name",
            "settings",
            "secret_fields_set",
            "state",
            "is_primary",
            "rate_limit",
            "health",
            "health_detail",
            "created_by",
            "state_changed_at",
            "last_failure_at",
            "vendor_key",
        )
    )
    for config in configs:
        config["health_detail"] = config["health_detail"].split(" (")[0]  # names the KEK's own fingerprint
    return {
        "tenant": {k: v for k, v in tenant.__dict__.items() if not k.startswith("_") and k not in skip_tenant},
        "configs": configs,
        "checked": [
            (c.health_checked_at is not None, c.last_success_at is not None, c.health_latency_ms is not None)
            for c in KmsConfig.objects.filter(tenant=tenant)
        ],
        # a configuration under a shared vendor key holds no secret of its own; a local one its own sealed KEK
        "sealed": [c.sealed_secrets is not None for c in KmsConfig.objects.filter(tenant=tenant)],
        "keys": list(
            TenantKey.objects.filter(tenant=tenant).values(
                "version", "state", "vendor_held", "documents", "retiring_at", "destroyed_at"
            )
        ),
        "wraps": [
            (w.kms_config.name, w.tenant_key.version, w.verified_at is not None)
            for w in TenantKeyWrap.objects.filter(tenant_key__tenant=tenant)
        ],
        "history": list(
            KeyHistoryEntry.objects.filter(tenant=tenant)
            .order_by("id")
            .values_list("action", "config_name", "config_owner", "config_provider", "actor_label")
        ),
        "events": [
            (e.seq, e.action, e.target_type, e.actor_label, _without(e.changes, tenant))
            for e in AuditEvent.objects.filter(tenant=tenant).order_by("seq")
        ],
    }


def _without(changes: dict, tenant: Tenant) -> dict:
    return {k: v for k, v in changes.items() if k not in ("external_id", "name")}


def test_a_tenant_made_in_bulk_is_the_tenant_made_alone(actor, django_capture_on_commit_callbacks):
    alone = tenant_create(external_id="alone", name="Alone Inc", actor=actor)
    with django_capture_on_commit_callbacks(execute=True):
        made = tenant_create_many(items=[NewTenant("bulk-1", "Bulk One"), NewTenant("bulk-2", "Bulk Two")], actor=actor)
    assert [t.external_id for t in made] == ["bulk-1", "bulk-2"]
    assert _shape(Tenant.objects.get(external_id="bulk-1")) == _shape(alone)
    assert _shape(Tenant.objects.get(external_id="bulk-2")) == _shape(alone)
    # the events name each tenant's own objects
    for tenant in made:
        created = AuditEvent.objects.get(tenant=tenant, action="tenant.created")
        assert created.target_id == str(tenant.uid) and created.target_repr == f"{tenant.name} ({tenant.external_id})"
        assert created.changes == {"external_id": [None, tenant.external_id], "name": [None, tenant.name]}
        config = KmsConfig.objects.get(tenant=tenant)
        assert AuditEvent.objects.get(tenant=tenant, action="kms_config.created").target_id == str(config.uid)
        key = TenantKey.objects.get(tenant=tenant)
        assert AuditEvent.objects.get(tenant=tenant, action="tenant_key.created").target_id == str(key.pk)


def test_every_tenant_made_in_bulk_encrypts_under_its_own_sealed_kek_and_its_chain_verifies(actor):
    made = tenant_create_many(items=[NewTenant(f"t-{i}", f"Tenant {i}") for i in range(20)], actor=actor)
    clear_caches()
    configs = KmsConfig.objects.filter(tenant__in=made)
    sealed = [bytes(c.sealed_secrets) for c in configs]
    assert len(set(sealed)) == 20, "each tenant has a KEK of its own"
    for tenant in made:
        config = KmsConfig.objects.get(tenant=tenant)
        # sealed under the root key, bound to this configuration: no KEK in the clear in the row
        assert b"kek" not in bytes(config.sealed_secrets).lower()
        blob = crypto_encrypt(tenant=tenant.external_id, fields={"f": b"secret"}, meta=META)
        assert crypto_decrypt(tenant=tenant.external_id, edek=blob.edek, fields=blob.fields, meta=META) == {
            "f": b"secret"
        }
        report = chain_verify(tenant.pk)
        assert report.ok and report.checked == 3, report


def test_a_sealed_kek_moved_to_another_tenants_row_does_not_unseal(actor):
    """Someone with write access to the database swaps two tenants' sealed KEKs: neither unseals."""
    one, two = tenant_create_many(items=[NewTenant("one", "One"), NewTenant("two", "Two")], actor=actor)
    a, b = KmsConfig.objects.get(tenant=one), KmsConfig.objects.get(tenant=two)
    KmsConfig.objects.filter(pk=a.pk).update(sealed_secrets=bytes(b.sealed_secrets))
    clear_caches()
    with pytest.raises(errors.KeyCoreError):
        crypto_encrypt(tenant="one", fields={"f": b"x"}, meta=META)


def test_bad_and_taken_items_fail_alone_and_the_rest_are_made(actor, tenant, django_capture_on_commit_callbacks):
    epoch = read_epoch()
    with django_capture_on_commit_callbacks(execute=True):
        results = tenant_create_many(
            items=[
                NewTenant("ok-1", "Ok"),
                NewTenant("bad id", "Bad"),
                NewTenant("acme", "Taken"),
                NewTenant("ok-1", "Twice in one call"),
                NewTenant("ok-2", "  Spaced   out  ", (AdminInvite("root@ok2.example", "admin"),)),
                NewTenant("ok-3", ""),
                NewTenant("ok-4", "Bad admin", (AdminInvite("nope"),)),
            ],
            actor=actor,
        )
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Tenant", "InvalidInput", "Conflict", "Conflict", "Tenant", "InvalidInput", "InvalidInput"]
    assert results[4].name == "Spaced out"
    assert set(Tenant.objects.values_list("external_id", flat=True)) == {"acme", "ok-1", "ok-2"}
    invitation = Invitation.objects.get(tenant=results[4])
    assert (invitation.email, invitation.role) == ("root@ok2.example", "admin")
    assert [m.to for m in mail.outbox] == [["root@ok2.example"]]
    assert AuditEvent.objects.filter(tenant=results[4], action="invitation.created").count() == 1
    assert chain_verify(results[4].pk).ok
    assert read_epoch() == epoch + 1  # once for the call, not once per tenant


def test_a_call_with_nothing_valid_writes_nothing(actor):
    events = AuditEvent.objects.count()
    results = tenant_create_many(items=[NewTenant("", "x"), NewTenant("y", "")], actor=actor)
    assert all(isinstance(r, errors.InvalidInput) for r in results)
    assert not Tenant.objects.exists() and AuditEvent.objects.count() == events


def test_an_id_taken_by_another_request_meanwhile_fails_alone(actor, monkeypatch):
    """Between the check for taken ids and the insert, another request creates one of them."""
    from keycore.services import tenants as tenant_services

    tenant_create(external_id="race-2", name="Got there first", actor=actor)
    monkeypatch.setattr(tenant_services, "_taken_ids", lambda ids: set())  # the check ran before it committed
    results = tenant_create_many(items=[NewTenant(f"race-{i}", f"Race {i}") for i in range(1, 4)], actor=actor)
    assert [type(r).__name__ for r in results] == ["Tenant", "Conflict", "Tenant"]
    assert Tenant.objects.get(external_id="race-2").name == "Got there first"
    assert Tenant.objects.filter(external_id__startswith="race-").count() == 3
    assert KmsConfig.objects.filter(tenant__external_id__startswith="race-").count() == 3
    for tenant in Tenant.objects.filter(external_id__startswith="race-"):
        assert chain_verify(tenant.pk).ok


# --- vendor keys: the default, one named per item, a retired one refused -----------------------------------


def _local_vendor_key(actor, name: str, **kwargs) -> VendorKey:
    return vendor_keys.vendor_key_create(name=name, provider="local", settings_={}, secrets={}, actor=actor, **kwargs)


def _reads_and_writes(tenant: Tenant) -> None:
    blob = crypto_encrypt(tenant=tenant.external_id, fields={"f": b"secret"}, meta=META)
    assert crypto_decrypt(tenant=tenant.external_id, edek=blob.edek, fields=blob.fields, meta=META) == {"f": b"secret"}


def _summary_is_what_sync_computes(tenant: Tenant) -> None:
    """The columns bulk wrote are the ones tenant_summary_sync would write (it changes nothing, moves no count)."""
    columns = ("key_ownership", "primary_provider", "health", "key_status")
    before = Tenant.objects.values(*columns).get(pk=tenant.pk)
    counts = tenant_counts()
    tenant_summary_sync(tenant=Tenant.objects.get(pk=tenant.pk))
    assert Tenant.objects.values(*columns).get(pk=tenant.pk) == before
    assert tenant_counts() == counts


def test_a_tenant_made_in_bulk_under_a_named_vendor_key_is_the_tenant_made_alone_under_it(actor):
    us = _local_vendor_key(actor, "US key")
    alone = tenant_create(external_id="alone", name="Alone Inc", actor=actor, vendor_key=us)
    made = tenant_create_many(items=[NewTenant(f"bulk-{i}", f"Bulk {i}", vendor_key=us) for i in range(3)], actor=actor)
    shape = _shape(alone)
    assert shape["tenant"]["key_status"] == "healthy" and shape["tenant"]["primary_provider"] == "local"
    assert shape["configs"][0]["vendor_key"] == us.pk and shape["sealed"] == [False]
    assert shape["history"][0][1] == "US key"
    for tenant in made:
        assert _shape(tenant) == shape
        config = KmsConfig.objects.get(tenant=tenant)
        assert AuditEvent.objects.get(tenant=tenant, action="kms_config.created").target_id == str(config.uid)
        assert chain_verify(tenant.pk).ok
    clear_caches()
    for tenant in [alone, *made]:
        _reads_and_writes(tenant)
    # no KEK per tenant: every wrap is under the one shared key, bound to its tenant
    assert not KmsConfig.objects.filter(vendor_key=us, sealed_secrets__isnull=False).exists()
    assert TenantKeyWrap.objects.filter(kms_config__vendor_key=us).count() == 4


def test_a_wrap_made_in_bulk_under_a_shared_key_opens_for_no_other_tenant(actor):
    """Someone with write access to the database copies one tenant's wrapped key onto another's: it does not open
    (the shared key binds every wrap to its tenant), so one tenant of a vendor key cannot read another's data."""
    us = _local_vendor_key(actor, "US key")
    one, two = tenant_create_many(
        items=[NewTenant("one", "One", vendor_key=us), NewTenant("two", "Two", vendor_key=us)], actor=actor
    )
    theirs = TenantKeyWrap.objects.get(tenant_key__tenant=one)
    TenantKeyWrap.objects.filter(tenant_key__tenant=two).update(wrapped=bytes(theirs.wrapped))
    clear_caches()
    with pytest.raises(errors.KeyCoreError):
        crypto_encrypt(tenant="two", fields={"f": b"x"}, meta=META)


def test_bulk_uses_the_default_vendor_key_when_an_item_names_none(actor):
    eu = _local_vendor_key(actor, "EU key", make_default=True)
    us = _local_vendor_key(actor, "US key")
    alone = tenant_create(external_id="alone", name="Alone", actor=actor)
    made = tenant_create_many(items=[NewTenant("d-1", "D1"), NewTenant("u-1", "U1", vendor_key=us)], actor=actor)
    served = {t.external_id: KmsConfig.objects.get(tenant=t, is_primary=True).vendor_key for t in made}
    assert served == {"d-1": eu, "u-1": us}
    assert _shape(made[0]) == _shape(alone)


def test_a_retired_vendor_key_fails_its_item_alone_as_tenant_create_refuses_it(actor):
    us = _local_vendor_key(actor, "US key")
    old = vendor_keys.vendor_key_retire(vendor_key=_local_vendor_key(actor, "Old key"), actor=actor)
    with pytest.raises(errors.InvalidInput) as alone:
        tenant_create(external_id="alone", name="Alone", actor=actor, vendor_key=old)
    results = tenant_create_many(
        items=[NewTenant("ok", "Ok", vendor_key=us), NewTenant("old", "Old", vendor_key=old), NewTenant("local", "L")],
        actor=actor,
    )
    assert [type(r).__name__ for r in results] == ["Tenant", "InvalidInput", "Tenant"]
    refused = results[1]
    assert (refused.detail, refused.field_errors) == (alone.value.detail, alone.value.field_errors)
    assert not Tenant.objects.filter(external_id__in=["alone", "old"]).exists()
    assert KmsConfig.objects.get(tenant=results[2]).vendor_key is None  # no default: a KEK of its own


def test_the_dashboard_counts_are_exact_after_a_bulk_call(actor, tenant):
    us = _local_vendor_key(actor, "US key")
    down = _local_vendor_key(actor, "Down key")
    vendor_keys.vendor_key_record_health(
        vendor_key=down, result=HealthResult(False, "no answer", 0.0, "kms_unavailable")
    )
    down.refresh_from_db()
    before = tenant_counts()
    made = tenant_create_many(
        items=[
            *(NewTenant(f"local-{i}", f"Local {i}") for i in range(5)),
            *(NewTenant(f"us-{i}", f"Us {i}", vendor_key=us) for i in range(4)),
            *(NewTenant(f"down-{i}", f"Down {i}", vendor_key=down) for i in range(3)),
            NewTenant("acme", "Taken"),
        ],
        actor=actor,
    )
    assert sum(isinstance(r, Tenant) for r in made) == 12
    assert tenant_counts_recompute() == [], "the counts differ from a recount"
    after = tenant_counts()
    assert after["status"]["active"] - before["status"].get("active", 0) == 12
    assert after["key_ownership"]["vendor"] - before["key_ownership"].get("vendor", 0) == 12
    assert after["key_status"]["healthy"] - before["key_status"].get("healthy", 0) == 9
    assert after["key_status"]["kms_unreachable"] - before["key_status"].get("kms_unreachable", 0) == 3
    assert Tenant.objects.get(external_id="down-0").health == "failing"
    for tenant in (made[0], made[5], made[9]):
        _summary_is_what_sync_computes(tenant)


def test_tenant_create_under_a_vendor_key_is_counted_as_working(actor):
    """tenant_create under a shared key ends with the key status its working key has (not "disabled")."""
    us = _local_vendor_key(actor, "US key")
    tenant = tenant_create(external_id="alone", name="Alone", actor=actor, vendor_key=us)
    assert tenant.key_status == "healthy"
    assert tenant_counts()["key_status"] == {"healthy": 1}
    assert tenant_counts_recompute() == []


def test_bulk_under_a_vendor_key_in_a_real_kms_is_the_tenant_made_alone(actor, moto):
    kms_settings, secrets = moto.provider_settings(moto.create_key())
    aws = vendor_keys.vendor_key_create(
        name="EU AWS key", provider="aws", settings_=kms_settings, secrets=secrets, actor=actor
    )
    alone = tenant_create(external_id="alone", name="Alone", actor=actor, vendor_key=aws)
    made = tenant_create_many(items=[NewTenant(f"aws-{i}", f"Aws {i}", vendor_key=aws) for i in range(3)], actor=actor)
    shape = _shape(alone)
    assert shape["tenant"]["primary_provider"] == "aws" and shape["tenant"]["key_status"] == "healthy"
    assert all(_shape(t) == shape for t in made)
    clear_caches()
    for tenant in [alone, *made]:
        _reads_and_writes(tenant)
    assert tenant_counts_recompute() == []
