"""MFA secrets at rest are bound to their authenticator: a sealed TOTP secret or recovery-code seed copied
into another user's row answers to none of the first user's codes (issue 19, item 6)."""

from __future__ import annotations

import base64
import importlib

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from django.apps import apps
from django.urls import reverse

from keycore.roles import TenantRole
from keycore.sealing import MFA_LEGACY_CONTEXT, MFA_LEGACY_MARKER, MFA_PURPOSE, root_keyring
from tests.factories import PASSWORD, make_member, totp_code

pytestmark = pytest.mark.django_db


def _second_step(client, user, code):
    """Sign in with the password, then answer the second step with ``code``; whether the user got in."""
    client.logout()
    assert client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD}).status_code == 302
    response = client.post(reverse("mfa_authenticate"), {"code": code})
    return response.status_code == 302


def _stored(user, kind) -> dict:
    return Authenticator.objects.filter(user=user, type=kind).values_list("data", flat=True).get()


def _copy(field, kind, source, target):
    """What someone with write access to the database does: A's sealed value into B's row."""
    data = _stored(target, kind)
    data[field] = _stored(source, kind)[field]
    Authenticator.objects.filter(user=target, type=kind).update(data=data)


@pytest.fixture
def alice(tenant):
    return make_member(tenant, "alice@acme.example", TenantRole.ADMIN)


@pytest.fixture
def bob(tenant):
    return make_member(tenant, "bob@acme.example", TenantRole.ADMIN)


def test_a_stored_totp_secret_names_its_user_and_kind_and_holds_no_clear_secret(alice):
    stored = _stored(alice, "totp")["secret"]
    assert stored.startswith(f"kcmfa:{alice.pk}:totp:")
    assert alice.totp_secret not in stored
    assert alice.totp_secret.encode() not in base64.b64decode(stored.rsplit(":", 1)[1])


def test_a_totp_secret_copied_into_another_account_answers_to_none_of_its_codes(client, alice, bob):
    _copy("secret", "totp", alice, bob)
    assert not _second_step(client, bob, totp_code(alice.totp_secret))
    assert _second_step(client, alice, totp_code(alice.totp_secret))  # alice is unaffected


def test_a_claim_edited_to_match_the_new_row_does_not_unseal_either(client, alice, bob):
    data = _stored(bob, "totp")
    data["secret"] = _stored(alice, "totp")["secret"].replace(f"kcmfa:{alice.pk}:", f"kcmfa:{bob.pk}:", 1)
    Authenticator.objects.filter(user=bob, type="totp").update(data=data)
    assert not _second_step(client, bob, totp_code(alice.totp_secret))


def test_a_totp_secret_moved_into_the_recovery_codes_row_is_refused(alice):
    RecoveryCodes.activate(alice)
    _copy_field = _stored(alice, "totp")["secret"]
    data = _stored(alice, "recovery_codes")
    data["seed"] = _copy_field
    Authenticator.objects.filter(user=alice, type="recovery_codes").update(data=data)
    codes = Authenticator.objects.get(user=alice, type="recovery_codes").wrap().generate_codes()
    assert codes != RecoveryCodes(Authenticator(user=alice, type="recovery_codes", data=data)).generate_codes()


def test_recovery_codes_copied_into_another_account_are_refused(client, alice, bob):
    alice_codes = RecoveryCodes.activate(alice).generate_codes()
    RecoveryCodes.activate(bob)
    _copy("seed", "recovery_codes", alice, bob)
    assert not _second_step(client, bob, alice_codes[0])
    assert _second_step(client, alice, alice_codes[1])


def test_the_migration_binds_secrets_sealed_under_the_old_fixed_context(client, alice, bob):
    """Rows from before the binding (context "allauth") are re-sealed to their own row; unmigrated ones are refused."""
    legacy = (
        MFA_LEGACY_MARKER
        + base64.b64encode(
            root_keyring().seal(alice.totp_secret.encode(), purpose=MFA_PURPOSE, context=MFA_LEGACY_CONTEXT)
        ).decode()
    )
    for user in (alice, bob):  # bob's row holds a copy of alice's old blob: the move this closes
        Authenticator.objects.filter(user=user, type="totp").update(data={"secret": legacy})
    assert not _second_step(client, alice, totp_code(alice.totp_secret)), "an unbound secret is never accepted"

    migration = importlib.import_module("keycore.migrations.0014_bind_mfa_secrets_to_their_authenticator")
    migration.bind(apps, None)

    assert _stored(alice, "totp")["secret"].startswith(f"kcmfa:{alice.pk}:totp:")
    assert _second_step(client, alice, totp_code(alice.totp_secret))
    # bob's copy is bound to bob now; moving alice's migrated value into bob's row is refused as above
    _copy("secret", "totp", alice, bob)
    assert not _second_step(client, bob, totp_code(alice.totp_secret))
