"""Reads. Views call these; writes live in services/."""

from __future__ import annotations

from django.db.models import Count

from keycore.models import KeyHistoryEntry, KmsConfig, RekeyJob, Tenant, TenantKey
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
