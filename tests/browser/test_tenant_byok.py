"""A tenant's security administrator, end to end in Chromium: accept the invitation, sign up, enrol TOTP,
bring an AWS KMS key (moto), test it, make it primary, watch a real Celery worker move the tenant keys
under it, then revoke it — and KeyCore refuses to encrypt within two seconds."""

from __future__ import annotations

import re
import time

import pytest

from keycore import errors
from keycore.models import KmsConfig, RekeyJob
from keycore.services.audit import Actor
from keycore.services.crypto import CallMeta, crypto_encrypt
from keycore.services.tenants import invitation_create
from tests.browser.conftest import shot
from tests.factories import PASSWORD, totp_code

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "security.admin@acme.example"
SECRET_ACCESS_KEY = "Br0wser/Secret+NeverShownAgain0123456789"


def fresh_totp_code(secret: str) -> str:
    """A code that stays valid while the server checks it: not one about to roll over."""
    if time.time() % 30 > 26:
        time.sleep(30 - time.time() % 30 + 0.1)
    return totp_code(secret)


def _encrypt(tenant):
    return crypto_encrypt(
        tenant=tenant.external_id, fields={"iban": b"DE89370400440532013000"}, meta=CallMeta("billing", "payments")
    )


def test_a_security_admin_brings_a_key_makes_it_primary_and_revokes_it(
    page, live_server, celery_worker, moto, tenant, settings
):
    # every question is asked in the page, never in a browser dialog
    page.on("dialog", lambda dialog: pytest.fail(f"a browser dialog: {dialog.message}"))
    key_arn = moto.create_key()
    _, token = invitation_create(tenant=tenant, email=EMAIL, role="owner", actor=Actor.system("vendor"), send=False)

    # --- the invitation link, sign-up, TOTP enrolment -------------------------------------------
    page.goto(f"/invitations/{token}/")
    assert page.get_by_role("heading", name="Join Acme Corporation").is_visible()
    shot(page, "01-invitation")
    page.get_by_role("button", name="Create account").click()
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    shot(page, "02-sign-up")
    page.click("main button[type=submit]")
    # an owner must enrol MFA before seeing anything — straight away: the password was just chosen
    page.wait_for_url("**/accounts/2fa/")
    page.get_by_role("button", name="Set up an authenticator app").click()
    page.wait_for_url("**/2fa/totp/activate/**")
    shot(page, "03-enrol-totp")
    secret = page.input_value("#authenticator_secret")
    page.fill("input[name=code]", fresh_totp_code(secret))
    page.click("main button[type=submit]")
    page.wait_for_load_state("networkidle")
    shot(page, "03b-after-enrol")
    page.goto(f"/tenant/{tenant.external_id}/")
    assert page.get_by_text("Your data is protected by a vendor-provided key").is_visible()
    shot(page, "04-overview-vendor-key")

    # --- bring an AWS KMS key: form, setup help, test connection, save -----------------------------
    page.get_by_role("link", name="KMS keys").click()
    shot(page, "05-keys")
    page.get_by_role("button", name="Bring your own key").click()
    shot(page, "06-choose-provider")
    page.get_by_role("button", name="Use AWS KMS").click()
    assert page.get_by_text(tenant.uid.hex).first.is_visible()  # the key policy, filled in for this tenant
    page.fill("input[name=config_name]", "Acme production key")
    page.fill("input[name=key_id]", key_arn)
    page.fill("input[name=endpoint_url]", moto.url)
    page.fill("input[name=access_key_id]", "AKIAKEYCORETESTING01")
    page.fill("input[name=secret_access_key]", SECRET_ACCESS_KEY)
    page.get_by_role("button", name="Test connection").click()
    page.get_by_text("Connection works.").wait_for()
    assert not KmsConfig.objects.filter(tenant=tenant, owner="tenant").exists()  # testing saves nothing
    shot(page, "07-test-connection")
    page.get_by_role("button", name="Test and save").click()
    page.wait_for_url(re.compile(r".*/keys/[0-9a-f-]{36}/$"))
    config = KmsConfig.objects.get(tenant=tenant, owner="tenant")
    assert SECRET_ACCESS_KEY not in page.content()
    shot(page, "08-key-saved")

    # --- make it primary: a real worker moves the tenant keys; the page follows it ------------------
    page.get_by_role("button", name="Make primary…").click()
    assert page.get_by_role("heading", name="Make Acme production key primary").is_visible()
    assert page.get_by_text("Vendor-provided key, the primary key now, becomes decrypt-only").is_visible()
    shot(page, "08b-make-primary-confirm")
    page.get_by_role("button", name="Make Acme production key primary").click()
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}/$"))
    job = RekeyJob.objects.get(tenant=tenant, target_config=config)
    page.get_by_text("every tenant key version is wrapped under Acme production key").wait_for(timeout=60000)
    page.get_by_text("Only your key can unwrap your tenant keys").wait_for()  # refreshed by htmx on "job-finished"
    job.refresh_from_db()
    assert job.state == "succeeded" and job.done == job.total == 2  # v1 moved, v2 made under the key alone
    shot(page, "09-job-finished")
    page.get_by_role("link", name="Overview").click()
    assert page.get_by_text("Your data is protected by your own key").is_visible()
    history = page.locator("ol.timeline").first
    assert "Made primary" in history.inner_text() and "replacing Vendor-provided key" in history.inner_text()
    shot(page, "10-overview-own-key")
    assert _encrypt(tenant).edek  # works, under the tenant's own key

    # --- revoke: the explanation, the typed name, the password --------------------------------------
    page.goto(f"/tenant/{tenant.external_id}/keys/{config.uid}/")
    page.get_by_role("button", name="Revoke…").click()
    button = page.get_by_role("button", name="Revoke Acme production key")
    assert button.is_disabled()
    page.fill("input[name=confirm_name]", "Acme")
    assert button.is_disabled()
    page.fill("input[name=confirm_name]", tenant.name)
    assert button.is_enabled()
    shot(page, "11-revoke")
    # make the last password confirmation (at enrolment) too old, as it would be minutes later
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 1
    time.sleep(1.2)
    button.click()
    page.wait_for_url("**/accounts/reauthenticate/**")
    shot(page, "12-confirm-password")
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 300
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"**/keys/{config.uid}/")
    revoked_at = time.monotonic()
    assert page.get_by_text("is revoked. Within 2 seconds").is_visible()
    config.refresh_from_db()
    assert config.state == "revoked"

    # --- every KeyCore process refuses within two seconds: this one, polling the epoch, too ----------
    refusal = None
    while refusal is None and time.monotonic() - revoked_at < 2.0:
        try:
            _encrypt(tenant)
        except errors.KeyRevoked as exc:
            refusal = exc
        else:
            time.sleep(0.05)
    assert refusal is not None, "encrypt still worked 2 seconds after the revocation"
    assert "revoked" in refusal.detail
    shot(page, "13-key-revoked")
    page.get_by_role("link", name="Overview").click()
    assert page.get_by_text("Your data cannot be read or written").is_visible()
    shot(page, "14-overview-revoked")
