"""Tenant sovereignty through the services: once a tenant brings its own key, no vendor action — staff, API key,
operator command — takes the key away, touches the wraps under it or weakens the tenant's own settings; every
refused attempt is on the tenant's own audit chain. The same attacks through the portals and the API are in
tests/vendor_portal/test_vendor_sovereignty.py and tests/api/test_api_sovereignty.py."""

from __future__ import annotations

import pytest
from django.core import mail

from keycore import errors
from keycore.crypto.envelope import edek_key_version
from keycore.models import AuditEvent, Invitation, KmsConfig, Membership, RekeyJob, TenantKey, TenantKeyWrap
from keycore.roles import TenantRole, VendorRole
from keycore.services import forwarding, jobs, keyring, keys, tenants
from keycore.services.apikeys import api_key_create
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt, crypto_rekey
from keycore.services.events import chain_verify
from keycore.services.keys import ConfigInput
from keycore.services.keyuse import recorder
from tests.factories import make_member, make_staff

META = CallMeta(requesting_id="tests")


@pytest.fixture
def tenant_actor(owner):
    return Actor.for_user(owner)


@pytest.fixture(params=["staff", "api-key", "operator"])
def vendor(request, db):
    """Each way the vendor reaches a service: a staff member, an API key, the operator's command line."""
    if request.param == "staff":
        return Actor.for_user(make_staff("ops@vendor.example", VendorRole.ADMIN))
    if request.param == "api-key":
        key, _ = api_key_create(name="pipeline", scopes=["tenants:write", "keys:write"], actor=Actor.system("setup"))
        return Actor(label=f"api-key:{key.name}", api_key=key)
    return Actor(label="operator:manage.py")


def _pretend_own_key(tenant, tenant_actor, name="Acme's own key"):
    """A configuration the tenant owns (a local one relabelled: the rules are about ownership, not the KMS)."""
    config = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", name, {}, {}), actor=Actor.system("tests")
    )
    KmsConfig.objects.filter(pk=config.pk).update(owner="tenant")
    return KmsConfig.objects.get(pk=config.pk)


@pytest.fixture
def byok(tenant, tenant_actor):
    """Acme with two versions under the vendor's key and documents under each, then its own key made primary."""
    documents = [crypto_encrypt(tenant="acme", fields={"v": b"1"}, meta=META)]
    keys.tenant_key_create(tenant=tenant, actor=Actor.system("tests"))
    keyring.clear_caches()
    documents.append(crypto_encrypt(tenant="acme", fields={"v": b"2"}, meta=META))
    own = _pretend_own_key(tenant, tenant_actor)
    job = keys.kms_config_make_primary(config=own, actor=tenant_actor)
    return {
        "own": own,
        "job": job,
        "documents": documents,
        "vendor_key": KmsConfig.objects.get(tenant=tenant, name="Vendor-provided key"),
    }


def _refusals(tenant):
    return list(AuditEvent.objects.filter(tenant=tenant, action="vendor.refused").values_list("changes", flat=True))


def test_bringing_a_key_makes_a_version_only_the_tenants_key_ever_wrapped(tenant, byok):
    newest = TenantKey.objects.filter(tenant=tenant).order_by("-version").first()
    assert newest.version == 3 and not newest.vendor_held
    assert list(TenantKeyWrap.objects.filter(tenant_key=newest).values_list("kms_config_id", flat=True)) == [
        byok["own"].pk
    ]
    assert all(k.vendor_held for k in TenantKey.objects.filter(tenant=tenant, version__lt=3))
    keyring.clear_caches()
    doc = crypto_encrypt(tenant="acme", fields={"v": b"3"}, meta=META)
    assert edek_key_version(doc.edek) == 3, "new data is under the version the vendor never held"


def test_the_rekey_job_leaves_no_vendor_wrap_and_a_revoke_darkens_every_version(tenant, tenant_actor, byok):
    job = jobs.job_run(byok["job"].pk)
    assert job.state == "succeeded"
    wraps = TenantKeyWrap.objects.filter(tenant_key__tenant=tenant)
    assert set(wraps.values_list("kms_config__owner", flat=True)) == {"tenant"}
    keys.kms_config_revoke(config=byok["own"], actor=tenant_actor)
    keyring.clear_caches()
    for doc in byok["documents"]:
        with pytest.raises(errors.KeyRevoked):
            crypto_decrypt(tenant="acme", edek=doc.edek, fields=doc.fields, meta=META)


def test_the_vendor_cannot_put_its_key_back_whatever_the_tenants_status(tenant, vendor, byok):
    jobs.job_run(byok["job"].pk)
    for transition in (None, "suspend", "reactivate", "offboard"):
        if transition:
            tenants.tenant_set_status(tenant=tenant, transition=transition, actor=vendor)
        with pytest.raises(errors.TenantSovereignty, match="can never replace it"):
            keys.kms_config_make_primary(config=byok["vendor_key"], actor=vendor)
    assert KmsConfig.objects.get(pk=byok["own"].pk).is_primary
    refusals = _refusals(tenant)
    assert len(refusals) == 4 and all(r["attempted"][1] == "kms_config.make_primary" for r in refusals)
    assert chain_verify(tenant.pk).ok


def test_suspending_and_reactivating_never_touches_a_wrap(tenant, vendor, byok):
    jobs.job_run(byok["job"].pk)
    before = sorted(
        TenantKeyWrap.objects.filter(tenant_key__tenant=tenant).values_list("pk", "kms_config_id", "wrapped")
    )
    tenants.tenant_set_status(tenant=tenant, transition="suspend", actor=vendor)
    tenants.tenant_set_status(tenant=tenant, transition="reactivate", actor=vendor)
    after = sorted(
        TenantKeyWrap.objects.filter(tenant_key__tenant=tenant).values_list("pk", "kms_config_id", "wrapped")
    )
    assert after == before


def test_the_tenant_itself_may_go_back_to_a_vendor_provided_key(tenant, tenant_actor, byok):
    jobs.job_run(byok["job"].pk)
    job = keys.kms_config_make_primary(config=byok["vendor_key"], actor=tenant_actor)
    assert isinstance(job, RekeyJob)
    assert jobs.job_run(job.pk).state == "succeeded"
    assert TenantKey.objects.get(tenant=tenant, version=3).vendor_held, "the tenant is told its key went back"


@pytest.mark.parametrize(
    ("service", "kwargs"),
    [
        (keys.kms_config_disable, {}),
        (keys.kms_config_revoke, {}),
        (keys.kms_config_decrypt_only, {}),
        (keys.kms_config_replace_secrets, {"secrets": {}}),
    ],
)
def test_the_vendor_never_acts_on_the_tenants_own_configuration(tenant, vendor, byok, service, kwargs):
    with pytest.raises(errors.TenantSovereignty, match="the tenant's own key"):
        service(config=byok["own"], actor=vendor, **kwargs)
    assert KmsConfig.objects.get(pk=byok["own"].pk).state == "active"
    assert len(_refusals(tenant)) == 1


def test_the_vendor_cannot_reenable_a_key_the_tenant_revoked(tenant, tenant_actor, vendor, byok):
    keys.kms_config_revoke(config=byok["own"], actor=tenant_actor)
    with pytest.raises(errors.TenantSovereignty):
        keys.kms_config_reenable(config=byok["own"], actor=vendor)
    assert KmsConfig.objects.get(pk=byok["own"].pk).state == "revoked"


def test_the_vendor_cannot_bring_a_key_in_the_tenants_name(tenant, vendor):
    with pytest.raises(errors.TenantSovereignty):
        keys.kms_config_create(tenant=tenant, owner="tenant", data=ConfigInput("aws", "x", {}, {}), actor=vendor)


def test_the_vendor_cannot_stop_the_job_that_moves_data_under_the_tenants_key(tenant, tenant_actor, vendor, byok):
    with pytest.raises(errors.TenantSovereignty, match="only the tenant can stop it"):
        jobs.job_cancel(job=byok["job"], actor=vendor)
    assert RekeyJob.objects.get(pk=byok["job"].pk).state == "pending"
    assert jobs.job_cancel(job=byok["job"], actor=tenant_actor).state == "cancelled"


def test_the_vendor_cannot_retire_or_confirm_the_retirement_of_the_tenants_versions(tenant, tenant_actor, vendor, byok):
    jobs.job_run(byok["job"].pk)
    first = TenantKey.objects.get(tenant=tenant, version=1)
    with pytest.raises(errors.TenantSovereignty):
        jobs.job_start_key_retirement(key=first, actor=vendor)
    retirement = jobs.job_start_key_retirement(key=first, actor=tenant_actor)
    for attempt in (
        lambda: jobs.job_confirm_key_retirement(job=retirement, actor=vendor, rekeyed=True),
        lambda: jobs.job_cancel(job=retirement, actor=vendor),
    ):
        with pytest.raises(errors.TenantSovereignty):
            attempt()
    assert TenantKey.objects.get(pk=first.pk).state == "retiring"


def test_the_vendor_keeps_managing_the_key_of_a_tenant_that_never_brought_one(tenant, vendor):
    spare = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "EU key", {}, {}), actor=vendor
    )
    job = keys.kms_config_make_primary(config=spare, actor=vendor)
    assert jobs.job_run(job.pk).state == "succeeded"
    tenants.tenant_update(tenant=tenant, actor=vendor, key_rotation_days=90)
    assert _refusals(tenant) == []


def test_the_vendor_sets_a_new_tenants_defaults_until_it_has_an_owner(tenant, vendor):
    tenants.tenant_update(tenant=tenant, actor=vendor, event_retention_days=90, require_mfa=True)
    make_member(tenant, "owner@acme.example", TenantRole.OWNER)
    for change in ({"event_retention_days": 1}, {"require_mfa": False}, {"key_cache_seconds": 300}):
        with pytest.raises(errors.TenantSovereignty, match="own setting"):
            tenants.tenant_update(tenant=tenant, actor=vendor, **change)
    tenants.tenant_update(
        tenant=tenant, actor=vendor, name="Acme Corp."
    )  # its name in the vendor's books is the vendor's
    tenant.refresh_from_db()
    assert (tenant.event_retention_days, tenant.require_mfa, tenant.name) == (90, True, "Acme Corp.")
    assert len(_refusals(tenant)) == 3


def test_the_rotation_period_is_the_tenants_once_it_owns_its_key(tenant, tenant_actor, vendor, byok):
    with pytest.raises(errors.TenantSovereignty, match="rotate"):
        tenants.tenant_update(tenant=tenant, actor=vendor, key_rotation_days=1)
    tenants.tenant_update(tenant=tenant, actor=tenant_actor, key_rotation_days=30, event_retention_days=400)


def test_a_vendor_invitation_to_a_tenant_with_an_owner_waits_for_an_owners_approval(tenant, owner, vendor):
    mail.outbox.clear()
    invitation, token = tenants.invitation_create(
        tenant=tenant, email="me@vendor-side.example", role="owner", actor=vendor
    )
    assert (token, invitation.awaiting_approval, invitation.state) == ("", True, "awaiting approval")
    assert mail.outbox == [], "no link exists until an owner approves"
    assert AuditEvent.objects.filter(tenant=tenant, action="invitation.requested").exists()
    with pytest.raises(errors.PermissionDenied):
        tenants.invitation_approve(invitation=invitation, actor=vendor)
    admin = make_member(tenant, "admin@acme.example", TenantRole.ADMIN)
    with pytest.raises(errors.PermissionDenied):
        tenants.invitation_approve(invitation=invitation, actor=Actor.for_user(admin))
    with pytest.raises(errors.Conflict, match="approve"):
        tenants.invitation_resend(invitation=invitation, actor=vendor)
    invitation, token = tenants.invitation_approve(invitation=invitation, actor=Actor.for_user(owner))
    assert token and not invitation.awaiting_approval and invitation.approved_by == owner
    assert tenants.invitation_lookup(token).pk == invitation.pk


def test_the_first_owner_of_a_new_tenant_is_invited_by_the_vendor_at_once(tenant, vendor):
    invitation, token = tenants.invitation_create(tenant=tenant, email="first@acme.example", role="owner", actor=vendor)
    assert token and not invitation.awaiting_approval


def test_an_invitation_awaiting_approval_cannot_be_used(tenant, owner, vendor):
    invitation, _ = tenants.invitation_create(tenant=tenant, email="x@vendor-side.example", role="owner", actor=vendor)
    Invitation.objects.filter(pk=invitation.pk).update(token_hash=tenants._token_hash("guess"))
    with pytest.raises(errors.Conflict, match="approve"):
        tenants.invitation_lookup("guess")


def test_the_vendor_cannot_change_or_remove_members_of_a_tenant_with_an_owner(tenant, owner, vendor):
    admin = make_member(tenant, "admin@acme.example", TenantRole.ADMIN)
    membership = Membership.objects.get(user=admin)
    with pytest.raises(errors.TenantSovereignty):
        tenants.membership_set_role(membership=membership, role="owner", actor=vendor)
    with pytest.raises(errors.TenantSovereignty):
        tenants.membership_remove(membership=Membership.objects.get(user=owner), actor=vendor)
    assert Membership.objects.filter(tenant=tenant).count() == 2


def test_the_vendor_cannot_add_change_or_silence_the_tenants_siem_destinations(tenant, tenant_actor, vendor):
    with pytest.raises(errors.TenantSovereignty):
        forwarding.destination_create(
            tenant=tenant, kind="webhook", name="x", settings_={"url": "https://siem.example/in"}, actor=vendor
        )
    destination, _ = forwarding.destination_create(
        tenant=tenant, kind="webhook", name="SIEM", settings_={"url": "https://siem.example/in"}, actor=tenant_actor
    )
    for attempt in (
        lambda: forwarding.destination_set_enabled(destination=destination, enabled=False, actor=vendor),
        lambda: forwarding.destination_delete(destination=destination, actor=vendor),
        lambda: forwarding.destination_update(destination=destination, name="y", actor=vendor),
    ):
        with pytest.raises(errors.TenantSovereignty):
            attempt()
    destination.refresh_from_db()
    assert destination.enabled and destination.name == "SIEM"


def test_a_vendor_key_that_alone_holds_an_active_tenants_versions_cannot_be_shredded(tenant, vendor):
    vendor_key = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    spare = keys.kms_config_create(tenant=tenant, owner="vendor", data=ConfigInput("local", "EU", {}, {}), actor=vendor)
    keys.kms_config_make_primary(config=spare, actor=vendor)  # the job has not moved anything yet
    with pytest.raises(errors.Conflict, match="destroy that data"):
        keys.kms_config_destroy(config=KmsConfig.objects.get(pk=vendor_key.pk), actor=vendor)
    assert TenantKey.objects.filter(tenant=tenant, state="active").count() == 1


def test_every_refusal_is_on_the_tenants_chain_with_who_tried(tenant, byok):
    staff = Actor.for_user(make_staff("ops@vendor.example", VendorRole.OPERATOR), source_ip="203.0.113.9")
    with pytest.raises(errors.TenantSovereignty):
        keys.kms_config_make_primary(config=byok["vendor_key"], actor=staff)
    event = AuditEvent.objects.get(tenant=tenant, action="vendor.refused")
    assert (event.actor_label, event.source_ip) == ("ops@vendor.example", "203.0.113.9")
    assert event.changes["attempted"] == [None, "kms_config.make_primary"]
    assert "can never replace it" in event.changes["reason"][1]


def test_documents_are_counted_per_version_exactly(tenant, actor):
    first = [crypto_encrypt(tenant="acme", fields={"n": str(i).encode()}, meta=META) for i in range(5)]
    keys.tenant_key_create(tenant=tenant, actor=actor)
    keyring.clear_caches()
    for _ in range(3):
        crypto_encrypt(tenant="acme", fields={"n": b"x"}, meta=META)
    crypto_decrypt(tenant="acme", edek=first[0].edek, fields=first[0].fields, meta=META)
    results = crypto_rekey(tenant="acme", edeks=[d.edek for d in first[:4]] + [b"junk"], meta=META)
    assert [r.ok for r in results] == [True] * 4 + [False]
    recorder.flush()
    counts = dict(TenantKey.objects.filter(tenant=tenant).values_list("version", "documents"))
    assert counts == {1: 1, 2: 3 + 4}
    assert TenantKey.objects.get(tenant=tenant, version=1).last_decrypt_at is not None
    assert TenantKey.objects.get(tenant=tenant, version=2).last_decrypt_at is None


def test_a_tenant_may_bound_how_long_its_keys_stay_cached(tenant, owner, settings):
    settings.KEYCORE_KEY_CACHE_TTL = 300
    assert keyring.cache_ttl(tenant) == 300
    tenants.tenant_update(tenant=tenant, actor=Actor.for_user(owner), key_cache_seconds=30)
    tenant.refresh_from_db()
    assert keyring.cache_ttl(tenant) == 30
    for bad in (29, 301, "60", True):
        with pytest.raises(errors.InvalidInput):
            tenants.tenant_update(tenant=tenant, actor=Actor.for_user(owner), key_cache_seconds=bad)
