"""Reads. Views call these; writes live in services/."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Sum

from keycore.models import AuditEvent, KeyHistoryEntry, KeyUseEvent, KmsConfig, RekeyJob, Tenant, TenantKey
from keycore.models.jobs import ACTIVE_JOB_STATES, JobState
from keycore.models.tenants import Health


def vendor_dashboard_stats() -> dict:
    by_ownership = dict(Tenant.objects.values_list("key_ownership").annotate(n=Count("id")).order_by())
    by_status = dict(Tenant.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {
        "tenants": sum(by_status.values()),
        "by_ownership": by_ownership,
        "by_status": by_status,
        "failing": Tenant.objects.filter(health=Health.FAILING).count(),
        "running_jobs": RekeyJob.objects.filter(state__in=ACTIVE_JOB_STATES).count(),
        "failed_jobs": RekeyJob.objects.filter(state=JobState.FAILED).count(),
    }


def tenant_overview(tenant: Tenant) -> dict:
    configs = list(KmsConfig.objects.for_tenant(tenant).order_by("-is_primary", "created_at"))
    return {
        "configs": configs,
        "primary": next((c for c in configs if c.is_primary), None),
        "history": list(KeyHistoryEntry.objects.for_tenant(tenant)[:20]),
        "tenant_keys": list(TenantKey.objects.for_tenant(tenant).annotate(wrap_count=Count("wraps"))),
        "jobs": list(RekeyJob.objects.for_tenant(tenant)[:10]),
    }


# --- security events (issue 9) ------------------------------------------------------------------------


def tenant_key_use(tenant: Tenant):
    """A tenant's key-use rows (filter with KeyUseEventFilterSet); index keyuse_tenant_minute / keyuse_tenant_id."""
    return KeyUseEvent.objects.for_tenant(tenant)


def tenant_audit_events(tenant: Tenant):
    """A tenant's admin events (filter with AuditEventFilterSet); index audit_tenant_created / audit_tenant_id."""
    return AuditEvent.objects.for_tenant(tenant)


KEY_USE_GROUP = ("minute", "operation", "label", "requesting_id", "source_ip", "result", "key_version")


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
        .order_by("-minute", "operation", "result", "label", "requesting_id", "source_ip", "key_version")[: limit + 1]
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
            .order_by("operation", "result", "label", "requesting_id", "source_ip", "key_version")
        )
        older = queryset.filter(minute__lt=last_minute).exists()
        return whole, (last_minute if older else None)
    return whole, whole[-1]["minute"]  # the next page starts below the oldest minute shown (complete)


def key_use_totals(queryset) -> list[dict]:
    """Sum of counts per (operation, result) over the filtered range."""
    return list(queryset.values("operation", "result").annotate(n=Sum("count")).order_by("operation", "result"))


def event_chain_state(tenant: Tenant | None) -> dict:
    """Where a chain stands: its head, its pruned prefix, and the latest verification runs."""
    from keycore.models import ChainVerification, EventChain
    from keycore.services.audit import chain_key

    key = chain_key(tenant.pk if tenant is not None else None)
    return {
        "chain": EventChain.objects.filter(key=key).first(),
        "key": key,
        "verifications": list(ChainVerification.objects.filter(chain=key).order_by("-created_at", "-id")[:10]),
    }


def tenant_destinations(tenant: Tenant) -> list:
    """A tenant's SIEM destinations, each with ``backlog``: events after its cursor."""
    from keycore.models import EventChain, EventDestination
    from keycore.services.audit import chain_key

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
