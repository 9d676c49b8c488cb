"""Sign-ins and account changes through the real allauth views: each writes exactly one audit event,
with the person, their address and browser — and a wrong password writes a failure, not a sign-in."""

from __future__ import annotations

from collections import Counter

import pytest
from django.urls import reverse

from keycore.models import AuditEvent
from keycore.roles import TenantRole
from tests.factories import PASSWORD, make_member

pytestmark = pytest.mark.django_db

AGENT = "Mozilla/5.0 (account audit)"


def new_events(since: int) -> Counter:
    return Counter(AuditEvent.objects.filter(id__gt=since).values_list("action", flat=True))


def last_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


@pytest.fixture
def person(tenant):
    """An auditor without MFA: signs in with a password alone."""
    return make_member(tenant, "person@acme.example", TenantRole.AUDITOR, mfa=False)


def sign_in(client, email, password=PASSWORD):
    return client.post(
        reverse("account_login"),
        {"login": email, "password": password},
        HTTP_USER_AGENT=AGENT,
        REMOTE_ADDR="198.51.100.23",
    )


def test_a_sign_in_a_failure_and_a_sign_out_each_write_one_event(client, person):
    start = last_id()
    assert sign_in(client, person.email, "not the password").status_code == 200
    assert new_events(start) == Counter({"auth.sign_in_failed": 1})
    failed = AuditEvent.objects.get(id__gt=start)
    assert failed.target_repr == person.email and failed.source_ip == "198.51.100.23" and failed.actor_user is None

    start = last_id()
    assert sign_in(client, person.email).status_code == 302
    assert new_events(start) == Counter({"auth.signed_in": 1})
    event = AuditEvent.objects.get(id__gt=start)
    assert (event.actor_user_id, event.source_ip, event.user_agent) == (person.pk, "198.51.100.23", AGENT)
    assert event.chain == "vendor", "an account is not one tenant's: sign-ins are on the vendor chain"

    start = last_id()
    client.post(reverse("account_logout"))
    assert new_events(start) == Counter({"auth.signed_out": 1})


def test_a_password_change_writes_one_event(client, person):
    sign_in(client, person.email)
    start = last_id()
    response = client.post(
        reverse("account_change_password"),
        {"oldpassword": PASSWORD, "password1": "a brand new passphrase 42", "password2": "a brand new passphrase 42"},
    )
    assert response.status_code == 302
    assert new_events(start) == Counter({"auth.password_changed": 1})


def test_adding_and_removing_an_email_address_write_one_event_each(client, person):
    sign_in(client, person.email)
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    start = last_id()
    response = client.post(reverse("account_email"), {"action_add": "", "email": "second@acme.example"})
    assert response.status_code == 302
    assert new_events(start) == Counter({"auth.email_added": 1})
    added = AuditEvent.objects.get(id__gt=start)
    assert added.changes == {"email": [None, "second@acme.example"]}
    start = last_id()
    client.post(reverse("account_email"), {"action_remove": "", "email": "second@acme.example"})
    assert new_events(start) == Counter({"auth.email_removed": 1})


def test_turning_mfa_off_writes_one_event(client, tenant):
    from tests.factories import totp_code

    user = make_member(tenant, "auditor2@acme.example", TenantRole.AUDITOR)
    sign_in(client, user.email)
    client.post(reverse("mfa_authenticate"), {"code": totp_code(user.totp_secret)})
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    start = last_id()
    response = client.post(reverse("mfa_deactivate_totp"))
    assert response.status_code == 302
    assert new_events(start) == Counter({"mfa.removed": 1})
    assert AuditEvent.objects.get(id__gt=start).changes == {"type": ["totp", None]}
