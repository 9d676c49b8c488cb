"""Vendor-provided keys in the portal: add (local or the vendor's AWS KMS via moto), test, make primary,
demote, retire — and the tenant's own key, which the vendor can neither see into nor change."""

from __future__ import annotations

import pytest
from django.urls import reverse

from keycore.models import AuditEvent, KeyHistoryEntry, KmsConfig, RekeyJob
from keycore.services import keys
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_set_status
from tests.vendor_portal.conftest import reauthenticate

pytestmark = pytest.mark.django_db


def _aws_form(moto, **overrides):
    settings_, secrets = moto.provider_settings(moto.create_key())
    data = {"provider": "aws", "config_name": "Vendor AWS key", "config_rate_limit": "50", **settings_, **secrets}
    data.update(overrides)
    return data


def test_the_form_comes_from_the_providers_fields_with_write_only_secrets(as_admin, tenant):
    page = as_admin.get(reverse("vendor:key_create", args=["acme"]), {"provider": "aws"}).content.decode()
    assert 'name="key_id"' in page and 'name="region"' in page
    # every secret field is a password input that never carries a value
    for secret in ("access_key_id", "secret_access_key", "session_token"):
        assert f'type="password" name="{secret}"' in page
    assert "What the KMS must allow" in page and tenant.uid.hex in page  # the key policy names this tenant
    assert as_admin.get(reverse("vendor:key_create", args=["acme"]), {"provider": "nope"}).status_code == 404


def test_it_adds_a_local_vendor_key_without_making_it_primary(as_operator, tenant, vendor_operator):
    response = as_operator.post(
        reverse("vendor:key_create", args=["acme"]), {"provider": "local", "config_name": "Spare"}
    )
    assert response.status_code == 302
    config = KmsConfig.objects.get(tenant=tenant, name="Spare")
    assert config.owner == "vendor" and not config.is_primary and config.secret_fields_set == ["kek"]
    event = AuditEvent.objects.for_tenant(tenant).get(action="kms_config.created", target_id=str(config.uid))
    assert event.actor_user == vendor_operator
    assert KeyHistoryEntry.objects.for_tenant(tenant).filter(kms_config=config, action="created").exists()


def test_test_connection_answers_inline_before_anything_is_saved(as_admin, tenant, moto):
    url = reverse("vendor:key_test", args=["acme"])
    ok = as_admin.post(url, _aws_form(moto), headers={"HX-Request": "true"})
    assert ok.status_code == 200 and b"Connected" in ok.content and b"<html" not in ok.content
    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    failed = as_admin.post(url, _aws_form(moto, key_id=missing))
    assert b"Failed" in failed.content
    invalid = as_admin.post(url, _aws_form(moto, key_id="not an arn"))
    assert b"Not tested" in invalid.content and b"key_id" in invalid.content
    assert not KmsConfig.objects.filter(tenant=tenant, provider="aws").exists()


def test_the_vendors_own_kms_on_a_private_address_is_tested_like_it_is_saved(as_admin, tenant, moto, settings):
    # the egress policy guards configurations a tenant types in; the vendor's own KMS is its infrastructure
    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = []
    url = reverse("vendor:key_test", args=["acme"])
    ok = as_admin.post(url, _aws_form(moto), headers={"HX-Request": "true"})
    assert b"Connected" in ok.content, ok.content.decode()


def test_it_saves_a_key_in_the_vendors_aws_kms_and_never_shows_its_credentials(as_admin, tenant, moto):
    data = _aws_form(moto)
    response = as_admin.post(reverse("vendor:key_create", args=["acme"]), data)
    assert response.status_code == 302
    config = KmsConfig.objects.get(tenant=tenant, provider="aws")
    assert config.owner == "vendor" and config.health == "ok" and config.rate_limit == 50
    assert sorted(config.secret_fields_set) == ["access_key_id", "secret_access_key"]
    assert data["secret_access_key"] not in str(config.settings)
    page = as_admin.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert "secret_access_key ✓ set" in page
    assert data["secret_access_key"] not in page and data["access_key_id"] not in page
    audit = AuditEvent.objects.for_tenant(tenant).get(action="kms_config.created", target_id=str(config.uid))
    assert data["secret_access_key"] not in str(audit.changes)


def test_after_an_error_the_secrets_must_be_typed_again(as_admin, tenant, moto):
    data = _aws_form(moto, key_id="not an arn")
    response = as_admin.post(reverse("vendor:key_create", args=["acme"]), data)
    assert response.status_code == 400
    assert response.context["form"].errors  # the provider's message sits on its field
    assert "key_id" in response.context["form"].errors
    assert data["secret_access_key"] not in response.content.decode()


def test_making_a_vendor_key_primary_starts_the_rekey_job_and_shows_it(as_admin, tenant):
    second = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Second", {}, {}), actor=Actor.system("t")
    )
    response = as_admin.post(reverse("vendor:key_make_primary", args=["acme", second.uid]))
    job = RekeyJob.objects.get(tenant=tenant, target_config=second)
    assert response.status_code == 302 and response["Location"] == reverse("vendor:job", args=[job.uid])
    second.refresh_from_db()
    assert second.is_primary
    assert AuditEvent.objects.for_tenant(tenant).filter(action="kms_config.made_primary").exists()


def test_decrypt_only_and_retire_change_a_spare_vendor_key(as_admin, tenant, vendor_admin):
    spare = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Spare", {}, {}), actor=Actor.system("t")
    )
    as_admin.post(reverse("vendor:key_decrypt_only", args=["acme", spare.uid]))
    spare.refresh_from_db()
    assert spare.state == "decrypt_only"
    # retiring is destructive: the password is asked for first, then the retirement happens
    url = reverse("vendor:key_retire", args=["acme", spare.uid])
    response = as_admin.post(url)
    assert response.status_code == 302 and reverse("account_reauthenticate") in response["Location"]
    spare.refresh_from_db()
    assert spare.state == "decrypt_only"
    reauthenticate(as_admin)
    response = as_admin.post(url)
    spare.refresh_from_db()
    assert spare.state == "retired"
    event = AuditEvent.objects.for_tenant(tenant).get(action="kms_config.retired")
    assert event.actor_user == vendor_admin and event.changes == {"state": ["decrypt_only", "retired"]}


def test_a_key_that_still_holds_tenant_keys_alone_cannot_be_retired(as_admin, tenant):
    old = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    second = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Second", {}, {}), actor=Actor.system("t")
    )
    keys.kms_config_make_primary(config=second, actor=Actor.system("t"))  # the job has not run: v1 is only under old
    reauthenticate(as_admin)
    response = as_admin.post(reverse("vendor:key_retire", args=["acme", old.uid]), follow=True)
    assert "wrapped only under" in response.content.decode()
    old.refresh_from_db()
    assert old.state == "decrypt_only"


def test_the_tenants_own_key_is_shown_but_not_the_vendors_to_touch(as_admin, tenant, tenant_own_key, moto):
    page = as_admin.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert "Acme&#x27;s AWS key" in page and "the tenant's; never shown" in page
    assert "Managed by the tenant" in page
    from tests.providers.servers import AWS_TEST_CREDENTIALS

    assert AWS_TEST_CREDENTIALS["secret_access_key"] not in page
    reauthenticate(as_admin)
    for name in ("key_make_primary", "key_decrypt_only", "key_retire"):
        assert as_admin.post(reverse(f"vendor:{name}", args=["acme", tenant_own_key.uid])).status_code == 404
    tenant_own_key.refresh_from_db()
    assert tenant_own_key.is_primary and tenant_own_key.state == "active"


@pytest.mark.parametrize("status", ["active", "suspended"])
def test_a_vendor_key_never_replaces_the_tenants_own_key(as_admin, tenant, tenant_own_key, status):
    if status == "suspended":
        tenant_set_status(tenant=tenant, transition="suspend", actor=Actor.system("t"))
    vendor_key = KmsConfig.objects.get(tenant=tenant, owner="vendor")
    page = as_admin.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert "a vendor-provided key can never replace it, whatever the tenant&#x27;s status" in page
    assert 'disabled aria-describedby="primary-rule"' in page
    response = as_admin.post(reverse("vendor:key_make_primary", args=["acme", vendor_key.uid]), follow=True)
    assert "can never replace it" in response.content.decode()
    tenant_own_key.refresh_from_db()
    assert tenant_own_key.is_primary
    assert not RekeyJob.objects.filter(target_config=vendor_key).exists()
    assert AuditEvent.objects.filter(tenant=tenant, action="vendor.refused").count() == 1


@pytest.mark.parametrize(("provider", "secret"), [("kmip", "client_key"), ("pkcs11", "pin")])
def test_every_providers_form_keeps_its_secrets_write_only(as_admin, tenant, provider, secret):
    url = reverse("vendor:key_create", args=["acme"])
    assert as_admin.get(url, {"provider": provider}).status_code == 200
    leaked = "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----"
    response = as_admin.post(url + f"?provider={provider}", {"provider": provider, secret: leaked})
    assert response.status_code == 400  # required settings are missing
    assert response.context["form"].errors
    assert "not-a-real-key" not in response.content.decode()
    assert f'name="{secret}"' in response.content.decode()
    assert not KmsConfig.objects.filter(tenant=tenant, provider=provider).exists()
