"""FilterSets shared by the portals and the REST API: one definition drives both."""

from __future__ import annotations

import django_filters
from django.db import connections
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Upper
from django.db.models.lookups import GreaterThanOrEqual, LessThan

from keycore.models import AuditEvent, KeyUseEvent, RekeyJob, Tenant
from keycore.models.jobs import JobKind, JobState
from keycore.models.tenants import Health, KeyOwnership, TenantStatus

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
SQLITE_SEARCH_TABLE = "keycore_tenant_search"


def _sqlite_search_index(alias: str) -> bool:
    """Whether this database is SQLite with the tenant search index (absent without FTS5)."""
    connection = connections[alias]
    if connection.vendor != "sqlite":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [SQLITE_SEARCH_TABLE])
        return cursor.fetchone() is not None


class TenantFilterSet(django_filters.FilterSet):
    """Search by name or external id (prefix and contains), and filter on the indexed summary columns."""

    q = django_filters.CharFilter(method="search", label="Search")
    match = django_filters.ChoiceFilter(
        method="noop", choices=[("prefix", "Starts with"), ("contains", "Contains")], label="Match", empty_label=None
    )
    status = django_filters.ChoiceFilter(choices=TenantStatus.choices)
    key_ownership = django_filters.ChoiceFilter(choices=KeyOwnership.choices, label="Key")
    provider = django_filters.CharFilter(field_name="primary_provider", label="Provider")
    health = django_filters.ChoiceFilter(choices=Health.choices)

    class Meta:
        model = Tenant
        fields = ["q", "match", "status", "key_ownership", "provider", "health"]

    def noop(self, queryset, name, value):
        return queryset

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        if self.data.get("match") == "contains":
            matches = Q(name__icontains=value) | Q(external_id__icontains=value)
            if len(value) >= 3 and _sqlite_search_index(queryset.db):
                # SQLite: candidates from the FTS5 trigram index (migration 0007); the LIKE keeps the answer exact
                phrase = '"' + value.replace('"', '""') + '"'
                # a constant table name; the text is a bound parameter, quoted as one FTS phrase
                sql = f"SELECT rowid FROM {SQLITE_SEARCH_TABLE} WHERE {SQLITE_SEARCH_TABLE} MATCH %s"  # noqa: S608
                candidates = RawSQL(sql, [phrase])  # noqa: S611
                return queryset.filter(Q(pk__in=candidates) & matches)
            return queryset.filter(matches)
        matches = Q(name__istartswith=value) | Q(external_id__istartswith=value)
        if connections[queryset.db].vendor == "sqlite":
            # SQLite cannot use an index for this LIKE, but it can for a range on UPPER(name) and
            # UPPER(external_id) (indexes tenant_uname_id, tenant_uextid_id). Its upper() and LIKE fold
            # ASCII letters only, so the bounds do too; the LIKE stays, so the result is exact.
            # (PostgreSQL answers both searches from pg_trgm indexes instead.)
            low = value.translate(_ASCII_UPPER)
            high = low + "\U0010ffff"
            in_range = Q(GreaterThanOrEqual(Upper("name"), low), LessThan(Upper("name"), high)) | Q(
                GreaterThanOrEqual(Upper("external_id"), low), LessThan(Upper("external_id"), high)
            )
            return queryset.filter(in_range & matches)
        return queryset.filter(matches)


class RekeyJobFilterSet(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=JobState.choices, empty_label="Any")
    kind = django_filters.ChoiceFilter(choices=JobKind.choices, empty_label="Any")
    tenant = django_filters.CharFilter(field_name="tenant__external_id", label="Tenant external id")

    class Meta:
        model = RekeyJob
        fields = ["state", "kind", "tenant"]


class AuditEventFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__external_id", label="Tenant external id")
    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="icontains", label="Actor")
    action = django_filters.CharFilter(field_name="action", lookup_expr="startswith", label="Action")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="From")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Until")

    class Meta:
        model = AuditEvent
        fields = ["tenant", "actor", "action", "since", "until"]


class KeyUseEventFilterSet(django_filters.FilterSet):
    """A tenant's key-use events (the REST API; the tenant portal may share it)."""

    operation = django_filters.CharFilter(field_name="operation", label="Operation")
    result = django_filters.CharFilter(field_name="result", label="Result")
    label = django_filters.CharFilter(field_name="label", label="Data label")
    requesting_id = django_filters.CharFilter(field_name="requesting_id", label="Requesting id")
    since = django_filters.IsoDateTimeFilter(field_name="minute", lookup_expr="gte", label="From")
    until = django_filters.IsoDateTimeFilter(field_name="minute", lookup_expr="lt", label="Until")

    class Meta:
        model = KeyUseEvent
        fields = ["operation", "result", "label", "requesting_id", "since", "until"]
