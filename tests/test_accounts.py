"""Accounts: sign-in by email with MFA, sign-up only by invitation, brute-force throttling, audit of sign-ins."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from keycore.models import AuditEvent, Membership
from tests.factories import PASSWORD, UserFactory, enable_totp, totp_code

pytestmark = pytest.mark.django_db


def _login(client, email, password=PASSWORD):
    return client.post(reverse("account_login"), {"login": email, "password": password})


def test_sign_in_with_a_totp_code(client, owner, tenant):
    response = _login(client, owner.email)
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    # not signed in until the second factor is given
    assert client.get(reverse("tenant:overview", args=[tenant.external_id])).status_code == 302
    response = client.post(
        reverse("mfa_authenticate"), {"code": "000000" if totp_code(owner.totp_secret) != "000000" else "111111"}
    )
    assert response.status_code == 200  # wrong code: the form again, with an error
    response = client.post(reverse("mfa_authenticate"), {"code": totp_code(owner.totp_secret)})
    assert response.status_code == 302
    assert client.get(reverse("tenant:overview", args=[tenant.external_id])).status_code == 200
    assert AuditEvent.objects.filter(action="auth.signed_in", actor_user=owner).count() == 1
    assert AuditEvent.objects.filter(action="mfa.code_rejected", actor_user=owner).count() == 1


def test_enrolling_totp(client, tenant, django_capture_on_commit_callbacks):
    from allauth.mfa.models import Authenticator

    from keycore.roles import TenantRole
    from tests.factories import make_member

    user = make_member(tenant, "new@acme.example", TenantRole.OWNER, mfa=False)
    assert _login(client, user.email).status_code == 302
    # an owner without MFA is sent to enrol before seeing the tenant
    assert client.get(reverse("tenant:overview", args=[tenant.external_id]))["Location"] == reverse("mfa_index")
    # enrolling a factor asks for the password again first
    assert client.get(reverse("mfa_activate_totp"))["Location"].startswith(reverse("account_reauthenticate"))
    assert client.post(reverse("account_reauthenticate"), {"password": PASSWORD}).status_code == 302
    page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200
    secret = page.context["form"].secret
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("mfa_activate_totp"), {"code": totp_code(secret)})
    assert response.status_code == 302
    stored = Authenticator.objects.get(user=user, type="totp")
    assert secret not in str(stored.data), "the TOTP secret must be sealed at rest"
    assert AuditEvent.objects.filter(action="mfa.added", actor_user=user).exists()
    assert client.get(reverse("tenant:overview", args=[tenant.external_id])).status_code == 200


def test_wrong_passwords_are_throttled(client, owner, settings):
    for _ in range(5):
        assert _login(client, owner.email, "wrong password").status_code == 200
    response = _login(client, owner.email, PASSWORD)
    # even the right password is refused until the window passes
    assert response.status_code == 200
    assert b"Too many failed login attempts" in response.content
    assert AuditEvent.objects.filter(action="auth.sign_in_failed").count() >= 5


def test_nobody_signs_up_uninvited(client):
    response = client.get(reverse("account_signup"))
    assert b"closed" in response.content.lower() or response.status_code == 302


def _invite(tenant, email="new.admin@acme.example", role="admin"):
    from keycore.services.audit import Actor
    from keycore.services.tenants import invitation_create

    invitation, token = invitation_create(tenant=tenant, email=email, role=role, actor=Actor.system("tests"))
    return invitation, token


def test_an_invitation_email_leads_to_sign_up_and_into_the_tenant(client, tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        invitation, token = _invite(tenant)
    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/invitations/\S+/", mail.outbox[0].body).group(0)
    assert token in link
    page = client.get(reverse("invitation_accept", args=[token]))
    assert b"Join Acme Corporation" in page.content
    # the sign-up page says what the account is for
    signup = client.get(reverse("account_signup")).content.decode()
    assert "To join <strong>Acme Corporation</strong> as <strong>" in signup
    assert "Invitation for new.admin@acme.example" in signup
    # the address must be the invited one
    bad = client.post(
        reverse("account_signup"), {"email": "someone.else@acme.example", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert bad.status_code == 200
    assert b"new.admin@acme.example" in bad.content
    response = client.post(
        reverse("account_signup"), {"email": "new.admin@acme.example", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302
    membership = Membership.objects.get(tenant=tenant, user__email="new.admin@acme.example")
    assert membership.role == "admin"
    # an admin must enrol MFA; having just chosen the password, it is not asked for again
    assert client.get(reverse("tenant:overview", args=[tenant.external_id]))["Location"] == reverse("mfa_index")
    assert client.get(reverse("mfa_activate_totp")).status_code == 200
    assert client.get(reverse("mfa_add_webauthn")).status_code == 200  # or a passkey
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None
    # the link is single-use
    client.logout()
    again = client.get(reverse("invitation_accept", args=[token]))
    assert again.status_code == 410
    assert b"already been used" in again.content


def test_an_existing_user_signs_in_and_accepts(client, tenant, other_tenant):
    from keycore.roles import TenantRole
    from tests.factories import make_member

    user = make_member(other_tenant, "both@example.com", TenantRole.OWNER)
    _, token = _invite(tenant, email="both@example.com", role="auditor")
    client.force_login(user)
    page = client.get(reverse("invitation_accept", args=[token]))
    assert b"Accept invitation" in page.content
    response = client.post(reverse("invitation_accept", args=[token]))
    assert response["Location"] == reverse("tenant:overview", args=[tenant.external_id])
    assert Membership.objects.get(tenant=tenant, user=user).role == "auditor"


def test_an_invitation_cannot_be_taken_by_another_account(client, tenant, outsider):
    _, token = _invite(tenant, email="intended@acme.example")
    client.force_login(outsider)
    response = client.post(reverse("invitation_accept", args=[token]))
    assert response.status_code == 403
    assert not Membership.objects.filter(tenant=tenant, user=outsider).exists()


@pytest.mark.parametrize("state", ["revoked", "expired", "replaced"])
def test_unusable_invitations_explain_themselves(client, tenant, state):
    from django.utils import timezone

    from keycore.services.audit import Actor
    from keycore.services.tenants import invitation_revoke

    invitation, token = _invite(tenant)
    if state == "revoked":
        invitation_revoke(invitation=invitation, actor=Actor.system("tests"))
        expected = b"withdrawn"
    elif state == "expired":
        invitation.expires_at = timezone.now()
        invitation.save()
        expected = b"expired"
    else:
        _invite(tenant)  # a new invitation for the same address replaces the old link
        expected = b"withdrawn"
    response = client.get(reverse("invitation_accept", args=[token]))
    assert response.status_code == 410
    assert expected in response.content


def test_vendor_staff_cannot_join_a_tenant(client, tenant, vendor_admin):
    _, token = _invite(tenant, email=vendor_admin.email)
    client.force_login(vendor_admin)
    response = client.post(reverse("invitation_accept", args=[token]))
    assert response.status_code == 403
    assert not Membership.objects.filter(user=vendor_admin).exists()


def test_password_reset_sends_a_link_without_revealing_accounts(client, owner):
    client.post(reverse("account_reset_password"), {"email": owner.email})
    client.post(reverse("account_reset_password"), {"email": "nobody@nowhere.example"})
    assert len(mail.outbox) == 2  # one reset link, one "no account" notice: same response for both
    assert "password" in mail.outbox[0].body.lower()


def test_user_factory_users_have_verified_addresses():
    user = UserFactory(email="x@example.com")
    assert user.emailaddress_set.get().verified
    assert enable_totp(user)
