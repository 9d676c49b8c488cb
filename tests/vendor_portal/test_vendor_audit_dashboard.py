"""The audit trail (filters, keyset pages, before → after) and the dashboard (counts, charts, dark tenants, jobs)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from keycore.models import AuditEvent, KmsConfig, Tenant
from keycore.providers.base import HealthResult
from keycore.services import keys
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_set_status, tenant_update
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db
AUDIT = reverse("vendor:audit")


def _actions(response) -> list[str]:
    return [e.action for e, _ in response.context["events"]]


def test_the_audit_trail_filters_by_tenant_actor_action_and_time(as_admin, tenant, other_tenant):
    tenant_update(tenant=tenant, name="Acme Corp", actor=Actor.system("renamer"))
    tenant_set_status(tenant=other_tenant, transition="suspend", actor=Actor.system("billing"))
    assert _actions(as_admin.get(AUDIT, {"tenant": "acme", "action": "tenant.updated"})) == ["tenant.updated"]
    assert _actions(as_admin.get(AUDIT, {"actor": "billing"})) == ["tenant.suspend"]
    assert set(_actions(as_admin.get(AUDIT, {"tenant": "globex"}))) >= {"tenant.suspend", "tenant.created"}
    future = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert _actions(as_admin.get(AUDIT, {"since": future})) == []
    assert len(_actions(as_admin.get(AUDIT, {"until": future}))) == AuditEvent.objects.count()
    bad = as_admin.get(AUDIT, {"since": "yesterday-ish"})
    assert bad.status_code == 400 and bad.context["filterset"].form.errors["since"]


def test_each_event_shows_who_did_what_to_which_object_before_and_after(as_admin, tenant):
    tenant_update(tenant=tenant, name="Acme Corp", actor=Actor.system("renamer"))
    response = as_admin.get(AUDIT, {"action": "tenant.updated"})
    event, changes = response.context["events"][0]
    assert event.actor_label == "system:renamer" and event.target_type == "tenant"
    assert changes == [("name", "Acme Corporation", "Acme Corp")]
    page = response.content.decode()
    assert "<del>Acme Corporation</del> → <ins>Acme Corp</ins>" in page


def test_the_audit_trail_pages_by_cursor_without_repeats(as_admin, monkeypatch):
    for i in range(4):
        make_tenant(f"t{i}", f"T{i}")
    monkeypatch.setattr("vendor_portal.views.PAGE_SIZE", 5)
    seen, response = [], as_admin.get(AUDIT)
    while True:
        seen += [e.pk for e, _ in response.context["events"]]
        if not response.context["pager"]["next_url"]:
            break
        response = as_admin.get(AUDIT + response.context["pager"]["next_url"])
    assert seen == list(AuditEvent.objects.order_by("-created_at", "-id").values_list("pk", flat=True))


def test_the_audit_trail_needs_no_more_queries_for_more_rows(as_admin, monkeypatch):
    for i in range(4):
        make_tenant(f"t{i}", f"T{i}")
    counts = []
    for size in (3, 12):
        monkeypatch.setattr("vendor_portal.views.PAGE_SIZE", size)
        with CaptureQueriesContext(connection) as queries:
            response = as_admin.get(AUDIT)
        assert len(response.context["events"]) == size
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_tenants_own_audit_page_shows_only_its_events(as_admin, tenant, other_tenant):
    response = as_admin.get(reverse("vendor:tenant_audit", args=["acme"]))
    assert {e.tenant_id for e, _ in response.context["events"]} == {tenant.pk}


def test_the_tenant_page_needs_no_more_queries_for_more_members_and_keys(as_admin, tenant):
    from tests.factories import make_member

    def measure():
        with CaptureQueriesContext(connection) as queries:
            assert as_admin.get(reverse("vendor:tenant", args=["acme"])).status_code == 200
        return len(queries)

    make_member(tenant, "a@acme.example", "admin")
    keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "B", {}, {}), actor=Actor.system("t")
    )
    few = measure()
    for i in range(5):
        make_member(tenant, f"m{i}@acme.example", "auditor", mfa=i % 2 == 0)
        keys.kms_config_create(
            tenant=tenant, owner="vendor", data=keys.ConfigInput("local", f"K{i}", {}, {}), actor=Actor.system("t")
        )
        keys.tenant_key_create(tenant=tenant, actor=Actor.system("t"))
    assert measure() == few
    page = as_admin.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert page.count('<span class="badge badge-warn">off</span>') == 2  # m1 and m3 have no MFA


def test_the_dashboard_counts_tenants_by_key_and_status_and_draws_them(
    as_auditor, tenant, other_tenant, tenant_own_key
):
    tenant_set_status(tenant=other_tenant, transition="suspend", actor=Actor.system("t"))
    response = as_auditor.get(reverse("vendor:dashboard"))
    stats = response.context["stats"]
    assert stats["tenants"] == 2
    assert stats["by_ownership"] == {"tenant": 1, "vendor": 1}
    assert stats["by_status"] == {"active": 1, "suspended": 1}
    page = response.content.decode()
    assert '<svg class="chart"' in page and '<title id="chart-ownership-title">Tenants by key</title>' in page
    assert "Vendor-provided: 1; Own KMS: 1" in page
    assert 'href="/vendor/tenants/?status=suspended"' in page
    assert reverse("vendor:tenant_create") not in page  # an auditor is offered no write actions


def test_the_dashboard_lists_tenants_whose_kms_fails_and_running_jobs(as_admin, tenant, other_tenant):
    config = KmsConfig.objects.get(tenant=other_tenant)
    keys.kms_config_record_health(config=config, result=HealthResult(False, "KMS unreachable: timed out", 5000.0))
    second = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Next", {}, {}), actor=Actor.system("t")
    )
    keys.kms_config_make_primary(config=second, actor=Actor.system("t"))
    response = as_admin.get(reverse("vendor:dashboard"))
    assert [t.external_id for t in response.context["attention"]] == ["globex"]
    assert (response.context["stats"]["dark"], response.context["stats"]["at_risk"]) == (0, 1)
    assert [j.tenant.external_id for j in response.context["active_jobs"]] == ["acme"]
    page = response.content.decode()
    assert "Globex Industries" in page and "<progress" in page
    assert 'href="/vendor/tenants/?key_status=at_risk"' in page
    assert Tenant.objects.get(pk=other_tenant.pk).health == "failing"
    assert Tenant.objects.get(pk=other_tenant.pk).key_status == "kms_unreachable"


def test_a_tenant_that_revoked_its_key_is_dark_on_the_dashboard_first(as_auditor, tenant, other_tenant, tenant_own_key):
    """What the vendor once saw as "0 KMS failing … every KMS answered" after a revoke: now the first number."""
    keys.kms_config_record_health(
        config=KmsConfig.objects.get(tenant=other_tenant), result=HealthResult(False, "timed out", 5000.0)
    )
    keys.kms_config_revoke(config=tenant_own_key, actor=Actor.system("t"))
    response = as_auditor.get(reverse("vendor:dashboard"))
    stats = response.context["stats"]
    assert (stats["dark"], stats["at_risk"]) == (1, 1)
    assert [t.external_id for t in response.context["attention"]] == ["acme", "globex"], "dark tenants first"
    page = response.content.decode()
    cards = page[page.index('aria-label="Totals"') :]
    assert cards.index("dark: key revoked or disabled") < cards.index("tenants</div>")
    assert 'href="/vendor/tenants/?key_status=dark"' in page
    assert "Revoked by tenant" in page and "every KMS answered" not in page
    listed = as_auditor.get(reverse("vendor:tenants"), {"key_status": "dark"})
    assert [t.external_id for t in listed.context["page"].rows] == ["acme"]
    assert "Revoked by tenant" in listed.content.decode()
    detail = as_auditor.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    card = detail[detail.index('id="key-status"') : detail.index("</article>", detail.index('id="key-status"'))]
    assert "Revoked by tenant" in card and "cannot be encrypted or decrypted" in card
    assert "Healthy" not in detail, "nothing on the page of a revoked tenant says healthy"


def test_the_dashboard_never_counts_tenants(as_auditor, tenant, other_tenant):
    """Its numbers come from the counts kept as tenants change: no COUNT over the tenants table, at any scale."""
    with CaptureQueriesContext(connection) as queries:
        assert as_auditor.get(reverse("vendor:dashboard")).status_code == 200
    counting = [
        q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and '"keycore_tenant"' in q["sql"]
    ]
    assert counting == []


def test_new_tenants_are_counted_in_the_week_they_were_created(db):
    from keycore import selectors
    from keycore.services.summary import tenant_counts_recompute

    now = timezone.now()
    for external_id, age in [("a", 0), ("b", 0), ("c", 7), ("d", 7 * 11), ("old", 7 * 13)]:
        Tenant.objects.filter(pk=make_tenant(external_id, external_id.upper()).pk).update(
            created_at=now - timedelta(days=age)
        )
    # the dates were moved behind the services' back: the recount sees it, and the repair fixes the weeks
    assert {row[0] for row in tenant_counts_recompute()} == {"created_week"}
    tenant_counts_recompute(repair=True)
    assert tenant_counts_recompute() == []
    weeks = selectors.vendor_tenants_per_week(12)
    assert len(weeks) == 12 and weeks[-1][0] <= now.date() < weeks[-1][0] + timedelta(days=7)
    assert [n for _, n in weeks] == [1] + [0] * 9 + [1, 2]  # "old" is before the first week
