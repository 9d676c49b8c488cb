"""django-allauth adaptation: sign-up only through an invitation, and the invitation proves the address;
MFA secrets sealed with the root key; allauth's passkey forms with bounded names and audited renames and
refusals."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.webauthn.forms import (
    AddWebAuthnForm,
    AuthenticateWebAuthnForm,
    EditWebAuthnForm,
    LoginWebAuthnForm,
    ReauthenticateWebAuthnForm,
)
from django import forms
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.urls import reverse

from keycore import errors
from keycore.sealing import seal_mfa_secret, unseal_mfa_secret
from keycore.services.audit import Actor, audit_record, client_ip
from keycore.services.tenants import invitation_lookup

INVITATION_SESSION_KEY = "keycore_invitation_token"


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        """Nobody signs up uninvited: KeyCore accounts come from invitations."""
        token = request.session.get(INVITATION_SESSION_KEY)
        if not token:
            return False
        try:
            invitation_lookup(token)
        except errors.KeyCoreError:
            return False
        return True

    def clean_email(self, email: str) -> str:
        """At sign-up, the address must be the one the invitation was sent to."""
        request = getattr(self, "request", None)
        token = request.session.get(INVITATION_SESSION_KEY) if request is not None else None
        if token and request.path.startswith(reverse("account_signup")):
            try:
                invitation = invitation_lookup(token)
            except errors.KeyCoreError as exc:
                raise forms.ValidationError(exc.detail) from exc
            if invitation.email.lower() != (email or "").lower():
                raise forms.ValidationError(f"Use the address this invitation was sent to ({invitation.email}).")
        return email

    def get_login_redirect_url(self, request) -> str:
        if request.session.get(INVITATION_SESSION_KEY):
            return reverse("invitation_accept", args=[request.session[INVITATION_SESSION_KEY]])
        return super().get_login_redirect_url(request)

    def get_signup_redirect_url(self, request) -> str:
        return self.get_login_redirect_url(request)

    def get_reauthentication_methods(self, user) -> list[dict]:
        """allauth's choices (password first), in KeyCore's words: a WebAuthn credential is a passkey."""
        labels = {
            "mfa_reauthenticate": "Use an authenticator code or a recovery code",
            "mfa_reauthenticate:webauthn": "Use a passkey",
        }
        return [
            {**method, "description": labels.get(method["id"], method["description"])}
            for method in super().get_reauthentication_methods(user)
        ]

    def get_client_ip(self, request) -> str:
        """Rate limits count failures per client, found the one way KeyCore finds it (behind proxies too)."""
        ip = client_ip(request)
        if ip is None:
            raise PermissionDenied("Unable to determine the client's address.")
        return ip


class MFAAdapter(DefaultMFAAdapter):
    """TOTP secrets and recovery-code seeds are sealed with the root key, never stored in the clear."""

    def encrypt(self, text: str) -> str:
        return seal_mfa_secret(text)

    def decrypt(self, encrypted_text: str) -> str:
        return unseal_mfa_secret(encrypted_text)


PASSKEY_NAME_MAX_LENGTH = 100


class AddPasskeyForm(AddWebAuthnForm):
    """allauth's form, with a bounded name (it lands in the audit trail)."""

    name = forms.CharField(required=False, max_length=PASSKEY_NAME_MAX_LENGTH)


class RenamePasskeyForm(EditWebAuthnForm):
    """allauth's rename of a passkey, audited like adding or removing one (allauth sends no signal for it)."""

    name = forms.CharField(required=True, max_length=PASSKEY_NAME_MAX_LENGTH)

    def save(self):
        before = self.instance.wrap().name
        with transaction.atomic():
            authenticator = super().save()
            user = authenticator.user
            audit_record(
                actor=Actor.from_request(context.request),
                action="mfa.renamed",
                target=user,
                target_repr=user.email,
                changes={"name": [before, authenticator.wrap().name]},
            )
        return authenticator


class _AuditedPasskeyAnswer:
    """A refused passkey answer is audited, as a wrong password or TOTP code is."""

    def clean_credential(self):
        try:
            return super().clean_credential()
        except forms.ValidationError:
            actor = Actor.from_request(context.request)
            if self.user is None:  # passwordless: whoever the answer claims to be is the sender's choice
                changes = {"method": [None, "passkey"]}
                audit_record(actor=actor, action="auth.sign_in_failed", target_type="user", changes=changes)
            else:
                if actor.user is None:  # the second step of a sign-in: not signed in yet
                    actor = Actor.for_user(self.user, source_ip=actor.source_ip, user_agent=actor.user_agent)
                audit_record(actor=actor, action="mfa.passkey_rejected", target=self.user, target_repr=self.user.email)
            raise


class AuthenticatePasskeyForm(_AuditedPasskeyAnswer, AuthenticateWebAuthnForm):
    """The second step of a sign-in, answered with a passkey."""


class ReauthenticatePasskeyForm(_AuditedPasskeyAnswer, ReauthenticateWebAuthnForm):
    """Confirming a destructive action with a passkey."""


class LoginPasskeyForm(_AuditedPasskeyAnswer, LoginWebAuthnForm):
    """Signing in with a passkey alone."""
