"""Bulk onboarding from a CSV file: a preview that creates nothing, then valid tenants created, the rest reported."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from keycore.models import Invitation, Tenant

pytestmark = pytest.mark.django_db

CSV = """external_id,name,admin_email,admin_role
initech,Initech,ceo@initech.example,owner
initech,Initech,sec@initech.example,admin
hooli,Hooli,,
bad id,Broken Name,x@broken.example,owner
umbrella,Umbrella,not-an-email,owner
umbrella,Umbrella,ok@umbrella.example,admin
acme,Acme Corporation,it@acme.example,owner
stark,Stark Industries,cto@stark.example,emperor
wayne,Wayne Enterprises,a@wayne.example,owner
wayne,Wayne Corp,b@wayne.example,owner
"""


def _upload(client, text: str, name: str = "tenants.csv"):
    return client.post(
        reverse("vendor:tenant_import"), {"file": SimpleUploadedFile(name, text.encode(), content_type="text/csv")}
    )


def _verdicts(plan) -> dict[int, str]:
    return {row.line: row.status for row in plan.rows}


def test_the_preview_judges_every_row_and_creates_nothing(as_admin, tenant):
    response = _upload(as_admin, CSV)
    assert response.status_code == 200
    plan = response.context["plan"]
    assert _verdicts(plan) == {
        2: "new",
        3: "new",
        4: "new",
        5: "invalid",  # external id with a space
        6: "invalid",  # bad email…
        7: "blocked",  # …so umbrella's valid row waits too: no tenant without the admins meant for it
        8: "exists",  # acme is there already
        9: "invalid",  # unknown role
        10: "blocked",  # (held back with line 11)
        11: "invalid",  # the same tenant under two names
    }
    assert sorted(plan.tenants) == ["hooli", "initech"]
    problems = {row.line: row.problems for row in plan.rows}
    assert any("letters, digits" in p for p in problems[5])
    assert any("valid email" in p for p in problems[6])
    assert any("Unknown role" in p for p in problems[9])
    assert any("Wayne Enterprises" in p for p in problems[11])
    page = response.content.decode()
    assert "Create 2 tenants" in page and "exists already" in page
    assert Tenant.objects.count() == 1 and not Invitation.objects.exists()


def test_confirming_creates_the_valid_tenants_and_reports_the_rest(
    as_admin, tenant, django_capture_on_commit_callbacks
):
    payload = _upload(as_admin, CSV).context["confirm"].initial["payload"]
    with django_capture_on_commit_callbacks(execute=True):
        response = as_admin.post(reverse("vendor:tenant_import_confirm"), {"payload": payload})
    assert response.status_code == 200
    outcomes = {o.external_id: o for o in response.context["outcomes"]}
    assert set(outcomes) == {"initech", "hooli"} and all(o.created for o in outcomes.values())
    assert response.context["created"] == 2
    initech = Tenant.objects.get(external_id="initech")
    assert initech.name == "Initech" and initech.key_ownership == "vendor"
    assert sorted(Invitation.objects.for_tenant(initech).values_list("email", "role")) == [
        ("ceo@initech.example", "owner"),
        ("sec@initech.example", "admin"),
    ]
    assert sorted(m.to[0] for m in mail.outbox) == ["ceo@initech.example", "sec@initech.example"]
    assert not Tenant.objects.filter(external_id__in=["umbrella", "stark", "wayne"]).exists()


def test_uploading_the_same_file_again_creates_nothing_twice(as_admin, tenant):
    payload = _upload(as_admin, CSV).context["confirm"].initial["payload"]
    as_admin.post(reverse("vendor:tenant_import_confirm"), {"payload": payload})
    again = _upload(as_admin, CSV)
    verdicts = _verdicts(again.context["plan"])
    assert verdicts[2] == verdicts[3] == verdicts[4] == "exists"
    assert again.context["plan"].tenants == {}
    assert b"Nothing to create" in again.content
    # confirming an old preview again is safe too: the file is checked afresh
    response = as_admin.post(reverse("vendor:tenant_import_confirm"), {"payload": payload})
    assert response.context["created"] == 0
    assert Tenant.objects.filter(external_id="initech").count() == 1


def test_a_tenant_created_meanwhile_is_reported_not_duplicated(as_admin, tenant):
    payload = _upload(as_admin, "external_id,name\nlate,Late Ltd\n").context["confirm"].initial["payload"]
    from tests.factories import make_tenant

    make_tenant("late", "Late Ltd (created elsewhere)")
    response = as_admin.post(reverse("vendor:tenant_import_confirm"), {"payload": payload})
    assert response.context["created"] == 0
    assert _verdicts(response.context["plan"]) == {2: "exists"}


def test_a_tampered_confirmation_is_refused(as_admin, tenant):
    payload = _upload(as_admin, "external_id,name\nx1,X\n").context["confirm"].initial["payload"]
    response = as_admin.post(reverse("vendor:tenant_import_confirm"), {"payload": payload[:-3] + "abc"})
    assert response.status_code == 400
    assert b"upload the file again" in response.content
    assert not Tenant.objects.filter(external_id="x1").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"id,title\n1,2\n", "missing: external_id, name"),
        (b"external_id,name\n", "no rows"),
        ("external_id,name\nacme,Ächme\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_file_it_cannot_read_is_explained_next_to_the_upload(as_admin, content, message):
    response = as_admin.post(
        reverse("vendor:tenant_import"), {"file": SimpleUploadedFile("t.csv", content, content_type="text/csv")}
    )
    assert response.status_code == 400
    assert any(message in e for e in response.context["form"].errors["file"])


def test_a_file_with_too_many_rows_is_refused(as_admin, monkeypatch):
    monkeypatch.setattr("vendor_portal.onboarding.MAX_ROWS", 3)
    text = "external_id,name\n" + "".join(f"t{i},T{i}\n" for i in range(4))
    response = _upload(as_admin, text)
    assert response.status_code == 400
    assert "At most 3 rows" in response.context["form"].errors["file"][0]


def test_a_tenant_without_an_owner_is_offered_an_owner_first(client, vendor_admin, tenant):
    """Only an owner can change a tenant's settings or make owners: the first invitation defaults to owner."""
    from keycore.roles import TenantRole
    from tests.factories import make_member

    client.force_login(vendor_admin)
    page = client.get(reverse("vendor:tenant", args=[tenant.external_id])).content.decode()
    assert "has no owner yet" in page and "Invite the owner of Acme Corporation" in page
    assert '<option value="owner" selected>' in page

    make_member(tenant, "boss@acme.example", TenantRole.OWNER)
    page = client.get(reverse("vendor:tenant", args=[tenant.external_id])).content.decode()
    assert "has no owner yet" not in page and '<option value="admin" selected>' in page
