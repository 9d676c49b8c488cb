"""What the database keeps for scale: room for in-place updates, and audit indexes only where they serve."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_rows_rewritten_by_jobs_leave_room_on_their_pages():
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL storage parameter")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN "
            "('keycore_kmsconfig', 'keycore_tenantkeywrap', 'keycore_eventchain')"
        )
        options = dict(cursor.fetchall())
    assert options == {
        "keycore_kmsconfig": ["fillfactor=50"],
        "keycore_tenantkeywrap": ["fillfactor=50"],
        "keycore_eventchain": ["fillfactor=50"],
    }


def test_audit_events_index_their_actor_only_where_one_is_named():
    """KeyCore's own events (a rotation writes one per tenant) name no user or API key: no index entry for them."""
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's catalogue")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'keycore_auditevent'")
        indexes = dict(cursor.fetchall())
    assert "WHERE (actor_user_id IS NOT NULL)" in indexes["audit_actor_user"]
    assert "WHERE (actor_api_key_id IS NOT NULL)" in indexes["audit_actor_api_key"]
    single_column = [d for d in indexes.values() if d.endswith("(tenant_id)") or d.endswith("(actor_user_id)")]
    assert single_column == [], "the tenant FK is served by the composite indexes that lead with it"
