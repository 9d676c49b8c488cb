"""TenantFilterSet's search (shared by the portal and the API): the same answers on every database,
and a plan that uses an index rather than reading every tenant."""

from __future__ import annotations

import pytest
from django.db import connection

from keycore.filtersets import TenantFilterSet
from keycore.models import Tenant
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def names(db):
    for external_id, name in [
        ("acme", "Acme Corporation"),
        ("ACME-EU", "acme europe"),
        ("globex", "Globex Industries"),
        ("eclair", "éclair Pâtisserie"),
        ("emoji", "Zebra 🦓 Labs"),
        ("under_score", "Percent 100% Ltd"),
    ]:
        make_tenant(external_id, name)


def _search(q: str, match: str = "prefix") -> list[str]:
    filterset = TenantFilterSet({"q": q, "match": match}, queryset=Tenant.objects.all())
    assert filterset.is_valid()
    return sorted(filterset.qs.values_list("external_id", flat=True))


@pytest.mark.parametrize(
    ("q", "match", "expected"),
    [
        ("acme", "prefix", ["ACME-EU", "acme"]),  # name or external id, any case
        ("ACME-", "prefix", ["ACME-EU"]),
        ("acme c", "prefix", ["acme"]),
        ("éclair", "prefix", ["eclair"]),
        ("zebra 🦓", "prefix", ["emoji"]),
        ("100%", "prefix", []),
        ("under_", "prefix", ["under_score"]),
        ("europe", "contains", ["ACME-EU"]),
        ("100%", "contains", ["under_score"]),
        ("PÂTISSERIE", "contains", ["eclair"] if connection.vendor == "postgresql" else []),
        ("pâtisserie", "contains", ["eclair"]),
        ("", "prefix", ["ACME-EU", "acme", "eclair", "emoji", "globex", "under_score"]),
    ],
)
def test_search_matches_names_and_external_ids(names, q, match, expected):
    assert _search(q, match) == expected


@pytest.mark.parametrize("match", ["prefix", "contains"])
def test_a_search_can_read_an_index_instead_of_the_whole_table(names, match):
    # unordered: how the matches are found (the portal then sorts them, see vendor_portal/pagination.py)
    qs = TenantFilterSet({"q": "glob", "match": match}, queryset=Tenant.objects.all()).qs.order_by()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # six rows: make the planner show its index choice
        plan = qs.explain()
        kind = "prefix" if match == "prefix" else "trgm"  # B-tree ranges for a prefix, trigrams for the rest
        assert f"tenant_uname_{kind}" in plan and f"tenant_uextid_{kind}" in plan, plan
    elif match == "prefix":
        plan = qs.explain()
        assert "tenant_uname_id" in plan and "tenant_uextid_id" in plan, plan
    else:
        pytest.skip("SQLite has no index for a substring; the benchmark measures its scan")
