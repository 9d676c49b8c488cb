"""KMS configurations in the tenant portal: bring a key, test it, save it, make it primary, demote, disable,
revoke (typed name + password), re-enable; credentials write-only; vendor-provided keys read-only."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from keycore import errors
from keycore.models import AuditEvent, KeyHistoryEntry, KmsConfig, RekeyJob
from keycore.models.keys import ConfigOwner, ConfigState
from keycore.services.crypto import CallMeta, crypto_encrypt
from tests.tenant_portal.conftest import SECRET, aws_form, reauthenticate, url

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def vendor_config(tenant) -> KmsConfig:
    return KmsConfig.objects.for_tenant(tenant).get(owner=ConfigOwner.VENDOR)


# --- the form ------------------------------------------------------------------------------


def test_it_offers_every_provider_a_tenant_may_bring_and_not_the_vendors_own(owner_client, tenant):
    page = owner_client.get(url("key_new", tenant)).content.decode()
    for name in ("aws", "kmip", "pkcs11"):
        assert url("key_create", tenant, provider=name) in page
    assert url("key_create", tenant, provider="local") not in page
    assert owner_client.get(url("key_create", tenant, provider="local")).status_code == 404
    assert owner_client.get(url("key_create", tenant, provider="no-such-kms")).status_code == 404


def test_the_aws_form_shows_the_key_policy_filled_in_for_this_tenant(owner_client, tenant, settings):
    settings.KEYCORE_VENDOR_PRINCIPAL = "arn:aws:iam::999988887777:role/vendor-keycore"
    page = owner_client.get(url("key_create", tenant, provider="aws")).content.decode()
    assert "arn:aws:iam::999988887777:role/vendor-keycore" in page
    assert tenant.uid.hex in page  # the encryption-context condition names this tenant
    assert "kms:Encrypt" in page and "kms:Decrypt" in page
    # secrets are password inputs that never carry a value
    assert 'type="password" name="secret_access_key"' in page
    assert 'type="password" name="access_key_id"' in page


def test_the_kmip_form_takes_pem_blocks_in_textareas_and_the_private_key_write_only(owner_client, tenant):
    page = owner_client.get(url("key_create", tenant, provider="kmip")).content.decode()
    assert '<textarea name="client_certificate"' in page
    assert '<textarea name="client_key"' in page
    assert '<textarea name="ca_bundle"' in page
    assert "write-only" in page


def test_the_pkcs11_form_takes_the_pin_write_only(owner_client, tenant):
    page = owner_client.get(url("key_create", tenant, provider="pkcs11")).content.decode()
    assert 'type="password" name="pin"' in page
    assert 'name="token_label"' in page and 'name="key_label"' in page


# --- test connection ---------------------------------------------------------------------


def test_test_connection_wraps_and_unwraps_through_the_kms_and_saves_nothing(owner_client, tenant, moto, kms_key):
    response = owner_client.post(url("key_test", tenant, provider="aws"), aws_form(moto, kms_key), **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Connection works" in body
    assert kms_key in body  # the result names the key it reached
    assert SECRET not in body
    assert not KmsConfig.objects.for_tenant(tenant).filter(owner=ConfigOwner.TENANT).exists()


def test_test_connection_says_precisely_why_it_failed(owner_client, tenant, moto):
    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000"
    response = owner_client.post(url("key_test", tenant, provider="aws"), aws_form(moto, missing), **HTMX)
    body = response.content.decode()
    assert "Test failed" in body
    assert "kms-key-not-found" in body or "not found" in body.lower()
    assert SECRET not in body


def test_test_connection_works_without_javascript_too(owner_client, tenant, moto, kms_key):
    response = owner_client.post(url("key_test", tenant, provider="aws"), aws_form(moto, kms_key))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Connection works" in body and "What your KMS must allow" in body
    assert SECRET not in body


def test_bad_provider_settings_come_back_as_field_errors(owner_client, tenant, moto):
    form = aws_form(moto, "arn:aws:kms:nowhere:12:key/x", secret_access_key="", region="Mars")
    response = owner_client.post(url("key_create", tenant, provider="aws"), form)
    assert response.status_code == 400
    errors_by_field = response.context["form"].errors
    assert "key_id" in errors_by_field
    assert "region" in errors_by_field
    assert "secret_access_key" in errors_by_field  # an access key id without its secret
    assert not KmsConfig.objects.for_tenant(tenant).filter(owner=ConfigOwner.TENANT).exists()


def test_a_tenant_cannot_point_keycore_at_a_private_network(owner_client, tenant, moto, kms_key, settings):
    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = []
    response = owner_client.post(url("key_create", tenant, provider="aws"), aws_form(moto, kms_key))
    assert response.status_code == 400
    assert b"not a public address" in response.content
    assert not KmsConfig.objects.for_tenant(tenant).filter(owner=ConfigOwner.TENANT).exists()


# --- saving and write-only credentials ------------------------------------------------------


def test_saving_tests_again_and_stores_the_key_as_the_tenants_own(owner_client, tenant, moto, kms_key, owner):
    response = owner_client.post(url("key_create", tenant, provider="aws"), aws_form(moto, kms_key))
    config = KmsConfig.objects.for_tenant(tenant).get(owner=ConfigOwner.TENANT)
    assert response["Location"] == url("key", tenant, config=config.uid)
    assert config.name == "Acme production key"
    assert config.health == "ok"
    assert not config.is_primary  # saving protects nothing yet
    assert config.secret_fields_set and "secret_access_key" in config.secret_fields_set
    assert SECRET.encode() not in bytes(config.sealed_secrets)
    event = AuditEvent.objects.get(tenant=tenant, action="kms_config.created", target_id=str(config.uid))
    assert event.actor_user == owner
    assert SECRET not in str(event.changes)


def test_a_saved_secret_never_appears_in_any_response(owner_client, tenant, moto, kms_key):
    owner_client.post(url("key_create", tenant, provider="aws"), aws_form(moto, kms_key))
    config = KmsConfig.objects.for_tenant(tenant).get(owner=ConfigOwner.TENANT)
    pages = [
        url("overview", tenant),
        url("key_state", tenant),
        url("keys", tenant),
        url("key", tenant, config=config.uid),
        url("key_revoke", tenant, config=config.uid),
        url("key_create", tenant, provider="aws"),
        url("jobs", tenant),
    ]
    for page in pages:
        response = owner_client.get(page)
        assert response.status_code == 200, page
        assert SECRET.encode() not in response.content, page
        assert b"AKIAKEYCORETESTING01" not in response.content, page  # the access key id is a credential too
    detail = owner_client.get(url("key", tenant, config=config.uid)).content.decode()
    assert "Secret access key" in detail and "set" in detail


def test_a_form_sent_back_with_errors_does_not_echo_the_secret(owner_client, tenant, moto):
    form = aws_form(moto, "not-an-arn")
    response = owner_client.post(url("key_create", tenant, provider="aws"), form)
    assert response.status_code == 400
    assert SECRET.encode() not in response.content
    assert b"AKIAKEYCORETESTING01" not in response.content
    assert b"type them again" in response.content


def test_replacing_credentials_asks_for_the_password_and_never_parks_them_in_the_session(
    owner_client, tenant, own_config
):
    new_secret = "Replacement/Secret+AlsoNeverShown987654321"
    target = url("key_secrets", tenant, config=own_config.uid)
    response = owner_client.post(target, {"secret_access_key": new_secret, "access_key_id": "AKIAKEYCORETESTING02"})
    assert response["Location"].startswith(reverse("account_reauthenticate"))
    assert new_secret not in str(dict(owner_client.session))
    reauthenticate(owner_client)
    response = owner_client.post(target, {"secret_access_key": new_secret, "access_key_id": "AKIAKEYCORETESTING02"})
    assert response["Location"] == url("key", tenant, config=own_config.uid)
    assert AuditEvent.objects.filter(tenant=tenant, action="kms_config.secrets_replaced").count() == 1
    for page in (url("key", tenant, config=own_config.uid), url("keys", tenant)):
        assert new_secret.encode() not in owner_client.get(page).content


# --- actions ---------------------------------------------------------------------------------


def test_make_primary_asks_for_the_password_then_starts_the_rekey_job(owner_client, tenant, own_config):
    target = url("key_primary", tenant, config=own_config.uid)
    response = owner_client.post(target)
    assert response["Location"].startswith(reverse("account_reauthenticate"))
    own_config.refresh_from_db()
    assert not own_config.is_primary
    # the password, and allauth replays the suspended POST
    response = owner_client.post(
        reverse("account_reauthenticate") + f"?next={target}", {"password": "correct horse battery staple"}
    )
    own_config.refresh_from_db()
    assert own_config.is_primary
    job = RekeyJob.objects.for_tenant(tenant).get(target_config=own_config)
    assert response["Location"] == url("job", tenant, job=job.uid)
    assert vendor_config(tenant).state == ConfigState.DECRYPT_ONLY
    assert KeyHistoryEntry.objects.for_tenant(tenant).filter(kms_config=own_config, action="made_primary").exists()
    tenant.refresh_from_db()
    assert tenant.key_ownership == "tenant"


def test_make_primary_and_reenable_have_a_page_that_says_what_happens_before_anything_does(
    owner_client, tenant, own_config
):
    detail = owner_client.get(url("key", tenant, config=own_config.uid)).content.decode()
    assert f'href="{url("key_primary", tenant, config=own_config.uid)}"' in detail
    assert 'data-confirm="Make' not in detail  # no dialog: a page of its own
    page = owner_client.get(url("key_primary", tenant, config=own_config.uid)).content.decode()
    assert "Make Acme AWS key primary" in page and "a rekey job moves your tenant key version under" in page
    assert "becomes <strong>decrypt-only</strong>" in page and "asks for your password" in page
    assert f'action="{url("key_primary", tenant, config=own_config.uid)}"' in page
    own_config.refresh_from_db()
    assert not own_config.is_primary and not RekeyJob.objects.for_tenant(tenant).exists()

    reauthenticate(owner_client)
    owner_client.post(url("key_disable", tenant, config=own_config.uid))
    page = owner_client.get(url("key_reenable", tenant, config=own_config.uid)).content.decode()
    assert "Re-enable Acme AWS key" in page and "as <strong>decrypt-only</strong>" in page
    own_config.refresh_from_db()
    assert own_config.state == ConfigState.DISABLED
    # the other actions stay POST-only
    assert owner_client.get(url("key_disable", tenant, config=own_config.uid)).status_code == 405


def test_an_auditor_cannot_open_the_confirmation_pages(client, member, tenant, own_config):
    client.force_login(member)
    for name in ("key_primary", "key_reenable"):
        assert client.get(url(name, tenant, config=own_config.uid)).status_code == 403


def test_demote_disable_and_reenable(owner_client, tenant, own_config):
    reauthenticate(owner_client)
    owner_client.post(url("key_demote", tenant, config=own_config.uid))
    own_config.refresh_from_db()
    assert own_config.state == ConfigState.DECRYPT_ONLY
    owner_client.post(url("key_disable", tenant, config=own_config.uid))
    own_config.refresh_from_db()
    assert own_config.state == ConfigState.DISABLED
    page = owner_client.get(url("key", tenant, config=own_config.uid)).content.decode()
    assert "Disabled." in page and "Re-enable" in page
    owner_client.post(url("key_reenable", tenant, config=own_config.uid))
    own_config.refresh_from_db()
    assert own_config.state == ConfigState.DECRYPT_ONLY  # not primary: it comes back decrypt-only
    actions = set(
        AuditEvent.objects.filter(tenant=tenant, target_id=str(own_config.uid)).values_list("action", flat=True)
    )
    assert {"kms_config.decrypt_only", "kms_config.disabled", "kms_config.reenabled"} <= actions


def test_an_action_the_state_does_not_allow_shows_the_services_reason(owner_client, tenant, own_config):
    reauthenticate(owner_client)
    response = owner_client.post(url("key_reenable", tenant, config=own_config.uid), follow=True)
    assert b"is not disabled or revoked" in response.content
    own_config.refresh_from_db()
    assert own_config.state == ConfigState.ACTIVE


def test_check_now_records_the_health_of_the_kms(owner_client, tenant, own_config, moto):
    moto.client().disable_key(KeyId=own_config.settings["key_id"].rsplit("/", 1)[1])
    response = owner_client.post(url("key_check", tenant, config=own_config.uid), follow=True)
    assert b"Health check failed" in response.content
    assert b"Disabled" in response.content  # AWS's own state, named
    own_config.refresh_from_db()
    assert own_config.health == "failing"


def test_vendor_provided_keys_are_read_only_for_the_tenant(owner_client, tenant):
    config = vendor_config(tenant)
    page = owner_client.get(url("key", tenant, config=config.uid)).content.decode()
    assert "provided by the vendor" in page.lower() or "The vendor created this key" in page
    assert url("key_revoke", tenant, config=config.uid) not in page
    assert url("key_disable", tenant, config=config.uid) not in page
    reauthenticate(owner_client)
    for name in ("key_disable", "key_demote", "key_reenable", "key_revoke", "key_check", "key_secrets"):
        response = owner_client.post(url(name, tenant, config=config.uid), {"confirm_name": tenant.name}, follow=True)
        assert b"provided by the vendor" in response.content, name
    config.refresh_from_db()
    assert config.state == ConfigState.ACTIVE and config.is_primary


# --- revoke: the kill switch --------------------------------------------------------------


def _make_primary(client, tenant, config):
    """Make ``config`` primary through the portal and run its rekey job here, as a worker would."""
    from keycore.services.jobs import job_run

    reauthenticate(client)
    client.post(url("key_primary", tenant, config=config.uid))
    config.refresh_from_db()
    assert config.is_primary
    job = RekeyJob.objects.for_tenant(tenant).get(target_config=config)
    assert job_run(job.pk).state == "succeeded"


def test_the_revoke_page_says_what_stops_and_who_can_undo_it(owner_client, tenant, own_config):
    page = owner_client.get(url("key_revoke", tenant, config=own_config.uid)).content.decode()
    assert "Every encrypt and every decrypt" in page
    assert "every application and service of the vendor" in page
    assert "Within 2 seconds" in page
    assert "Not the vendor." in page
    assert "re-enable" in page.lower() and "destroyed in your KMS" in page
    assert f'data-confirm-text="{tenant.name}"' in page
    assert "data-confirm-target" in page


def test_revoke_refuses_a_wrong_tenant_name_on_the_server(owner_client, tenant, own_config):
    reauthenticate(owner_client)
    for typed in ("", "Acme", "acme corporation", "Globex Industries"):
        response = owner_client.post(url("key_revoke", tenant, config=own_config.uid), {"confirm_name": typed})
        assert response.status_code == 400, typed
        assert b"Type the tenant&#x27;s name exactly" in response.content
    own_config.refresh_from_db()
    assert own_config.state == ConfigState.ACTIVE


def refused_within(seconds: float, tenant, meta) -> str:
    """Encrypt until KeyCore refuses (or ``seconds`` pass); the refusal's code."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            crypto_encrypt(tenant=tenant.external_id, fields={"amount": b"42"}, meta=meta)
        except errors.KeyUnavailable as exc:
            return exc.code
        if time.monotonic() > deadline:
            return "still encrypting"
        time.sleep(0.05)


def test_revoke_needs_the_password_then_encrypt_is_refused(owner_client, tenant, own_config, settings):
    _make_primary(owner_client, tenant, own_config)
    meta = CallMeta(requesting_id="billing-service", label="invoices")
    crypto_encrypt(tenant=tenant.external_id, fields={"amount": b"42"}, meta=meta)
    owner_client.logout()
    owner_client.force_login(own_config.tenant.memberships.get(role="owner").user)  # a fresh session: no re-auth yet
    target = url("key_revoke", tenant, config=own_config.uid)
    response = owner_client.post(target, {"confirm_name": tenant.name})
    assert response["Location"].startswith(reverse("account_reauthenticate"))
    own_config.refresh_from_db()
    assert own_config.state == ConfigState.ACTIVE
    response = owner_client.post(
        reverse("account_reauthenticate") + f"?next={target}", {"password": "correct horse battery staple"}
    )
    assert response["Location"] == url("key", tenant, config=own_config.uid)
    own_config.refresh_from_db()
    assert own_config.state == ConfigState.REVOKED
    # other processes learn of it by polling the revocation epoch; this one too, within 2 seconds
    assert refused_within(2.0, tenant, meta) == "key-revoked"
    assert KeyHistoryEntry.objects.for_tenant(tenant).filter(kms_config=own_config, action="revoked").exists()
    page = owner_client.get(url("overview", tenant)).content.decode()
    assert "Your data cannot be read or written" in page
