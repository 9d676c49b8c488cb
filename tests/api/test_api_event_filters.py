"""One FilterSet per list: the tenant portal's security events and the API's event lists filter alike, the
portal's admin events page by keyset, and no filter or page link a user can type is a 500."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from django.urls import reverse

from keycore.models import AuditEvent
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_update
from tests.events.conftest import use_keys

pytestmark = pytest.mark.django_db


def url(tenant) -> str:
    return reverse("tenant:events", kwargs={"tenant": tenant.external_id})


@pytest.fixture
def used(tenant):
    from keycore.services.keyuse import recorder

    recorder.reset()
    use_keys(tenant, encrypts=5, decrypts=3, label="invoices", who="billing-svc")
    use_keys(tenant, encrypts=2, decrypts=0, label="payroll", who="hr-svc")
    return tenant


@pytest.fixture
def renamed(tenant):
    """Ten more admin events, by two actors, after the tenant's creation and its people's."""
    for i in range(10):
        tenant_update(tenant=tenant, actor=Actor.system("ops-bot" if i % 2 else "deploy"), name=f"Acme {i}")
    return tenant


def _next_cursor(page) -> str:
    assert page.context["next_cursor"]
    return page.context["next_cursor"]


def test_the_portal_and_the_api_give_the_same_key_use_for_the_same_filters(client, member, api, used):
    client.force_login(member)
    for query in ({"who": "billing"}, {"who": "hr", "operation": "encrypt"}, {"label": "payroll"}, {"result": "ok"}):
        portal = sum(r["n"] for r in client.get(url(used), query).context["rows"])
        listed = api.get(f"/api/v1/tenants/acme/events/?{'&'.join(f'{k}={v}' for k, v in query.items())}")
        assert portal == sum(e["count"] for e in listed.json["results"]) > 0, query


def test_the_portal_and_the_api_give_the_same_admin_events_for_the_same_filters(client, member, api, renamed):
    client.force_login(member)
    for query in ({"who": "ops-bot"}, {"action": "tenant.up"}, {"who": "deploy", "action": "tenant.created"}):
        portal = [e.seq for e, _ in client.get(url(renamed), {"view": "admin", **query}).context["audit"]]
        listed = api.get(f"/api/v1/audit/?tenant=acme&{'&'.join(f'{k}={v}' for k, v in query.items())}").json
        assert portal == [e["seq"] for e in listed["results"]], query
    assert len(client.get(url(renamed), {"view": "admin", "who": "ops-bot"}).context["audit"]) == 5


def test_admin_events_page_by_cursor_once_each_and_a_bad_cursor_shows_the_first_page(
    client, member, renamed, monkeypatch
):
    monkeypatch.setattr("tenant_portal.events.PAGE_SIZE", 4)
    client.force_login(member)
    first = client.get(url(renamed), {"view": "admin"})
    pages = [[e.seq for e, _ in first.context["audit"]]]
    page = first
    while page.context["next_cursor"]:
        page = client.get(url(renamed), {"view": "admin", "cursor": _next_cursor(page)})
        assert page.context["paged"]
        pages.append([e.seq for e, _ in page.context["audit"]])
    seen = [seq for p in pages for seq in p]
    assert seen == list(AuditEvent.objects.filter(tenant=renamed).order_by("-seq").values_list("seq", flat=True))
    assert len(pages) == 4 and len(seen) == len(set(seen))
    # the pager's link carries the filters and the cursor
    link = f"cursor={_next_cursor(first)}"
    assert link.replace(":", "%3A") in first.content.decode()
    for bad in ("garbage", _next_cursor(first)[:-3], _next_cursor(first).swapcase()):
        page = client.get(url(renamed), {"view": "admin", "cursor": bad})
        assert page.status_code == 200 and [e.seq for e, _ in page.context["audit"]] == pages[0]
        assert b"no longer valid" in page.content


@pytest.mark.parametrize(
    "query",
    [
        {"before": "2026-13-01T00:00"},  # well formed, impossible
        {"before": "0001-01-01T00:00"},
        {"before": "0001-01-01T00:00+05:00"},
        {"before": "not a time"},
        {"until": "0001-01-01T00:00"},
        {"view": "admin", "cursor": "x" * 500},
    ],
)
def test_odd_page_links_and_ranges_are_answered_not_a_500(client, member, used, query):
    client.force_login(member)
    assert client.get(url(used), query).status_code == 200


@pytest.mark.parametrize("view", ["usage", "admin"])
def test_a_range_the_database_cannot_hold_or_that_ends_before_it_starts_is_a_400_naming_the_field(
    client, member, used, view
):
    client.force_login(member)
    page = client.get(url(used), {"view": view, "until": "0001-01-01T00:00+05:00"})
    assert page.status_code == 400 and page.context["form"].errors == {"until": ["Out of range."]}
    page = client.get(url(used), {"view": view, "since": "2026-01-02T00:00", "until": "2026-01-01T00:00"})
    assert page.status_code == 400 and "must be before" in page.context["form"].errors["until"][0]
    export = reverse("tenant:events_export", kwargs={"tenant": used.external_id})
    response = client.get(export, {"format": "csv", "since": "2026-01-02T00:00", "until": "2026-01-01T00:00"})
    assert response.status_code == 302 and parse_qs(response["Location"].split("?", 1)[1])["until"]


def test_the_api_refuses_an_empty_range_with_a_400_problem(api, used):
    for path in ("/api/v1/tenants/acme/events/", "/api/v1/audit/"):
        answer = api.get(f"{path}?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z")
        assert answer.status == 400 and answer.problem_type == "invalid-input"
        assert answer.json["errors"] == {"until": ["“From” must be before “Until”."]}
        assert api.get(f"{path}?since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z").status == 200
