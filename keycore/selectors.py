"""Reads. Views call these; writes live in services/."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from allauth.mfa.models import Authenticator
from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from keycore import errors
from keycore.key_status import AT_RISK, KEY_DARK
from keycore.models import (
    ApiKey,
    AuditEvent,
    ChainVerification,
    EventChain,
    EventDestination,
    Invitation,
    KeyHistoryEntry,
    KeyUseEvent,
    KmsConfig,
    Membership,
    RekeyJob,
    Tenant,
    TenantKey,
    TenantKeyWrap,
    VendorKey,
    VendorStaff,
)
from keycore.models.jobs import ACTIVE_JOB_STATES, JobState
from keycore.models.keys import TenantKeyState
from keycore.models.tenants import InvitationAudience
from keycore.services.audit import chain_key
from keycore.services.summary import tenant_counts


def tenant_by_external_id(external_id: str, *, only: Sequence[str] = ()) -> Tenant:
    """The tenant an API path, a vendor-portal URL, a crypto call or a command names; TenantNotFound otherwise.

    ``only`` loads just those columns (the crypto service's cache miss needs four). The
    tenant portal does not ask here: it finds the tenant through the user's membership.
    """
    tenants = Tenant.objects.filter(external_id=external_id)
    tenant = (tenants.only(*only) if only else tenants).first()
    if tenant is None:
        raise errors.TenantNotFound(f"No tenant has the external id {external_id!r}.")
    return tenant


def vendor_dashboard_stats() -> dict:
    """The dashboard's numbers. Tenants are never counted here: the counts are kept as they change
    (keycore/services/summary.py), so this costs the same at 1M tenants as at ten."""
    counts = tenant_counts()
    by_key_status = counts["key_status"]
    return {
        "tenants": sum(counts["status"].values()),
        "by_ownership": counts["key_ownership"],
        "by_status": counts["status"],
        "by_key_status": by_key_status,
        # support looks here first: data dark because of its key (the tenant revoked it, or it is disabled)
        "dark": sum(by_key_status.get(s, 0) for s in KEY_DARK),
        "at_risk": sum(by_key_status.get(s, 0) for s in AT_RISK),
        "running_jobs": RekeyJob.objects.filter(state__in=ACTIVE_JOB_STATES).count(),
        "failed_jobs": RekeyJob.objects.filter(state=JobState.FAILED).count(),
    }


def tenant_overview(tenant: Tenant) -> dict:
    configs = list(KmsConfig.objects.for_tenant(tenant).select_related("tenant").order_by("-is_primary", "created_at"))
    return {
        "configs": configs,
        "primary": next((c for c in configs if c.is_primary), None),
        "history": list(KeyHistoryEntry.objects.for_tenant(tenant)[:20]),
        "tenant_keys": list(TenantKey.objects.for_tenant(tenant).annotate(wrap_count=Count("wraps"))),
        "jobs": list(RekeyJob.objects.for_tenant(tenant)[:10]),
    }


# --- lists and lookups of the API and the portals -----------------------------------------------------
# A list is a queryset: the caller filters it with the list's FilterSet (keycore/filtersets.py) and pages
# it with keycore/pagination.py, so the API's query parameters and the portals' filters are one definition.
# A lookup raises a typed NotFound (the API's 404 problem; the portals turn it into their 404).

#: the columns the vendor portal's tenants list and its CSV export show
TENANT_LIST_COLUMNS = (
    "id",
    "uid",
    "external_id",
    "name",
    "status",
    "key_ownership",
    "primary_provider",
    "health",
    "key_status",
    "created_at",
)


def tenant_list(*, columns: Sequence[str] | None = TENANT_LIST_COLUMNS) -> QuerySet[Tenant]:
    """Every tenant (filter with TenantFilterSet); ``columns=None`` loads them all (the API shows them all)."""
    return Tenant.objects.only(*columns) if columns is not None else Tenant.objects.all()


def invitation_list(*, tenant: Tenant) -> QuerySet[Invitation]:
    """A tenant's invitations in every state."""
    return Invitation.objects.for_tenant(tenant)


def invitation_get(*, tenant: Tenant, uid) -> Invitation:
    invitation = Invitation.objects.for_tenant(tenant).filter(uid=uid).first()
    if invitation is None:
        raise errors.NotFound("This tenant has no such invitation.")
    return invitation


def kms_config_list(*, tenant: Tenant) -> QuerySet[KmsConfig]:
    """A tenant's KMS configurations, vendor-provided and its own (with the tenant, which their rules read)."""
    return KmsConfig.objects.for_tenant(tenant).select_related("tenant")


def kms_config_get(*, tenant: Tenant, uid) -> KmsConfig:
    config = KmsConfig.objects.for_tenant(tenant).select_related("tenant").filter(uid=uid).first()
    if config is None:
        raise errors.NotFound("This tenant has no such KMS configuration.")
    return config


def kms_config_primary(*, tenant: Tenant) -> KmsConfig | None:
    """The configuration that wraps the tenant's new keys (at most one: a database constraint)."""
    return KmsConfig.objects.for_tenant(tenant).filter(is_primary=True).first()


def key_history_list(*, tenant: Tenant) -> QuerySet[KeyHistoryEntry]:
    """A tenant's key history with each entry's configuration; index (tenant, -at)."""
    return KeyHistoryEntry.objects.for_tenant(tenant).select_related("kms_config")


_JOB_RELATED = ("tenant", "source_config", "target_config")


def rekey_job_list(*, tenant: Tenant | None = None) -> QuerySet[RekeyJob]:
    """Rekey jobs of every tenant, or of one (filter with RekeyJobFilterSet), with what a row shows."""
    jobs = RekeyJob.objects.select_related(*_JOB_RELATED)
    return jobs.for_tenant(tenant) if tenant is not None else jobs


def rekey_job_get(*, uid) -> RekeyJob:
    job = RekeyJob.objects.select_related(*_JOB_RELATED).filter(uid=uid).first()
    if job is None:
        raise errors.NotFound("There is no such rekey job.")
    return job


def key_use_list(*, tenant: Tenant) -> QuerySet[KeyUseEvent]:
    """A tenant's key-use rows (filter with KeyUseEventFilterSet); index keyuse_tenant_minute / keyuse_tenant_id."""
    return KeyUseEvent.objects.for_tenant(tenant)


def audit_event_list(*, tenant: Tenant | None = None) -> QuerySet[AuditEvent]:
    """The audit trail, or one tenant's part of it (filter with AuditEventFilterSet); index audit_tenant_created."""
    events = AuditEvent.objects.select_related("tenant")
    return events.for_tenant(tenant) if tenant is not None else events


# --- security events (issue 9) ------------------------------------------------------------------------


KEY_USE_GROUP = (
    "minute",
    "operation",
    "label",
    "requesting_id",
    "source_ip",
    "api_key_prefix",
    "api_key_name",
    "peer_ip",
    "result",
    "key_version",
)


def key_use_grouped(
    queryset, *, before: datetime | None = None, limit: int = 200
) -> tuple[list[dict], datetime | None]:
    """Key use summed per minute and (operation, label, requester, source, result, key version), newest
    first — several processes' rows of one minute become one line. Returns whole minutes only, and the
    minute to continue before (None on the last page)."""
    if before is not None:
        queryset = queryset.filter(minute__lt=before)
    rows = list(
        queryset.values(*KEY_USE_GROUP)
        .annotate(n=Sum("count"))
        .order_by(
            "-minute",
            "operation",
            "result",
            "label",
            "requesting_id",
            "source_ip",
            "api_key_prefix",
            "peer_ip",
            "key_version",
        )[: limit + 1]
    )
    if len(rows) <= limit:
        return rows, None
    last_minute = rows[limit]["minute"]
    whole = [r for r in rows[:limit] if r["minute"] != last_minute]
    if not whole:  # one minute alone has more groups than a page: show it whole
        whole = list(
            queryset.filter(minute=last_minute)
            .values(*KEY_USE_GROUP)
            .annotate(n=Sum("count"))
            .order_by(
                "operation", "result", "label", "requesting_id", "source_ip", "api_key_prefix", "peer_ip", "key_version"
            )
        )
        older = queryset.filter(minute__lt=last_minute).exists()
        return whole, (last_minute if older else None)
    return whole, whole[-1]["minute"]  # the next page starts below the oldest minute shown (complete)


def key_use_totals(queryset) -> list[dict]:
    """Sum of counts per (operation, result) over the filtered range."""
    return list(queryset.values("operation", "result").annotate(n=Sum("count")).order_by("operation", "result"))


def event_chain_state(tenant: Tenant | None) -> dict:
    """Where a chain stands: its head, its pruned prefix, and the latest verification runs."""
    key = chain_key(tenant.pk if tenant is not None else None)
    return {
        "chain": EventChain.objects.filter(key=key).first(),
        "key": key,
        "verifications": list(ChainVerification.objects.filter(chain=key).order_by("-created_at", "-id")[:10]),
    }


def tenant_destinations(tenant: Tenant) -> list:
    """A tenant's SIEM destinations, each with ``backlog``: events after its cursor."""
    head = EventChain.objects.filter(key=chain_key(tenant.pk)).values_list("seq", flat=True).first() or 0
    destinations = list(EventDestination.objects.for_tenant(tenant).order_by("created_at", "id"))
    for destination in destinations:
        destination.backlog = max(0, head - destination.cursor_seq)
        destination.open_dead_letters = destination.dead_letters.exclude(replay_state="delivered").count()
    return destinations


def destination_deliveries(destination, *, limit: int = 25) -> list:
    return list(destination.deliveries.order_by("-attempted_at", "-id")[:limit])


def destination_dead_letters(destination, *, limit: int = 200) -> list:
    return list(destination.dead_letters.order_by("seq")[:limit])


# --- tenant portal ------------------------------------------------------------------------
# Reads for /tenant/<external_id>/. Every one starts from ``for_tenant(tenant)``.


def tenant_configs(tenant: Tenant) -> list[KmsConfig]:
    """The tenant's KMS configurations, primary first; ``live_wraps`` counts live tenant-key versions under each."""
    return list(
        KmsConfig.objects.for_tenant(tenant)
        .annotate(live_wraps=Count("wraps", filter=~Q(wraps__tenant_key__state="destroyed")))
        .order_by("-is_primary", "created_at", "id")
    )


def tenant_key_versions_queryset(tenant: Tenant):
    """Every tenant-key version, newest first, with its wraps (and their configurations), primary first."""
    wraps = (
        TenantKeyWrap.objects.select_related("kms_config")
        .defer("wrapped")  # the wrapped key itself is never needed to show where it is wrapped
        .order_by("-kms_config__is_primary", "id")
    )
    return TenantKey.objects.for_tenant(tenant).prefetch_related(Prefetch("wraps", queryset=wraps))


def tenant_key_versions(tenant: Tenant) -> list[TenantKey]:
    return list(tenant_key_versions_queryset(tenant))


def tenant_history(tenant: Tenant, *, config: KmsConfig | None = None, limit: int = 30) -> list[KeyHistoryEntry]:
    entries = KeyHistoryEntry.objects.for_tenant(tenant)
    if config is not None:
        entries = entries.filter(kms_config=config)
    return list(entries[:limit])


def tenant_jobs(tenant: Tenant, *, active_only: bool = False, limit: int = 100) -> list[RekeyJob]:
    jobs = RekeyJob.objects.for_tenant(tenant).select_related("source_config", "target_config")
    if active_only:
        jobs = jobs.filter(state__in=ACTIVE_JOB_STATES)
    return list(jobs.order_by("-created_at", "-id")[:limit])


def tenant_members(tenant: Tenant) -> list[Membership]:
    """Members with ``has_mfa``: whether each has an authenticator enrolled."""
    return list(
        Membership.objects.for_tenant(tenant)
        .select_related("user")
        .annotate(has_mfa=Exists(Authenticator.objects.filter(user_id=OuterRef("user_id"))))
        .order_by("user__email")
    )


def tenant_vendor_actions(tenant: Tenant):
    """The tenant's audit events that the vendor caused: its staff, its API keys, its operator's commands, and
    every attempt it was refused (``vendor.refused``). Newest first; a queryset, for the keyset pager.

    Who acted is told from the row as it was chained: tenant members can never be vendor staff
    (invitation_accept refuses it), so a staff user on a tenant's chain is the vendor.
    """
    staff_users = VendorStaff.objects.values("user_id")
    return (
        AuditEvent.objects.for_tenant(tenant)
        .filter(
            Q(actor_api_key__isnull=False)
            | Q(actor_user__in=staff_users)
            | Q(actor_label__startswith="operator:")
            | Q(action="vendor.refused")
        )
        .select_related("actor_api_key")
    )


def tenant_open_invitations(tenant: Tenant) -> list[Invitation]:
    """Invitations neither accepted nor revoked (expired ones included: they can be sent again)."""
    return list(
        Invitation.objects.for_tenant(tenant)
        .filter(accepted_at__isnull=True, revoked_at__isnull=True)
        .order_by("-created_at", "-id")
    )


#: a day's key use is final this long after it ended (the last flushes of its final minute are in)
KEY_USE_DAY_SETTLES = timedelta(minutes=5)
#: a settled day's sums stay cached (counts only, never keys) until the day leaves the 30-day window, so a
#: page view sums only the rows of today (and of yesterday for five minutes after midnight)
KEY_USE_DAY_CACHE_SECONDS = 31 * 24 * 3600


def _key_use_by_day(tenant: Tenant, since: datetime) -> dict:
    rows = (
        KeyUseEvent.objects.for_tenant(tenant)
        .filter(minute__gte=since)  # a range on the indexed (tenant, minute) column
        .annotate(day=TruncDate("minute"))
        .values("day", "operation", "label", "result")
        .annotate(n=Sum("count"))
        .order_by()
    )
    by_day: dict = {}
    for row in rows:
        by_day.setdefault(row["day"], []).append(row)
    return by_day


def tenant_key_use_daily(tenant: Tenant, *, days: int = 30) -> tuple[list, list[dict]]:
    """Key use of the last ``days`` days (today included, UTC): the days, and one row per
    (day, operation, data label, result) with the summed ``count``.

    A busy tenant has millions of per-minute rows in 30 days, so the sums of each settled
    day are cached (by tenant uid and day): a page view then sums only the rows of the
    days not cached yet, normally just today's.
    """
    now = timezone.now()
    today = now.date()
    all_days = [today - timedelta(days=days - 1 - i) for i in range(days)]

    def settled(day) -> bool:
        return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC) + KEY_USE_DAY_SETTLES <= now

    keys = {day: f"keycore:keyuse-day:{tenant.uid.hex}:{day.isoformat()}" for day in all_days if settled(day)}
    cached = cache.get_many(list(keys.values()))
    by_day = {day: cached[key] for day, key in keys.items() if key in cached}
    todo = [day for day in all_days if day not in by_day]
    if todo:
        fresh = _key_use_by_day(tenant, datetime.combine(todo[0], time.min, tzinfo=UTC))
        for day in todo:
            by_day[day] = fresh.get(day, [])
        cache.set_many({keys[day]: by_day[day] for day in todo if day in keys}, timeout=KEY_USE_DAY_CACHE_SECONDS)
    return all_days, [row for day in all_days for row in by_day[day]]


# --- vendor portal ------------------------------------------------------------------------
# Reads for /vendor/. List pages build on these querysets and paginate by keyset; each one
# fetches what its rows show in a fixed number of queries, whatever the page size.


def _mfa_enabled(user_ref: str):
    """Exists(...) for "this user has an authenticator", as allauth's is_mfa_enabled asks it, per row."""
    return Exists(Authenticator.objects.filter(user_id=OuterRef(user_ref)))


def vendor_recent_activity(limit: int = 10) -> list:
    return list(AuditEvent.objects.select_related("tenant").order_by("-created_at", "-id")[:limit])


def vendor_tenants_needing_attention(limit: int = 8) -> list:
    """Tenants whose data is dark because of their key first, then those whose KMS fails (each by name)."""
    columns = ("external_id", "name", "status", "key_ownership", "primary_provider", "key_status")
    dark = list(Tenant.objects.only(*columns).filter(key_status__in=KEY_DARK).order_by("name", "id")[:limit])
    if len(dark) < limit:
        risky = Tenant.objects.only(*columns).filter(key_status__in=AT_RISK).order_by("name", "id")
        dark += list(risky[: limit - len(dark)])
    return dark


def vendor_jobs(states, limit: int = 8) -> list:
    return list(
        RekeyJob.objects.filter(state__in=states)
        .select_related("tenant", "target_config")
        .order_by("-created_at", "-id")[:limit]
    )


def vendor_tenants_per_week(weeks: int = 12) -> list[tuple]:
    """(week start, tenants created that week) for the last ``weeks`` weeks, oldest first, zeros included.

    Read from the counts kept as tenants are created (keycore/services/summary.py): no count of tenants.
    """
    today = timezone.now().date()
    start = today - timedelta(days=today.weekday() + 7 * (weeks - 1))
    days = [start + timedelta(weeks=i) for i in range(weeks)]
    created = tenant_counts().get("created_week", {})
    return [(day, created.get(day.isoformat(), 0)) for day in days]


def vendor_tenant_members(tenant: Tenant) -> list:
    """Members with their user and whether they use MFA, in one query."""
    return list(
        Membership.objects.for_tenant(tenant)
        .select_related("user")
        .annotate(mfa_enabled=_mfa_enabled("user_id"))
        .order_by("user__email")
    )


def vendor_tenant_invitations(tenant: Tenant) -> list:
    """Invitations not yet accepted or revoked (pending or expired), newest first."""
    return list(
        Invitation.objects.for_tenant(tenant)
        .filter(accepted_at__isnull=True, revoked_at__isnull=True)
        .order_by("-created_at")[:50]
    )


def vendor_staff_list() -> list:

    return list(
        VendorStaff.objects.select_related("user")
        .annotate(mfa_enabled=_mfa_enabled("user_id"))
        .order_by("-is_active", "user__email")
    )


def vendor_staff_invitations() -> list:

    return list(
        Invitation.objects.filter(
            audience=InvitationAudience.VENDOR, tenant__isnull=True, accepted_at__isnull=True, revoked_at__isnull=True
        ).order_by("-created_at")[:50]
    )


def api_key_for_authentication(prefix: str) -> ApiKey | None:
    """The key with this lookup prefix, with ``allowed_tenants``: the external ids it is limited to (None: all).

    External ids never change, so the API can check a tenant against the set without asking again.
    """
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is not None:
        key.allowed_tenants = frozenset(key.tenants.values_list("external_id", flat=True)) or None
    return key


def vendor_api_keys():
    return (
        ApiKey.objects.select_related("created_by")
        .prefetch_related(Prefetch("tenants", queryset=Tenant.objects.only("id", "external_id", "name")))
        .order_by("-created_at", "-id")
    )


def tenant_key_last_decrypt(key: TenantKey):
    """When data under this tenant-key version was last decrypted (minute precision), or None.

    What a tenant-key retirement shows while it waits: recent decrypts under the
    version mean the application still has data under it that was not rekeyed.
    """
    used = KeyUseEvent.objects.for_tenant(key.tenant_id).filter(
        key_version=key.version, operation="decrypt", result="ok"
    )
    return used.order_by("-minute").values_list("minute", flat=True).first()


# --- vendor keys -------------------------------------------------------------------------------


def vendor_key_list() -> QuerySet[VendorKey]:
    """The vendor's shared keys, retired ones included (they stay in the record)."""
    return VendorKey.objects.all()


def vendor_key_get(*, uid) -> VendorKey:
    vendor_key = VendorKey.objects.filter(uid=uid).first()
    if vendor_key is None:
        raise errors.NotFound("There is no such vendor key.")
    return vendor_key


def vendor_key_summaries(queryset: QuerySet[VendorKey] | None = None) -> list[dict[str, object]]:
    """Each vendor key with the tenants it serves (as primary), its wrapped key versions and their documents."""
    vendor_keys = list((queryset if queryset is not None else VendorKey.objects.all()).order_by("name"))
    ids = [vk.pk for vk in vendor_keys]
    tenants = dict(
        KmsConfig.objects.filter(vendor_key_id__in=ids, is_primary=True)
        .values_list("vendor_key_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    keys = {
        row["kms_config__vendor_key_id"]: row
        for row in TenantKeyWrap.objects.filter(kms_config__vendor_key_id__in=ids)
        .exclude(tenant_key__state=TenantKeyState.DESTROYED)
        .values("kms_config__vendor_key_id")
        .annotate(versions=Count("id"), documents=Sum("tenant_key__documents"))
        .order_by()
    }
    out = []
    for vk in vendor_keys:
        row = keys.get(vk.pk, {})
        out.append(
            {
                "vendor_key": vk,
                "tenants": tenants.get(vk.pk, 0),
                "key_versions": row.get("versions", 0),
                "documents": row.get("documents") or 0,
            }
        )
    return out


def vendor_key_tenants(vendor_key: VendorKey):
    """The tenants ``vendor_key`` serves: those whose primary configuration uses it."""
    return Tenant.objects.filter(kms_configs__vendor_key=vendor_key, kms_configs__is_primary=True)
