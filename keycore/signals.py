"""Sign-ins, failed sign-ins, password, email and MFA changes become audit events (on the vendor chain:
an account is not one tenant's); invitations verify the address."""

from __future__ import annotations

from allauth.account.internal.flows.login import get_authentication_records, record_authentication
from allauth.account.models import EmailAddress
from allauth.account.signals import (
    email_added,
    email_changed,
    email_removed,
    password_changed,
    password_reset,
    password_set,
    user_logged_in,
    user_signed_up,
)
from allauth.mfa.models import Authenticator
from allauth.mfa.signals import authentication_failed, authenticator_added, authenticator_removed, authenticator_reset
from django.contrib.auth.signals import user_logged_out, user_login_failed
from django.db.models.signals import post_init, pre_save
from django.dispatch import receiver

from keycore import errors
from keycore.accounts import INVITATION_SESSION_KEY
from keycore.sealing import bind_mfa_secrets, refuse_misplaced_mfa_secrets
from keycore.services.audit import Actor, audit_record
from keycore.services.tenants import invitation_accept, invitation_lookup


def _actor(request, user=None) -> Actor:
    actor = Actor.from_request(request) if request is not None else Actor(label="anonymous")
    if user is not None and actor.user is None:
        actor = Actor.for_user(user, source_ip=actor.source_ip, user_agent=actor.user_agent)
    return actor


def _sign_in_method(request, user) -> str:
    """How this sign-in was proven, from allauth's record of the session: "password+totp", "passkey", …"""
    names = {"webauthn": "passkey", "recovery_codes": "recovery code"}
    steps = []
    for record in get_authentication_records(request, user) if request is not None else []:
        if record.get("reauthenticated"):
            continue
        step = record.get("method")
        if step == "mfa":
            step = names.get(record.get("type"), record.get("type"))
        if step and step not in steps:
            steps.append(step)
    return "+".join(steps)


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    method = _sign_in_method(request, user)
    audit_record(
        actor=_actor(request, user),
        action="auth.signed_in",
        target=user,
        target_repr=user.email,
        changes={"method": [None, method]} if method else None,
    )


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        audit_record(actor=_actor(request, user), action="auth.signed_out", target=user, target_repr=user.email)


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    email = str(credentials.get("email") or credentials.get("username") or "")[:200]
    audit_record(actor=_actor(request), action="auth.sign_in_failed", target_type="user", target_repr=email)


@receiver(user_signed_up)
def on_signup(sender, request, user, **kwargs):
    """An invitation link reached this address: count it as verified, then accept the invitation."""
    audit_record(actor=_actor(request, user), action="auth.signed_up", target=user, target_repr=user.email)
    if request is not None and user.has_usable_password():
        # the password was chosen in this very request: count it as entered again, so enrolling the
        # MFA an owner or admin must have does not open with "confirm your password"
        record_authentication(request, user, method="password", reauthenticated=True)
    token = request.session.get(INVITATION_SESSION_KEY) if request is not None else None
    if not token:
        return
    try:
        invitation = invitation_lookup(token)
    except errors.KeyCoreError:
        return
    if invitation.email.lower() == user.email.lower():
        EmailAddress.objects.filter(user=user, email__iexact=user.email).update(verified=True, primary=True)
        invitation_accept(token=token, user=user, actor=_actor(request, user))
        request.session.pop(INVITATION_SESSION_KEY, None)


def _described(authenticator) -> dict:
    """What an MFA event records of an authenticator: its type, and a passkey's name (a user has several)."""
    described = {"type": authenticator.type}
    if authenticator.type == authenticator.Type.WEBAUTHN:
        described["name"] = authenticator.wrap().name
    return described


@receiver(authenticator_added)
def on_mfa_added(sender, request, authenticator, **kwargs):
    audit_record(
        actor=_actor(request, authenticator.user),
        action="mfa.added",
        target=authenticator.user,
        target_repr=authenticator.user.email,
        changes={field: [None, value] for field, value in _described(authenticator).items()},
    )


@receiver(authenticator_removed)
def on_mfa_removed(sender, request, authenticator, **kwargs):
    audit_record(
        actor=_actor(request, authenticator.user),
        action="mfa.removed",
        target=authenticator.user,
        target_repr=authenticator.user.email,
        changes={field: [value, None] for field, value in _described(authenticator).items()},
    )


@receiver(authenticator_reset)
def on_mfa_reset(sender, request, authenticator, **kwargs):
    audit_record(
        actor=_actor(request, authenticator.user),
        action="mfa.recovery_codes_reset",
        target=authenticator.user,
        target_repr=authenticator.user.email,
    )


@receiver(authentication_failed)
def on_mfa_failed(sender, request, user, **kwargs):
    audit_record(actor=_actor(request, user), action="mfa.code_rejected", target=user, target_repr=user.email)


@receiver(password_changed)
def on_password_changed(sender, request, user, **kwargs):
    audit_record(actor=_actor(request, user), action="auth.password_changed", target=user, target_repr=user.email)


@receiver(password_reset)
def on_password_reset(sender, request, user, **kwargs):
    audit_record(actor=_actor(request, user), action="auth.password_reset", target=user, target_repr=user.email)


@receiver(password_set)
def on_password_set(sender, request, user, **kwargs):
    audit_record(actor=_actor(request, user), action="auth.password_set", target=user, target_repr=user.email)


@receiver(email_added)
def on_email_added(sender, request, user, email_address, **kwargs):
    audit_record(
        actor=_actor(request, user),
        action="auth.email_added",
        target=user,
        target_repr=user.email,
        changes={"email": [None, email_address.email]},
    )


@receiver(email_removed)
def on_email_removed(sender, request, user, email_address, **kwargs):
    audit_record(
        actor=_actor(request, user),
        action="auth.email_removed",
        target=user,
        target_repr=user.email,
        changes={"email": [email_address.email, None]},
    )


@receiver(email_changed)
def on_email_changed(sender, request, user, from_email_address, to_email_address, **kwargs):
    audit_record(
        actor=_actor(request, user),
        action="auth.email_changed",
        target=user,
        target_repr=user.email,
        changes={"primary_email": [getattr(from_email_address, "email", None), to_email_address.email]},
    )


# --- MFA secrets bound to their authenticator (keycore.sealing) ------------------------------------


@receiver(pre_save, sender=Authenticator)
def bind_mfa_secrets_before_save(sender, instance, **kwargs):
    """allauth's freshly sealed secrets are bound to this row's user and kind before they are stored."""
    if "data" in instance.__dict__ and instance.user_id is not None:
        instance.data = bind_mfa_secrets(instance.data, user_id=instance.user_id, kind=instance.type)


@receiver(post_init, sender=Authenticator)
def refuse_misplaced_mfa_secrets_on_load(sender, instance, **kwargs):
    """A secret bound to another user or kind (copied into this row) answers to none of its codes."""
    if instance.pk is not None and all(f in instance.__dict__ for f in ("data", "user_id", "type")):
        instance.data = refuse_misplaced_mfa_secrets(instance.data, user_id=instance.user_id, kind=instance.type)
