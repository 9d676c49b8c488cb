"""Key versions and the vendor's actions, as the tenant sees them.

*Key versions*: each tenant-key version with the documents KeyCore counted under it, its last decrypt, which
keys open it, and whether a vendor-provided key ever held it — the history that says how much of the tenant's
data a pre-BYOK backup could still recover. A drained or idle version can be retired here (destroyed, after a
password re-entry and the tenant's name typed). *Vendor actions*: every action of the vendor that touched the
tenant, refused attempts included, from the tenant's own hash-chained trail.
"""

from __future__ import annotations

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from keycore import errors, selectors
from keycore.access import tenant_view
from keycore.models import RekeyJob, TenantKey
from keycore.models.jobs import ACTIVE_JOB_STATES, JobKind
from keycore.models.keys import ConfigOwner, TenantKeyState
from keycore.roles import Cap
from keycore.services.audit import Actor
from keycore.services.jobs import job_start_key_retirement, retirement_readiness
from keycore.services.jobs.key_retirement import SETTLE
from keycore.ui.changes import change_rows
from tenant_portal.forms import RevokeForm
from tenant_portal.views import can

#: vendor actions per page
PAGE = 50

READINESS = {
    "drained": "No document KeyCore issued is left under it: retiring it loses nothing KeyCore knows of.",
    "idle": "Nothing was decrypted under it for your idle period: retiring it makes what is left unreadable.",
}


def _version_rows(tenant) -> list[dict]:
    versions = selectors.tenant_key_versions(tenant)
    retiring = {
        job.tenant_key_id: job
        for job in RekeyJob.objects.for_tenant(tenant).filter(kind=JobKind.KEY_RETIREMENT, state__in=ACTIVE_JOB_STATES)
    }
    most = max((v.documents for v in versions), default=0) or 1
    newest_active = next((v.version for v in versions if v.state == TenantKeyState.ACTIVE), None)
    rows = []
    for v in versions:
        wraps = list(v.wraps.all())
        rows.append(
            {
                "key": v,
                "documents": max(0, v.documents),
                "bar": round(100 * max(0, v.documents) / most),
                "current": v.version == newest_active,
                "opened_by": wraps,
                "vendor_opens_now": any(w.kms_config.owner == ConfigOwner.VENDOR for w in wraps),
                "readiness": retirement_readiness(v) if v.state == TenantKeyState.ACTIVE else None,
                "retirement": retiring.get(v.pk),
            }
        )
    return rows


@tenant_view(Cap.READ)
@require_GET
def versions(request):
    rows = _version_rows(request.tenant)
    return render(
        request,
        "tenant_portal/versions.html",
        {
            "tenant": request.tenant,
            "rows": rows,
            "vendor_held_documents": sum(r["documents"] for r in rows if r["key"].vendor_held),
            "vendor_held_live": [r for r in rows if r["key"].vendor_held and r["key"].state != "destroyed"],
            "can_retire": can(request, Cap.MANAGE_KEYS),
            "settle_minutes": int(SETTLE.total_seconds() // 60),
            "nav": "keys",
        },
    )


def _version(request, version: int) -> TenantKey:
    return get_object_or_404(TenantKey.objects.for_tenant(request.tenant), version=version)


def _retire_page(request, key: TenantKey, form: RevokeForm, status: int = 200):
    readiness = retirement_readiness(key)
    return render(
        request,
        "tenant_portal/version_retire.html",
        {
            "tenant": request.tenant,
            "key": key,
            "form": form,
            "readiness": readiness,
            "readiness_text": READINESS.get(readiness or "", ""),
            "nav": "keys",
        },
        status=status,
    )


@tenant_view(Cap.MANAGE_KEYS)
@require_http_methods(["GET", "POST"])
def version_retire(request, version: int):
    """GET: what retiring this version destroys. POST (tenant name typed + fresh password): start it."""
    key = _version(request, version)
    if request.method == "POST":
        return _retire(request, key)
    return _retire_page(request, key, RevokeForm(tenant_name=request.tenant.name))


@reauthentication_required
def _retire(request, key: TenantKey):
    form = RevokeForm(request.POST, tenant_name=request.tenant.name)
    if not form.is_valid():
        return _retire_page(request, key, form, status=400)
    try:
        job = job_start_key_retirement(key=key, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        form.add_error(None, exc.detail)
        return _retire_page(request, key, form, status=exc.http_status)
    if job.params.get("confirmed"):
        messages.warning(
            request, f"Tenant key v{key.version} is being destroyed: {READINESS[job.params['confirmed_as']]}"
        )
    else:
        messages.info(request, f"Tenant key v{key.version} is retiring: {job.pause_reason}")
    return redirect("tenant:job", tenant=request.tenant.external_id, job=job.uid)


@tenant_view(Cap.READ)
@require_GET
def vendor_actions(request):
    """Every vendor action that touched this tenant, newest first, in pages (``?before=<event id>``)."""
    events = selectors.tenant_vendor_actions(request.tenant).order_by("-id")
    before = request.GET.get("before", "")
    if before.isdigit():
        events = events.filter(id__lt=int(before))
    page = list(events[: PAGE + 1])
    return render(
        request,
        "tenant_portal/vendor_actions.html",
        {
            "tenant": request.tenant,
            "events": [(e, change_rows(e)) for e in page[:PAGE]],
            "older": page[PAGE - 1].pk if len(page) > PAGE else None,
            "refused": sum(1 for e in page[:PAGE] if e.action == "vendor.refused"),
            "nav": "vendor_actions",
        },
    )
