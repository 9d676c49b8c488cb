"""The tenants list (search, filters, sort, keyset pages, CSV export) and creating a tenant."""

from __future__ import annotations

import csv
import io
from urllib.parse import parse_qs, urlparse

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from keycore.models import AuditEvent, Invitation, Tenant
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_create, tenant_set_status
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db
LIST = reverse("vendor:tenants")


def _names(response) -> list[str]:
    return [t.name for t in response.context["page"].rows]


def _cursor(url: str) -> str:
    return parse_qs(urlparse(url).query)["cursor"][0]


@pytest.fixture
def many(db):
    """23 tenants with names out of creation order, so name and date sorts differ."""
    actor = Actor.system("tests")
    return [
        tenant_create(external_id=f"cust-{i:03d}", name=f"{word} {i:02d}", actor=actor, send=False)
        for i, word in enumerate(["Zeta", "Alpha", "Mike", "Bravo", "Echo", "Kilo", "Delta"] * 3 + ["Harbor", "alpha"])
    ]


def test_it_finds_a_tenant_by_the_start_of_its_name_or_external_id(as_admin, tenant, other_tenant):
    assert _names(as_admin.get(LIST, {"q": "acm"})) == ["Acme Corporation"]
    assert _names(as_admin.get(LIST, {"q": "ACME"})) == ["Acme Corporation"]
    assert _names(as_admin.get(LIST, {"q": "glob"})) == ["Globex Industries"]
    assert _names(as_admin.get(LIST, {"q": "corporation"})) == []  # not a prefix


def test_it_finds_a_tenant_by_any_part_of_its_name_with_contains(as_admin, tenant, other_tenant):
    assert _names(as_admin.get(LIST, {"q": "corpor", "match": "contains"})) == ["Acme Corporation"]
    assert _names(as_admin.get(LIST, {"q": "LOBE", "match": "contains"})) == ["Globex Industries"]
    assert _names(as_admin.get(LIST, {"q": "zzz", "match": "contains"})) == []


def test_a_search_escapes_like_wildcards(as_admin, tenant):
    make_tenant("under_score", "Percent 100% Ltd")
    assert _names(as_admin.get(LIST, {"q": "100%", "match": "contains"})) == ["Percent 100% Ltd"]
    assert _names(as_admin.get(LIST, {"q": "under_", "match": "prefix"})) == ["Percent 100% Ltd"]
    assert _names(as_admin.get(LIST, {"q": "%", "match": "prefix"})) == []


def test_it_filters_by_status_key_ownership_provider_and_health(as_admin, tenant, other_tenant, tenant_own_key):
    tenant_set_status(tenant=other_tenant, transition="suspend", actor=Actor.system("tests"))
    assert _names(as_admin.get(LIST, {"status": "suspended"})) == ["Globex Industries"]
    assert _names(as_admin.get(LIST, {"key_ownership": "tenant"})) == ["Acme Corporation"]
    assert _names(as_admin.get(LIST, {"key_ownership": "vendor"})) == ["Globex Industries"]
    assert _names(as_admin.get(LIST, {"provider": "aws"})) == ["Acme Corporation"]
    assert _names(as_admin.get(LIST, {"health": "ok"})) == ["Acme Corporation", "Globex Industries"]
    assert _names(as_admin.get(LIST, {"health": "failing"})) == []


def test_invalid_filters_are_refused_with_a_message(as_admin, tenant):
    response = as_admin.get(LIST, {"status": "bogus"})
    assert response.status_code == 400
    assert b"The filters are not valid" in response.content


def test_it_sorts_by_name_and_by_creation_date(as_admin, many):
    by_name = _names(as_admin.get(LIST, {"sort": "name"}))
    assert by_name == sorted(by_name, key=lambda n: (n, 0))
    assert _names(as_admin.get(LIST, {"sort": "-name"})) == list(reversed(by_name))
    newest = _names(as_admin.get(LIST, {"sort": "-created"}))
    assert newest[0] == "alpha 22" and newest[-1] == "Zeta 00"
    assert _names(as_admin.get(LIST, {"sort": "created"})) == list(reversed(newest))


@pytest.mark.parametrize("sort", ["name", "-name", "-created", "created"])
def test_cursor_pages_walk_every_tenant_once_forwards_and_backwards(as_admin, many, sort, monkeypatch):
    monkeypatch.setattr("vendor_portal.views.PAGE_SIZE", 5)
    expected = _names(as_admin.get(LIST, {"sort": sort, "q": ""}))  # 23 fit in one page? no: 5 per page
    pages, response = [], as_admin.get(LIST, {"sort": sort})
    while True:
        pages.append(_names(response))
        next_url = response.context["pager"]["next_url"]
        if not next_url:
            break
        response = as_admin.get(LIST, {"sort": sort, "cursor": _cursor(next_url)})
    seen = [n for page in pages for n in page]
    assert len(seen) == len(many) == len(set(t.pk for t in many)) and len(pages) == 5
    assert sorted(seen) == sorted(t.name for t in many)
    assert seen[:5] == expected
    # and back again, page by page, to the first
    back = [pages[-1]]
    while response.context["pager"]["previous_url"]:
        response = as_admin.get(LIST, {"sort": sort, "cursor": _cursor(response.context["pager"]["previous_url"])})
        back.append(_names(response))
    assert list(reversed(back)) == pages


def test_a_cursor_cannot_be_forged(as_admin, many, monkeypatch):
    monkeypatch.setattr("vendor_portal.views.PAGE_SIZE", 5)
    response = as_admin.get(LIST, {"cursor": "eyJ2IjoiWiIsImkiOjEsImIiOmZhbHNlfQ:forged:signature"})
    assert response.status_code == 200
    assert _names(response) == _names(as_admin.get(LIST))  # the first page
    assert b"no longer valid" in response.content
    # a cursor of one sort order is not accepted for another
    next_by_name = _cursor(as_admin.get(LIST, {"sort": "name"}).context["pager"]["next_url"])
    assert as_admin.get(LIST, {"sort": "-created", "cursor": next_by_name}).context["page"].cursor_rejected


def test_the_list_needs_no_more_queries_for_50_rows_than_for_5(as_admin, many, monkeypatch):
    """No N+1: the page costs the same number of queries whatever its size (and never a COUNT)."""
    counts = {}
    for size in (5, 50):
        monkeypatch.setattr("vendor_portal.views.PAGE_SIZE", size)
        with CaptureQueriesContext(connection) as queries:
            response = as_admin.get(LIST, {"sort": "name"})
        assert len(response.context["page"].rows) == min(size, len(many))
        counts[size] = len(queries)
        assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)
        assert not any(" OFFSET " in q["sql"].upper() for q in queries.captured_queries)
    assert counts[50] == counts[5]


def test_htmx_gets_just_the_results_and_the_live_count(as_admin, tenant):
    response = as_admin.get(LIST, {"q": "acm"}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert "<html" not in body
    assert 'hx-swap-oob="innerHTML"' in body and "Showing 1 tenant" in body
    assert "Acme Corporation" in body


def test_the_export_is_the_filtered_list_as_csv(as_admin, many):
    response = as_admin.get(reverse("vendor:tenants_export"), {"q": "alpha", "sort": "name"})
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    assert "attachment;" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["name"] for r in rows] == ["Alpha 01", "Alpha 08", "Alpha 15", "alpha 22"]
    assert rows[0]["external_id"] == "cust-001" and rows[0]["status"] == "active"
    assert rows[0]["key_ownership"] == "vendor" and rows[0]["primary_provider"] == "local"


def test_the_export_streams_past_its_chunk_size(as_admin, many, monkeypatch):
    from keycore import pagination

    real = pagination.keyset_iterate
    monkeypatch.setattr("vendor_portal.views.keyset_iterate", lambda qs, sort: real(qs, sort=sort, chunk=4))
    with CaptureQueriesContext(connection) as queries:
        body = b"".join(as_admin.get(reverse("vendor:tenants_export")).streaming_content).decode()
    assert len(body.strip().splitlines()) == len(many) + 1
    # 23 rows in chunks of 4: six keyset queries, never the whole table at once
    tenant_queries = [q for q in queries.captured_queries if 'FROM "keycore_tenant"' in q["sql"]]
    assert len(tenant_queries) == 6


def test_the_export_neutralises_spreadsheet_formulas(as_admin):
    make_tenant("formula", '=HYPERLINK("http://evil.example")')
    body = b"".join(as_admin.get(reverse("vendor:tenants_export")).streaming_content).decode()
    row = next(csv.DictReader(io.StringIO(body)))
    assert row["name"].startswith("'=")


# --- creating a tenant ------------------------------------------------------------------


def _create(client, **data):
    payload = {
        "name": "Initech",
        "external_id": "initech",
        "admins-TOTAL_FORMS": "3",
        "admins-INITIAL_FORMS": "0",
        "admins-MIN_NUM_FORMS": "0",
        "admins-MAX_NUM_FORMS": "10",
        # as the browser sends it: each role select has a value, blank email rows are ignored
        **{f"admins-{i}-role": "owner" for i in range(3)},
    }
    payload.update(data)
    return client.post(reverse("vendor:tenant_create"), payload)


def test_it_creates_a_tenant_with_its_own_key_and_invites_its_first_admins(
    as_operator, vendor_operator, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _create(
            as_operator,
            **{"admins-0-email": "ceo@initech.example", "admins-0-role": "owner"},
            **{"admins-2-email": "sec@initech.example", "admins-2-role": "admin"},
        )
    assert response.status_code == 302 and response["Location"] == reverse("vendor:tenant", args=["initech"])
    tenant = Tenant.objects.get(external_id="initech")
    assert tenant.key_ownership == "vendor" and tenant.health == "ok"
    invites = Invitation.objects.for_tenant(tenant).order_by("email")
    assert [(i.email, i.role) for i in invites] == [("ceo@initech.example", "owner"), ("sec@initech.example", "admin")]
    assert sorted(m.to[0] for m in mail.outbox) == ["ceo@initech.example", "sec@initech.example"]
    assert "/invitations/" in mail.outbox[0].body and "expires in" in mail.outbox[0].body
    created = AuditEvent.objects.for_tenant(tenant).get(action="tenant.created")
    assert created.actor_user == vendor_operator and created.changes["external_id"] == [None, "initech"]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"external_id": "has space"}, "external_id", "letters, digits"),
        ({"external_id": "acme"}, "external_id", "Already in use."),
        ({"name": "   "}, "name", "required"),
        ({"admins-0-email": "not-an-email"}, "email", "valid email"),
    ],
)
def test_it_shows_each_problem_next_to_its_field(as_admin, tenant, data, field, message):
    response = _create(as_admin, **data)
    assert response.status_code == 400
    form = response.context["admins"].forms[0] if field == "email" else response.context["form"]
    assert any(message in e for e in form.errors[field]), form.errors
    # rendered right under its field, which is marked invalid
    assert f'id="{form[field].auto_id}_errors"' in response.content.decode()
    assert Tenant.objects.count() == 1  # only acme; nothing half-made


def test_resending_an_invitation_replaces_its_link_and_revoking_withdraws_it(
    as_admin, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        as_admin.post(reverse("vendor:invitation_create", args=["acme"]), {"email": "it@acme.example", "role": "admin"})
    invitation = Invitation.objects.get(email="it@acme.example")
    first_link = mail.outbox[-1].body
    with django_capture_on_commit_callbacks(execute=True):
        response = as_admin.post(reverse("vendor:invitation_resend", args=["acme", invitation.uid]))
    assert response.status_code == 302
    assert len(mail.outbox) == 2 and mail.outbox[-1].body != first_link
    response = as_admin.post(reverse("vendor:invitation_revoke", args=["acme", invitation.uid]))
    invitation.refresh_from_db()
    assert invitation.state == "revoked"
    assert list(
        AuditEvent.objects.for_tenant(tenant)
        .filter(action__startswith="invitation.")
        .order_by("seq")
        .values_list("action", flat=True)
    ) == ["invitation.created", "invitation.resent", "invitation.revoked"]


def test_inviting_an_existing_member_says_so_next_to_the_email(as_admin, tenant, owner):
    response = as_admin.post(
        reverse("vendor:invitation_create", args=["acme"]), {"email": owner.email, "role": "admin"}
    )
    assert response.status_code == 400
    assert response.context["invite_form"].errors["email"] == ["Already a member."]


@pytest.mark.parametrize("external_id", ["new", "import", "export.csv", "audit"])
def test_no_external_id_is_shadowed_by_a_portal_page(as_admin, external_id):
    make_tenant(external_id, f"Tenant called {external_id}")
    response = as_admin.get(reverse("vendor:tenant", args=[external_id]))
    assert response.status_code == 200 and response.context["tenant"].external_id == external_id
