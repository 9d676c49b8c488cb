"""FilterSets shared by the portals and the REST API: one definition drives both.

Each list has one FilterSet: its filters are the API's query parameters and the
portal's filter fields (same names, same meaning), and the portal renders the
FilterSet's own form. The widgets below only matter to the portals.
"""

from __future__ import annotations

import inspect
import uuid
from datetime import UTC

import django_filters
from django import forms
from django.db import connections
from django.db.models import Exists, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Upper
from django.db.models.lookups import GreaterThanOrEqual, LessThan

from keycore import errors
from keycore.key_status import AT_RISK, KEY_DARK, KeyStatus
from keycore.models import AuditEvent, KeyUseEvent, KmsConfig, RekeyJob, Tenant
from keycore.models.jobs import JobKind, JobState
from keycore.models.tenants import Health, KeyOwnership, TenantStatus
from keycore.services.apikeys import api_key_lookup

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


#: the key-status filter's groups: what the dashboard's "dark" and "at risk" numbers link to
KEY_STATUS_GROUPS = {"dark": [s.value for s in KEY_DARK], "at_risk": [s.value for s in AT_RISK]}
KEY_STATUS_FILTER_CHOICES = [
    ("dark", "Dark: revoked or disabled"),
    ("at_risk", "At risk: degraded or KMS unreachable"),
    *KeyStatus.choices,
]


class TenantFilterSet(django_filters.FilterSet):
    """Search by name or external id (prefix and contains), and filter on the indexed summary columns."""

    q = django_filters.CharFilter(method="search", label="Search")
    match = django_filters.ChoiceFilter(
        method="noop", choices=[("prefix", "Starts with"), ("contains", "Contains")], label="Match", empty_label=None
    )
    status = django_filters.ChoiceFilter(choices=TenantStatus.choices)
    key_ownership = django_filters.ChoiceFilter(choices=KeyOwnership.choices, label="Key")
    provider = django_filters.CharFilter(field_name="primary_provider", label="Provider")
    health = django_filters.ChoiceFilter(choices=Health.choices, label="KMS health")
    key_status = django_filters.ChoiceFilter(
        choices=KEY_STATUS_FILTER_CHOICES, method="by_key_status", label="Key status"
    )
    vendor_key = django_filters.CharFilter(
        method="served_by", label="Vendor key", help_text="A vendor key's uid: the tenants it serves."
    )

    class Meta:
        model = Tenant
        fields = ["q", "match", "status", "key_ownership", "provider", "health", "key_status", "vendor_key"]

    def by_key_status(self, queryset, name, value):
        """One key status, or a group of them: ``dark`` (revoked or disabled), ``at_risk`` (degraded, unreachable)."""
        if not value:
            return queryset
        group = KEY_STATUS_GROUPS.get(value)
        return queryset.filter(key_status__in=group) if group else queryset.filter(key_status=value)

    def noop(self, queryset, name, value):
        return queryset

    def served_by(self, queryset, name, value):
        try:
            uid = uuid.UUID(value.strip())
        except ValueError:
            return queryset.none()
        served = KmsConfig.objects.filter(tenant=OuterRef("pk"), is_primary=True, vendor_key__uid=uid)
        return queryset.filter(Exists(served))

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


# --- security events: admin events and key use ---------------------------------------------------------

KEY_USE_OPERATIONS = [
    ("encrypt", "Encrypt"),
    ("decrypt", "Decrypt"),
    ("rekey", "Rekey"),
    ("rekey_in", "Rekey (moved in)"),
    ("det_encrypt", "Deterministic encrypt"),
    ("det_decrypt", "Deterministic decrypt"),
    ("search", "Search terms"),
]


def key_use_results() -> list[tuple[str, str]]:
    """ "ok" and every failure code a crypto call can report (the typed errors of keycore.errors)."""
    codes = sorted(
        {
            cls.code
            for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.KeyCoreError) and cls is not errors.KeyCoreError
        }
    )
    return [("ok", "ok")] + [(code, code) for code in codes]


class EventRangeForm(forms.Form):
    """The form of both event FilterSets: a time range that every database can compare, starting before it ends.

    A datetime with an offset Python accepts but PostgreSQL does not (``-18:53``) would reach the
    database as given and fail there: every datetime is converted to UTC here, and one that cannot be
    (year 1 with a positive offset) is an error of its field — a 400 in the API, a message in a portal.
    """

    def clean(self):
        data = super().clean()
        for name in ("since", "until"):
            value = data.get(name)
            if value is not None and value.tzinfo is not None:
                try:
                    data[name] = value.astimezone(UTC)
                except OverflowError:
                    self.add_error(name, "Out of range.")
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "“From” must be before “Until”.")  # a field's error: every list shows those
        return data


def _moment(field: str, lookup: str, label: str) -> django_filters.IsoDateTimeFilter:
    widget = forms.DateTimeInput(attrs={"type": "datetime-local"})
    return django_filters.IsoDateTimeFilter(field_name=field, lookup_expr=lookup, label=label, widget=widget)


def _who(field: str) -> django_filters.CharFilter:
    """The tenant portal's one search box for both kinds: who asked (key use) or who acted (admin events)."""
    widget = forms.TextInput(attrs={"data-search": ""})
    return django_filters.CharFilter(field_name=field, lookup_expr="icontains", label="Service or user", widget=widget)


class AuditEventFilterSet(django_filters.FilterSet):
    """The audit trail: the API's ``/audit/``, the vendor portal's audit trail, the tenant portal's admin events."""

    tenant = django_filters.CharFilter(field_name="tenant__external_id", label="Tenant external id")
    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="icontains", label="Actor")
    who = _who("actor_label")
    action = django_filters.CharFilter(field_name="action", lookup_expr="startswith", label="Action")
    since = _moment("created_at", "gte", "From")
    until = _moment("created_at", "lt", "Until")

    class Meta:
        model = AuditEvent
        form = EventRangeForm
        fields = ["tenant", "actor", "who", "action", "since", "until"]


class KeyUseEventFilterSet(django_filters.FilterSet):
    """A tenant's key use: the API's ``/tenants/{external_id}/events/`` and the tenant portal's key-use tab."""

    operation = django_filters.CharFilter(
        field_name="operation", label="Operation", widget=forms.Select(choices=[("", "Any"), *KEY_USE_OPERATIONS])
    )
    result = django_filters.CharFilter(
        field_name="result", label="Result", widget=forms.Select(choices=[("", "Any"), *key_use_results()])
    )
    label = django_filters.CharFilter(field_name="label", label="Data label")
    requesting_id = django_filters.CharFilter(field_name="requesting_id", label="Requesting id")
    who = _who("requesting_id")
    api_key = django_filters.CharFilter(method="by_api_key", label="API key (prefix or id)")
    since = _moment("minute", "gte", "From")
    until = _moment("minute", "lt", "Until")

    class Meta:
        model = KeyUseEvent
        form = EventRangeForm
        fields = ["operation", "result", "label", "requesting_id", "who", "api_key", "since", "until"]

    def by_api_key(self, queryset, name, value):
        """The uses made with one API key: its prefix as shown (``kc_<prefix>…``), the bare prefix, or its id."""
        if not value.strip():
            return queryset
        field, key = api_key_lookup(value)
        return queryset.filter(**{f"api_key_{field}": key})
