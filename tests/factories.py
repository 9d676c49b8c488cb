"""Builders for test data. Tenants go through the real service, so each has a working key."""

from __future__ import annotations

import factory
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value

from keycore.models import Membership, User, VendorStaff
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_create

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("email",)
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def verified(self, create, extracted, **kwargs):
        if create:
            EmailAddress.objects.get_or_create(
                user=self, email=self.email, defaults={"verified": True, "primary": True}
            )


def enable_totp(user: User) -> str:
    """Give ``user`` a TOTP authenticator; returns its secret so a test can compute codes."""
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return secret


def totp_code(secret: str, offset: int = 0) -> str:
    import time

    return format_hotp_value(hotp_value(secret, int(time.time()) // 30 + offset))


def make_tenant(external_id: str, name: str):
    return tenant_create(external_id=external_id, name=name, actor=Actor.system("tests"), send=False)


def make_member(tenant, email: str, role: str, *, mfa: bool = True) -> User:
    user = UserFactory(email=email)
    Membership.objects.create(tenant=tenant, user=user, role=role)
    if mfa:
        user.totp_secret = enable_totp(user)
    return user


def make_staff(email: str, role: str, *, mfa: bool = True) -> User:
    user = UserFactory(email=email)
    VendorStaff.objects.create(user=user, role=role)
    if mfa:
        user.totp_secret = enable_totp(user)
    return user
