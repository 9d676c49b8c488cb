"""Passkeys in Chromium, with the browser's own WebAuthn stack and a CDP virtual authenticator standing in
for Touch ID or a YubiKey: a new tenant owner meets the MFA requirement with a passkey, signs in with it as
a second factor and then alone, confirms a key revocation with it, and removes it — on pages that run
under KeyCore's unchanged CSP without a single violation."""

from __future__ import annotations

import re

import pytest
from allauth.mfa.models import Authenticator

from keycore.models import AuditEvent, KmsConfig
from keycore.models.keys import ConfigOwner
from keycore.roles import TenantRole
from keycore.services.audit import Actor
from keycore.services.keys import ConfigInput, kms_config_create
from tests.browser.conftest import shot, sign_in
from tests.factories import PASSWORD, make_member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "security.owner@acme.example"


def add_virtual_authenticator(page) -> tuple[object, str]:
    """A platform authenticator (like Touch ID) that keeps passkeys and verifies its user; CDP session and id."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def watch_for_script_trouble(page) -> list[str]:
    """Console errors (a CSP violation is one) and uncaught exceptions, for the test to assert there were none."""
    trouble: list[str] = []
    page.on("console", lambda message: trouble.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: trouble.append(str(error)))
    return trouble


def sign_out(page) -> None:
    page.locator("details.account-menu summary").click()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state("networkidle")


def last_sign_in(user) -> AuditEvent:
    return AuditEvent.objects.filter(action="auth.signed_in", actor_user=user).order_by("-id").first()


def test_an_owner_enrols_a_passkey_signs_in_with_it_confirms_a_revocation_with_it_and_removes_it(
    page, live_server, moto, tenant
):
    assert live_server.url.startswith("http://localhost:"), "WebAuthn needs a secure context: localhost, not an IP"
    trouble = watch_for_script_trouble(page)
    cdp, authenticator_id = add_virtual_authenticator(page)
    owner = make_member(tenant, EMAIL, TenantRole.OWNER, mfa=False)
    settings, secrets = moto.provider_settings(moto.create_key())
    config = kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.TENANT,
        data=ConfigInput(provider="aws", name="Acme AWS key", settings=settings, secrets=secrets),
        actor=Actor.system("tests"),
    )
    overview = f"/tenant/{tenant.external_id}/"

    # --- an owner must have MFA: a passkey meets it ------------------------------------------------------
    sign_in(page, EMAIL, PASSWORD)
    page.wait_for_url("**/accounts/2fa/")  # straight from the sign-in, through the portal's MFA gate
    assert page.get_by_text("requires two-factor authentication").first.is_visible()
    shot(page, "01-two-factor-choices")
    page.get_by_role("button", name="Add a passkey").click()
    page.wait_for_url("**/accounts/reauthenticate/**")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url("**/2fa/webauthn/add/**")
    page.fill("input[name=name]", "Work laptop")
    page.get_by_label("Also sign in with it alone").check()
    shot(page, "02-add-passkey")
    page.get_by_role("button", name="Create passkey").click()
    page.wait_for_url("**/2fa/recovery-codes/**")
    assert page.get_by_text("Passkey added.").is_visible()
    shot(page, "03-recovery-codes")
    [credential] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})["credentials"]
    assert credential["isResidentCredential"] and credential["rpId"] == "localhost"
    [passkey] = Authenticator.objects.filter(user=owner, type=Authenticator.Type.WEBAUTHN)
    assert passkey.wrap().name == "Work laptop" and passkey.wrap().is_passwordless is True
    page.get_by_role("button", name="Continue to KeyCore").click()
    page.wait_for_url(f"**{overview}")
    assert page.get_by_role("heading", name="Acme Corporation").is_visible()

    # --- a second factor after the password --------------------------------------------------------------
    sign_out(page)
    sign_in(page, EMAIL, PASSWORD)
    page.wait_for_url("**/2fa/authenticate/**")
    shot(page, "04-second-factor")
    page.get_by_role("button", name="Use a passkey").click()
    page.wait_for_url(f"**{overview}")
    assert last_sign_in(owner).changes == {"method": [None, "password+passkey"]}

    # --- alone, without a password -------------------------------------------------------------------------
    sign_out(page)
    page.goto("/accounts/login/")
    shot(page, "05-sign-in")
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(f"**{overview}")
    assert last_sign_in(owner).changes == {"method": [None, "passkey"]}

    # --- revoking the tenant's own key: confirmed with the passkey ----------------------------------------------
    page.goto(f"/tenant/{tenant.external_id}/keys/{config.uid}/revoke/")
    page.fill("input[name=confirm_name]", tenant.name)
    page.get_by_role("button", name="Revoke Acme AWS key").click()
    page.wait_for_url("**/accounts/reauthenticate/**")
    assert page.get_by_role("button", name=re.compile("sign-in code|email", re.I)).count() == 0
    shot(page, "06-confirm-it-is-you")
    page.get_by_role("button", name="Use a passkey").click()
    page.wait_for_url("**/2fa/webauthn/reauthenticate/**")
    shot(page, "07-confirm-with-a-passkey")
    page.get_by_role("button", name="Confirm with a passkey").click()
    page.wait_for_url(f"**/keys/{config.uid}/")
    assert page.get_by_text("is revoked. Within").is_visible()
    config.refresh_from_db()
    assert config.state == "revoked"
    revoked = AuditEvent.objects.get(action="kms_config.revoked", target_id=str(config.uid))
    assert revoked.actor_user == owner

    # --- removing it: the MFA requirement applies again ---------------------------------------------------------
    page.goto("/accounts/2fa/")
    page.get_by_role("button", name="Manage passkeys").click()
    page.wait_for_url("**/2fa/webauthn/")
    shot(page, "08-passkeys")
    page.get_by_role("button", name="Remove Work laptop").click()
    page.wait_for_url(re.compile(r".*/2fa/webauthn/keys/\d+/remove/$"))
    shot(page, "09-remove-passkey")
    page.get_by_role("button", name="Remove Work laptop").click()
    page.wait_for_url("**/2fa/webauthn/")
    assert page.get_by_text("Passkey removed.").is_visible()
    shot(page, "10-passkey-removed")
    assert not Authenticator.objects.filter(user=owner).exists()  # its recovery codes went with it
    removed = AuditEvent.objects.get(action="mfa.removed", actor_user=owner, changes__type=["webauthn", None])
    assert removed.changes["name"] == ["Work laptop", None]
    page.goto(overview)
    page.wait_for_url("**/accounts/2fa/")

    assert trouble == [], trouble
    assert KmsConfig.objects.get(pk=config.pk).state == "revoked"
