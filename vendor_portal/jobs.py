"""The vendor portal's rekey jobs: the list, one job and its live progress, retry and cancel."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET

from keycore import errors, selectors
from keycore.access import vendor_view
from keycore.filtersets import RekeyJobFilterSet
from keycore.models import RekeyJob
from keycore.pagination import keyset_page
from keycore.roles import Cap
from keycore.services import jobs
from keycore.services.audit import Actor
from vendor_portal.views import (
    NEWEST,
    PAGE_SIZE,
    pager_links,
    render_page,
    vendor_action,
)

# --- rekey jobs -------------------------------------------------------------------------------------


@require_GET
@vendor_view(Cap.READ)
def job_list(request):
    filterset = RekeyJobFilterSet(request.GET, queryset=selectors.rekey_job_list())
    context = {"nav": "jobs", "filterset": filterset, "page": None, "pager": {}}
    if not filterset.is_valid():
        return render_page(request, "vendor_portal/job_list.html", context, status=400)
    page = keyset_page(filterset.qs, scope="jobs", sort=NEWEST, cursor=request.GET.get("cursor"), size=PAGE_SIZE)
    context.update(page=page, pager=pager_links(request, page))
    return render_page(request, "vendor_portal/job_list.html", context)


def _job(uid) -> RekeyJob:
    return get_object_or_404(selectors.rekey_job_list(), uid=uid)


@require_GET
@vendor_view(Cap.READ)
def job_detail(request, uid):
    job = _job(uid)
    return render_page(request, "vendor_portal/job_detail.html", {"nav": "jobs", "job": job})


@require_GET
@vendor_view(Cap.READ)
def job_progress(request, uid):
    """htmx polls this while the job is active; the partial it returns stops polling once the job is over."""
    job = _job(uid)
    return render_page(request, "vendor_portal/partials/job_progress.html", {"job": job})


@vendor_action(Cap.WRITE)
def job_retry(request, uid):
    job = _job(uid)
    try:
        jobs.job_retry(job=job, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, "The job starts again where it stopped.")
    return redirect("vendor:job", uid=job.uid)


@vendor_action(Cap.WRITE)
def job_cancel(request, uid):
    job = _job(uid)
    try:
        jobs.job_cancel(job=job, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, "The job is cancelled; what it finished stays done.")
    return redirect("vendor:job", uid=job.uid)
