"""The key hierarchy through the services: every tenant has a working key, primaries, revocation, rotation."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from keycore import errors
from keycore.models import AuditEvent, KeyHistoryEntry, KmsConfig, Tenant, TenantKey, TenantKeyWrap
from keycore.services import keyring, keys
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.tenants import tenant_create, tenant_set_status

pytestmark = pytest.mark.django_db
META = CallMeta(requesting_id="billing-service", label="invoices", source_ip="10.0.0.7")


def _roundtrip(tenant_ext: str):
    enc = crypto_encrypt(tenant=tenant_ext, fields={"amount": b"42.00"}, meta=META)
    return crypto_decrypt(tenant=tenant_ext, edek=enc.edek, fields=enc.fields, meta=META)


def test_a_new_tenant_can_encrypt_at_once(tenant):
    assert _roundtrip("acme") == {"amount": b"42.00"}
    config = KmsConfig.objects.get(tenant=tenant)
    assert config.is_primary and config.owner == "vendor" and config.provider == "local"
    assert config.health == "ok"
    key = TenantKey.objects.get(tenant=tenant)
    assert key.version == 1 and TenantKeyWrap.objects.filter(tenant_key=key, kms_config=config).count() == 1
    assert [h.action for h in KeyHistoryEntry.objects.for_tenant(tenant)] == ["made_primary", "created"]


def test_the_local_kek_is_never_stored_in_the_clear(tenant):
    import base64
    import json

    from keycore.sealing import unseal_secrets

    config = KmsConfig.objects.get(tenant=tenant)
    kek = base64.b64decode(unseal_secrets(config)["kek"])
    sealed = bytes(config.sealed_secrets)
    assert kek not in sealed and base64.b64encode(kek) not in sealed
    assert json.dumps(config.settings).find(base64.b64encode(kek).decode()) == -1


def test_creating_a_tenant_is_audited_once_per_change(tenant):
    actions = list(AuditEvent.objects.for_tenant(tenant).order_by("seq").values_list("action", flat=True))
    assert actions == ["tenant.created", "kms_config.created", "tenant_key.created"]


def test_external_ids_are_validated_and_unique(db, actor):
    with pytest.raises(errors.InvalidInput) as bad:
        tenant_create(external_id="has space", name="X", actor=actor)
    assert "external_id" in bad.value.field_errors
    tenant_create(external_id="dup", name="First", actor=actor)
    with pytest.raises(errors.Conflict):
        tenant_create(external_id="dup", name="Second", actor=actor)


def test_the_database_allows_only_one_primary(tenant, actor):
    from keycore.services.keys import ConfigInput

    second = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "Second", {}, {}), actor=actor
    )
    assert not second.is_primary
    with pytest.raises(IntegrityError), transaction.atomic():
        KmsConfig.objects.filter(pk=second.pk).update(is_primary=True)


def test_making_another_key_primary_moves_tenant_keys_under_it(
    tenant, actor, django_capture_on_commit_callbacks, settings
):
    from keycore.services.keys import ConfigInput

    settings.CELERY_TASK_ALWAYS_EAGER = True
    from config.celery import app

    app.conf.task_always_eager = True
    try:
        enc = crypto_encrypt(tenant="acme", fields={"f": b"before"}, meta=META)
        old = KmsConfig.objects.get(tenant=tenant, is_primary=True)
        new = keys.kms_config_create(
            tenant=tenant, owner="vendor", data=ConfigInput("local", "New", {}, {}), actor=actor
        )
        with django_capture_on_commit_callbacks(execute=True):
            job = keys.kms_config_make_primary(config=new, actor=actor)
    finally:
        app.conf.task_always_eager = False
    job.refresh_from_db()
    old.refresh_from_db()
    assert job.state == "succeeded" and job.done == 1
    assert old.state == "decrypt_only" and not old.is_primary
    assert set(TenantKeyWrap.objects.for_tenant(tenant).values_list("kms_config", flat=True)) == {new.pk}
    keyring.clear_caches()
    assert crypto_decrypt(tenant="acme", edek=enc.edek, fields=enc.fields, meta=META) == {"f": b"before"}
    assert KeyHistoryEntry.objects.for_tenant(tenant).first().action == "made_primary"


def test_revoking_the_primary_key_refuses_crypto_at_once_and_reenabling_restores_it(
    tenant, actor, django_capture_on_commit_callbacks
):
    enc = crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=META)
    config = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    with django_capture_on_commit_callbacks(execute=True):
        keys.kms_config_revoke(config=config, actor=actor)
    with pytest.raises(errors.KeyRevoked):
        crypto_decrypt(tenant="acme", edek=enc.edek, fields=enc.fields, meta=META)
    with pytest.raises(errors.KeyRevoked):
        crypto_encrypt(tenant="acme", fields={"f": b"y"}, meta=META)
    with django_capture_on_commit_callbacks(execute=True):
        keys.kms_config_reenable(config=config, actor=actor)
    assert crypto_decrypt(tenant="acme", edek=enc.edek, fields=enc.fields, meta=META) == {"f": b"x"}


def test_a_revoked_key_blocks_even_a_tenant_key_wrapped_elsewhere_too(
    tenant, actor, django_capture_on_commit_callbacks
):
    """A tenant's kill switch must not be sidestepped by an older vendor wrap of the same tenant key."""
    from keycore.services.keys import ConfigInput

    enc = crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=META)
    other = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "Other", {}, {}), actor=actor
    )
    key = TenantKey.objects.get(tenant=tenant)
    keyring.wrap_tenant_key(key=key, raw=keyring.unwrap_raw(tenant, key), config=other)
    with django_capture_on_commit_callbacks(execute=True):
        keys.kms_config_revoke(config=other, actor=actor)
    with pytest.raises(errors.KeyRevoked):
        crypto_decrypt(tenant="acme", edek=enc.edek, fields=enc.fields, meta=META)


def test_rotation_creates_a_new_version_and_old_data_still_decrypts(tenant, actor):
    old = crypto_encrypt(tenant="acme", fields={"f": b"old"}, meta=META)
    keys.tenant_key_create(tenant=tenant, actor=actor)
    keyring.clear_caches()
    new = crypto_encrypt(tenant="acme", fields={"f": b"new"}, meta=META)
    from keycore.crypto.envelope import edek_key_version

    assert edek_key_version(old.edek) == 1 and edek_key_version(new.edek) == 2
    assert crypto_decrypt(tenant="acme", edek=old.edek, fields=old.fields, meta=META) == {"f": b"old"}


def test_a_suspended_tenant_cannot_use_its_data(tenant, actor, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        tenant_set_status(tenant=tenant, transition="suspend", actor=actor)
    with pytest.raises(errors.TenantInactive):
        crypto_encrypt(tenant="acme", fields={}, meta=META)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_set_status(tenant=tenant, transition="reactivate", actor=actor)
    assert _roundtrip("acme")


def test_retiring_refuses_while_a_tenant_key_depends_on_the_key(tenant, actor):
    from keycore.services.keys import ConfigInput

    original = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    new = keys.kms_config_create(tenant=tenant, owner="vendor", data=ConfigInput("local", "New", {}, {}), actor=actor)
    keys.kms_config_make_primary(config=new, actor=actor)  # job not run: keys still only under the original
    with pytest.raises(errors.Conflict, match="wrapped only under"):
        keys.kms_config_retire(config=KmsConfig.objects.get(pk=original.pk), actor=actor)


def test_shredding_an_offboarded_tenant_destroys_its_data_for_good(tenant, actor, django_capture_on_commit_callbacks):
    from keycore.services.tenants import tenant_shred

    enc = crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=META)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_set_status(tenant=tenant, transition="offboard", actor=actor)
        with pytest.raises(errors.Conflict, match="grace period"):
            tenant_shred(tenant=tenant, actor=actor)
        Tenant.objects.filter(pk=tenant.pk).update(shred_after=timezone.now())  # the grace period is over
        assert tenant_shred(tenant=tenant, actor=actor) == 1
    config = KmsConfig.objects.get(tenant=tenant)
    assert config.sealed_secrets is None
    assert TenantKey.objects.get(tenant=tenant).state == "destroyed"
    tenant.refresh_from_db()
    assert tenant.status == "offboarded"
    with pytest.raises(errors.KeyDestroyed):
        keyring.unwrap_tenant_key(tenant, 1)
    del enc


def test_only_owners_make_or_unmake_owners(tenant, owner):
    from keycore.models import Membership
    from keycore.roles import TenantRole
    from keycore.services.audit import Actor
    from keycore.services.tenants import invitation_create, membership_remove, membership_set_role
    from tests.factories import make_member

    admin = make_member(tenant, "admin@acme.example", TenantRole.ADMIN)
    auditor = make_member(tenant, "aud2@acme.example", TenantRole.AUDITOR)
    as_admin = Actor.for_user(admin)
    owner_membership = Membership.objects.get(tenant=tenant, user=owner)
    auditor_membership = Membership.objects.get(tenant=tenant, user=auditor)
    with pytest.raises(errors.PermissionDenied):
        invitation_create(tenant=tenant, email="x@acme.example", role=TenantRole.OWNER, actor=as_admin)
    with pytest.raises(errors.PermissionDenied):
        membership_set_role(membership=auditor_membership, role=TenantRole.OWNER, actor=as_admin)
    with pytest.raises(errors.PermissionDenied):
        membership_set_role(membership=Membership.objects.get(user=admin), role=TenantRole.OWNER, actor=as_admin)
    with pytest.raises(errors.PermissionDenied):
        membership_remove(membership=owner_membership, actor=as_admin)
    # what an admin may do
    membership_set_role(membership=auditor_membership, role=TenantRole.ADMIN, actor=as_admin)
    invitation_create(tenant=tenant, email="y@acme.example", role=TenantRole.AUDITOR, actor=as_admin, send=False)
    # owners and the vendor may grant ownership
    membership_set_role(membership=auditor_membership, role=TenantRole.OWNER, actor=Actor.for_user(owner))
    invitation_create(
        tenant=tenant, email="z@acme.example", role=TenantRole.OWNER, actor=Actor.system("api"), send=False
    )
