"""django-allauth adaptation: sign-up only through an invitation, and the invitation proves the address."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.adapter import DefaultMFAAdapter
from django import forms
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from keycore import errors
from keycore.sealing import seal_mfa_secret, unseal_mfa_secret
from keycore.services.audit import client_ip
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
