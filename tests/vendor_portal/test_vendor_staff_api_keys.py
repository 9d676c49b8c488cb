"""Staff (invite, change role, deactivate) and API keys (create, rotate, revoke; the secret shown once)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from keycore.models import ApiKey, AuditEvent, Invitation, VendorStaff
from keycore.services.apikeys import api_key_create
from keycore.services.audit import Actor
from tests.factories import make_staff
from tests.vendor_portal.conftest import reauthenticate

pytestmark = pytest.mark.django_db


# --- staff ----------------------------------------------------------------------------------


def test_an_admin_invites_a_colleague_who_gets_a_single_use_link(as_admin, django_capture_on_commit_callbacks):
    reauthenticate(as_admin)  # inviting, promoting and making keys ask for the password again
    with django_capture_on_commit_callbacks(execute=True):
        response = as_admin.post(reverse("vendor:staff_invite"), {"email": "new@vendor.example", "role": "auditor"})
    assert response.status_code == 302
    invitation = Invitation.objects.get(email="new@vendor.example")
    assert invitation.tenant is None and invitation.role == "auditor" and invitation.state == "pending"
    assert mail.outbox[-1].to == ["new@vendor.example"] and "vendor portal" in mail.outbox[-1].body
    page = as_admin.get(reverse("vendor:staff")).content.decode()
    assert "new@vendor.example" in page and "Resend" in page


def test_inviting_someone_already_on_the_staff_says_so_next_to_the_email(as_admin, vendor_operator):
    reauthenticate(as_admin)  # inviting, promoting and making keys ask for the password again
    response = as_admin.post(reverse("vendor:staff_invite"), {"email": vendor_operator.email, "role": "auditor"})
    assert response.status_code == 400
    assert response.context["invite_form"].errors["email"] == ["Already staff."]


def test_changing_a_role_is_audited_with_before_and_after(as_admin, vendor_operator, vendor_admin):
    reauthenticate(as_admin)  # inviting, promoting and making keys ask for the password again
    staff = vendor_operator.vendor_staff
    as_admin.post(reverse("vendor:staff_role", args=[staff.pk]), {"role": "auditor"})
    staff.refresh_from_db()
    assert staff.role == "auditor"
    event = AuditEvent.objects.get(action="staff.role_changed")
    assert event.actor_user == vendor_admin and event.changes == {"role": ["operator", "auditor"]}


def test_the_last_administrator_cannot_be_demoted(as_admin, vendor_admin):
    reauthenticate(as_admin)  # inviting, promoting and making keys ask for the password again
    response = as_admin.post(
        reverse("vendor:staff_role", args=[vendor_admin.vendor_staff.pk]), {"role": "operator"}, follow=True
    )
    assert "last vendor administrator" in response.content.decode()
    assert VendorStaff.objects.get(user=vendor_admin).role == "admin"


def test_deactivating_needs_the_password_and_then_locks_the_person_out(as_admin, client, vendor_operator):
    url = reverse("vendor:staff_deactivate", args=[vendor_operator.vendor_staff.pk])
    response = as_admin.post(url)
    assert reverse("account_reauthenticate") in response["Location"]
    assert VendorStaff.objects.get(user=vendor_operator).is_active
    reauthenticate(as_admin)
    as_admin.post(url)
    assert not VendorStaff.objects.get(user=vendor_operator).is_active
    assert AuditEvent.objects.filter(action="staff.deactivated").exists()
    client.force_login(vendor_operator)
    assert client.get(reverse("vendor:dashboard")).status_code == 403


def test_the_staff_list_needs_no_more_queries_for_more_people(as_admin):
    counts = []
    for n in (2, 8):
        while VendorStaff.objects.count() < n:
            make_staff(f"p{VendorStaff.objects.count()}@vendor.example", "auditor")
        with CaptureQueriesContext(connection) as queries:
            response = as_admin.get(reverse("vendor:staff"))
        assert len(response.context["staff"]) == n
        counts.append(len(queries))
    assert counts[0] == counts[1]


# --- API keys ----------------------------------------------------------------------------------


def _create_key(client, **data):
    return client.post(reverse("vendor:api_key_create"), {"name": "billing", "scopes": ["crypto"], **data})


def test_a_new_key_is_shown_once_in_the_page_and_stored_only_as_a_hash(as_admin, tenant, vendor_admin):
    reauthenticate(as_admin)  # inviting, promoting and making keys ask for the password again
    response = _create_key(as_admin, tenants="acme", expires_on=(timezone.now() + timedelta(days=30)).date())
    assert response.status_code == 200
    secret = response.context["secret"]
    assert secret in response.content.decode()
    key = ApiKey.objects.get(name="billing")
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiKey.objects.filter(pk=key.pk).values().first())
    assert [t.external_id for t in key.tenants.all()] == ["acme"]
    assert key.expires_at is not None and key.created_by == vendor_admin
    # not carried in a message cookie or the session, and gone on the next page
    assert "messages" not in response.cookies
    assert secret not in str(dict(as_admin.session))
    assert secret not in as_admin.get(reverse("vendor:api_keys")).content.decode()
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": ""}, "name", "required"),
        ({"scopes": []}, "scopes", "required"),
        ({"tenants": "nobody"}, "tenants", "No tenant has the external id nobody"),
        ({"tenants": "acme", "scopes": ["tenants:read"]}, "tenants", "Crypto keys only"),
        ({"expires_on": "2001-01-01"}, "expires_on", "future"),
    ],
)
def test_key_form_problems_show_next_to_their_fields(as_admin, tenant, data, field, message):
    reauthenticate(as_admin)  # inviting, promoting and making keys ask for the password again
    response = _create_key(as_admin, **data)
    assert response.status_code == 400
    assert any(message in e for e in response.context["form"].errors[field]), response.context["form"].errors
    assert not ApiKey.objects.exists()
    assert response.context["secret"] is None


def test_rotating_shows_the_new_secret_once_and_retires_the_old_key(as_admin):
    reauthenticate(as_admin)  # inviting, promoting and making keys ask for the password again
    old, _ = api_key_create(name="ci", scopes=["tenants:read"], actor=Actor.system("t"))
    response = as_admin.post(reverse("vendor:api_key_rotate", args=[old.uid]))
    assert response.status_code == 200
    new = ApiKey.objects.get(rotated_from=old)
    assert response.context["secret_key"] == new and f"_{new.prefix}_" in response.context["secret"]
    assert response.context["secret"] in response.content.decode()
    old.refresh_from_db()
    assert old.revoked_at is not None


def test_revoking_needs_the_password_and_is_audited(as_admin, vendor_admin):
    key, _ = api_key_create(name="ci", scopes=["tenants:read"], actor=Actor.system("t"))
    url = reverse("vendor:api_key_revoke", args=[key.uid])
    assert reverse("account_reauthenticate") in as_admin.post(url)["Location"]
    reauthenticate(as_admin)
    as_admin.post(url)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.get(action="api_key.revoked").actor_user == vendor_admin
    page = as_admin.get(reverse("vendor:api_keys")).content.decode()
    assert "revoked" in page and "never" in page  # last used: never


def test_the_key_list_needs_no_more_queries_for_more_keys(as_admin, tenant, monkeypatch):
    for i in range(6):
        api_key_create(name=f"k{i}", scopes=["crypto"], tenants=[tenant], actor=Actor.system("t"))
    counts = []
    for size in (2, 6):
        monkeypatch.setattr("vendor_portal.staff.PAGE_SIZE", size)
        with CaptureQueriesContext(connection) as queries:
            response = as_admin.get(reverse("vendor:api_keys"))
        assert len(response.context["page"].rows) == size
        counts.append(len(queries))
    assert counts[0] == counts[1]
