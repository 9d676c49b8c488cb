"""Members and invitations: owners and administrators invite, change roles and remove; the last owner stays;
only owners make or unmake owners; auditors only look."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from keycore.models import AuditEvent, Invitation, Membership
from keycore.roles import TenantRole
from tests.tenant_portal.conftest import reauthenticate, url

pytestmark = pytest.mark.django_db


def membership(tenant, user) -> Membership:
    return Membership.objects.get(tenant=tenant, user=user)


def test_the_members_page_lists_members_with_their_mfa_and_open_invitations(client, owner, member, tenant):
    from keycore.services.audit import Actor
    from keycore.services.tenants import invitation_create

    invitation_create(tenant=tenant, email="pending@acme.example", role="auditor", actor=Actor.system("tests"))
    client.force_login(member)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    page = client.get(url("members", tenant)).content.decode()
    assert owner.email in page and member.email in page
    assert "enrolled" in page
    assert "pending@acme.example" in page
    # an auditor sees, but gets no forms
    assert url("member_invite", tenant) not in page
    assert "Send again" not in page


def test_an_owner_invites_a_colleague_and_the_email_goes_out(client, owner, tenant, django_capture_on_commit_callbacks):
    client.force_login(owner)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("member_invite", tenant), {"email": "New.Admin@acme.example", "role": "admin"})
    assert response["Location"] == url("members", tenant)
    invitation = Invitation.objects.for_tenant(tenant).get(email="new.admin@acme.example")
    assert invitation.role == "admin"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new.admin@acme.example"]
    event = AuditEvent.objects.get(tenant=tenant, action="invitation.created")
    assert event.actor_user == owner
    # the link is a credential: only the invited address gets it, the inviter never sees it
    token = re.search(r"/invitations/([^/\s]+)/", mail.outbox[0].body).group(1)
    assert token not in client.get(url("members", tenant)).content.decode()


def test_inviting_a_member_again_or_a_bad_address_shows_why(client, owner, member, tenant):
    client.force_login(owner)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    response = client.post(url("member_invite", tenant), {"email": member.email, "role": "admin"})
    assert response.status_code == 409
    assert b"Already a member" in response.content
    response = client.post(url("member_invite", tenant), {"email": "not an address", "role": "admin"})
    assert response.status_code == 400
    assert "email" in response.context["invite_form"].errors


def test_an_administrator_cannot_make_owners(client, admin, member, owner, tenant):
    client.force_login(admin)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    page = client.get(url("members", tenant))
    assert [v for v, _ in page.context["invite_form"].fields["role"].choices] == ["admin", "auditor"]
    response = client.post(url("member_invite", tenant), {"email": "boss@acme.example", "role": "owner"})
    assert response.status_code == 400
    assert not Invitation.objects.filter(email="boss@acme.example").exists()
    # not itself, not anyone else
    client.post(url("member_role", tenant, member=membership(tenant, admin).uid), {"role": "owner"})
    client.post(url("member_role", tenant, member=membership(tenant, member).uid), {"role": "owner"})
    assert membership(tenant, admin).role == "admin"
    assert membership(tenant, member).role == "auditor"
    # nor demote or remove an owner
    response = client.post(url("member_role", tenant, member=membership(tenant, owner).uid), {"role": "auditor"})
    client.post(url("member_remove", tenant, member=membership(tenant, owner).uid))
    assert membership(tenant, owner).role == "owner"
    assert b"Only an owner" in client.get(response["Location"]).content


def test_an_owner_changes_roles_and_the_change_is_audited(client, owner, member, tenant):
    client.force_login(owner)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    target = membership(tenant, member)
    response = client.post(url("member_role", tenant, member=target.uid), {"role": "admin"})
    assert response["Location"] == url("members", tenant)
    assert membership(tenant, member).role == "admin"
    event = AuditEvent.objects.get(tenant=tenant, action="member.role_changed")
    assert event.changes["role"] == ["auditor", "admin"] and event.actor_user == owner


def test_the_last_owner_can_be_neither_demoted_nor_removed(client, owner, tenant):
    client.force_login(owner)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    mine = membership(tenant, owner)
    response = client.post(url("member_role", tenant, member=mine.uid), {"role": "admin"}, follow=True)
    assert b"The last owner cannot be demoted" in response.content
    response = client.post(url("member_remove", tenant, member=mine.uid), follow=True)
    assert b"The last owner cannot be removed" in response.content
    assert membership(tenant, owner).role == TenantRole.OWNER


def test_with_a_second_owner_the_first_may_leave(client, owner, tenant):
    from tests.factories import make_member

    second = make_member(tenant, "second.owner@acme.example", TenantRole.OWNER)
    client.force_login(owner)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    response = client.post(url("member_remove", tenant, member=membership(tenant, owner).uid))
    assert response["Location"] == "/"
    assert not Membership.objects.filter(tenant=tenant, user=owner).exists()
    assert membership(tenant, second).role == "owner"
    assert client.get(url("overview", tenant)).status_code == 404


def test_removing_a_member_takes_access_away_at_once(client, owner, member, tenant):
    client.force_login(owner)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    client.post(url("member_remove", tenant, member=membership(tenant, member).uid))
    assert not Membership.objects.filter(tenant=tenant, user=member).exists()
    assert AuditEvent.objects.filter(tenant=tenant, action="member.removed").count() == 1
    client.force_login(member)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    assert client.get(url("overview", tenant)).status_code == 404


def test_invitations_are_sent_again_or_withdrawn(client, owner, tenant, django_capture_on_commit_callbacks):
    from keycore.services.audit import Actor
    from keycore.services.tenants import invitation_create, invitation_lookup

    invitation, token = invitation_create(
        tenant=tenant, email="later@acme.example", role="auditor", actor=Actor.system("tests"), send=False
    )
    client.force_login(owner)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url("invitation_resend", tenant, invitation=invitation.uid))
    assert len(mail.outbox) == 1
    with pytest.raises(Exception, match="not valid"):
        invitation_lookup(token)  # the old link stopped working
    client.post(url("invitation_revoke", tenant, invitation=invitation.uid))
    invitation.refresh_from_db()
    assert invitation.state == "revoked"
    assert {"invitation.resent", "invitation.revoked"} <= set(
        AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True)
    )


def test_an_administrator_cannot_touch_an_invitation_to_become_owner(client, owner, admin, tenant):
    from keycore.services.audit import Actor
    from keycore.services.tenants import invitation_create

    invitation, _ = invitation_create(
        tenant=tenant, email="co.owner@acme.example", role="owner", actor=Actor.system("t")
    )
    client.force_login(admin)
    reauthenticate(client)  # inviting and changing roles ask for the password again
    response = client.post(url("invitation_revoke", tenant, invitation=invitation.uid), follow=True)
    assert b"Only an owner" in response.content
    invitation.refresh_from_db()
    assert invitation.state == "pending"


def test_inviting_and_changing_roles_ask_for_the_password_again(client, owner, member, tenant):
    client.force_login(owner)  # a session without a recent password: a stolen cookie, say
    invite = client.post(url("member_invite", tenant), {"email": "new@acme.example", "role": "owner"})
    promote = client.post(url("member_role", tenant, member=membership(tenant, member).uid), {"role": "owner"})
    for response in (invite, promote):
        assert response.status_code == 302 and "/reauthenticate/" in response["Location"]
    assert not Invitation.objects.filter(email="new@acme.example").exists()
    assert membership(tenant, member).role == "auditor"
