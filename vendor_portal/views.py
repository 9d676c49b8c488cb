"""The vendor portal (/vendor/): thin views over keycore's selectors and services.

This module holds what every page uses (``vendor_action``, ``render_page``, the pager)
and the dashboard, tenants, invitations and audit trail; vendor-provided keys are in
``keys.py``, rekey jobs in ``jobs.py``, staff and API keys in ``staff.py``, security
events in ``events.py``.

Each view parses its input, calls one service or selector, and renders. Who may do
what is decided by ``vendor_view(cap)`` alone; destructive and empowering actions (retire, offboard,
shred and its dual control, create, rotate or revoke an API key, invite, promote or deactivate staff)
also need a recent password re-entry (allauth's ``reauthentication_required``). Services write the audit
events; no view does.
"""

from __future__ import annotations

import csv

from allauth.account.decorators import reauthentication_required
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from keycore import errors, selectors
from keycore.access import vendor_view
from keycore.filtersets import KEY_STATUS_FILTER_CHOICES, AuditEventFilterSet, TenantFilterSet
from keycore.key_rules import kms_config_allowed_actions
from keycore.models import Invitation, Tenant
from keycore.models.jobs import ACTIVE_JOB_STATES, JobState
from keycore.models.keys import ConfigOwner, ConfigState
from keycore.models.tenants import KeyOwnership, TenantStatus
from keycore.pagination import Sort, keyset_iterate, keyset_page
from keycore.providers.registry import provider_choices
from keycore.roles import Cap, TenantRole
from keycore.services import sovereignty, tenants
from keycore.services.audit import Actor
from keycore.ui import charts
from keycore.ui.changes import change_rows
from keycore.ui.forms import apply_service_errors
from keycore.ui.kms import kind_and_place
from vendor_portal import onboarding
from vendor_portal.forms import (
    AdminInviteFormSet,
    CsvConfirmForm,
    CsvUploadForm,
    InvitationForm,
    ShredForm,
    StatusForm,
    TenantCreateForm,
)
from vendor_portal.templatetags.vendor_caps import caps_of

PAGE_SIZE = 50
#: a search this long can use the trigram indexes; shorter ones match so many rows that walking the name order wins
INDEXED_SEARCH_MIN = 3
TENANT_SORTS = {
    s.key: s
    for s in (
        Sort("name", "name", False, "Name (A–Z)"),
        Sort("-name", "name", True, "Name (Z–A)"),
        Sort("-created", "created_at", True, "Newest first"),
        Sort("created", "created_at", False, "Oldest first"),
    )
}
NEWEST = Sort("-created", "created_at", True, "Newest first")
CSV_COLUMNS = (
    "external_id",
    "name",
    "status",
    "key_ownership",
    "primary_provider",
    "health",
    "key_status",
    "created_at",
)


def vendor_action(cap: str = Cap.WRITE, *, reauthenticate=False):
    """A POST-only action: role first (an auditor gets 403, not a password prompt), then re-authentication."""

    def decorator(view):
        inner = require_POST(view)
        if reauthenticate:
            inner = reauthentication_required(inner, enabled=reauthenticate if callable(reauthenticate) else None)
        return vendor_view(cap)(inner)

    return decorator


def render_page(request, template: str, context: dict, *, status: int = 200):
    """Render with what every vendor page needs: the role's capabilities, for showing only usable actions."""
    context["can"] = caps_of(request.staff.role)
    return render(request, template, context, status=status)


def tenant_or_404(external_id: str) -> Tenant:
    try:
        return selectors.tenant_by_external_id(external_id)
    except errors.TenantNotFound as exc:
        raise Http404(exc.detail) from None


def is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _next_params(request, **changes) -> str:
    params = request.GET.copy()
    for key, value in changes.items():
        params.pop(key, None)
        if value:
            params[key] = value
    return params.urlencode()


def pager_links(request, page) -> dict:
    return {
        "next_url": f"?{_next_params(request, cursor=page.next_cursor)}" if page.next_cursor else "",
        "previous_url": f"?{_next_params(request, cursor=page.previous_cursor)}" if page.previous_cursor else "",
        "first_url": f"?{_next_params(request, cursor='')}" if request.GET.get("cursor") else "",
    }


# --- dashboard ------------------------------------------------------------------------------


@vendor_view(Cap.READ)
def dashboard(request):
    stats = selectors.vendor_dashboard_stats()
    tenants_url = reverse("vendor:tenants")
    ownership = charts.horizontal_bars(
        "Tenants by key",
        [
            (
                KeyOwnership(value).label,
                stats["by_ownership"].get(value, 0),
                f"bar-{value}",
                f"{tenants_url}?key_ownership={value}",
            )
            for value in KeyOwnership.values
        ],
    )
    status = charts.horizontal_bars(
        "Tenants by status",
        [
            (
                TenantStatus(value).label,
                stats["by_status"].get(value, 0),
                f"bar-{value}",
                f"{tenants_url}?status={value}",
            )
            for value in TenantStatus.values
        ],
    )
    weekly = selectors.vendor_tenants_per_week(12)
    growth = charts.columns("New tenants per week", [(f"{day:%d %b}", n) for day, n in weekly])
    events = selectors.vendor_recent_activity(10)
    return render_page(
        request,
        "vendor_portal/dashboard.html",
        {
            "nav": "dashboard",
            "stats": stats,
            "ownership_chart": ownership,
            "status_chart": status,
            "growth_chart": growth,
            "growth_first": weekly[0][0],
            "attention": selectors.vendor_tenants_needing_attention(),
            "active_jobs": selectors.vendor_jobs(ACTIVE_JOB_STATES),
            "failed_jobs": selectors.vendor_jobs([JobState.FAILED]),
            "events": [(e, change_rows(e)) for e in events],
        },
    )


# --- tenants ----------------------------------------------------------------------------------


def _tenant_search(request):
    """The tenants list's filter set, sort, and whether the search should match before sorting."""
    filterset = TenantFilterSet(request.GET, queryset=selectors.tenant_list())
    sort = TENANT_SORTS.get(request.GET.get("sort", ""), TENANT_SORTS["name"])
    query = (request.GET.get("q") or "").strip()
    return filterset, sort, len(query) >= INDEXED_SEARCH_MIN


@require_GET
@vendor_view(Cap.READ)
def tenant_list(request):
    filterset, sort, search_first = _tenant_search(request)
    context = {
        "nav": "tenants",
        "filterset": filterset,
        "sort": sort,
        "sorts": TENANT_SORTS.values(),
        "providers": provider_choices(),
        "statuses": TenantStatus.choices,
        "ownerships": KeyOwnership.choices,
        "key_statuses": KEY_STATUS_FILTER_CHOICES,
        "export_query": _next_params(request, cursor=""),
        "contains_query": _next_params(request, cursor="", match="contains"),  # the empty state's suggestion
        "filtered": any(
            request.GET.get(k)
            for k in ("q", "status", "key_ownership", "provider", "health", "key_status", "vendor_key")
        ),
        # "assign the tenants of this filter to a vendor key": the same filter, posted to the move
        "vendor_keys": selectors.vendor_key_list().filter(state="active"),
        "filter_values": [(k, v) for k, v in request.GET.items() if k in TenantFilterSet.base_filters and v],
    }
    if not filterset.is_valid():
        context.update(page=None, pager={})
        return render_page(request, "vendor_portal/tenant_list.html", context, status=400)
    page = keyset_page(
        filterset.qs,
        scope="tenants",
        sort=sort,
        cursor=request.GET.get("cursor"),
        size=PAGE_SIZE,
        after_filtering=search_first,
    )
    if page.cursor_rejected:
        messages.warning(request, "That page link is no longer valid; showing the first page.")
    context.update(
        page=page,
        pager=pager_links(request, page),
        oob=is_htmx(request),
        tenant_url=reverse("vendor:tenants"),  # + "<external id>/" is each tenant's page
    )
    template = "vendor_portal/partials/tenant_results.html" if is_htmx(request) else "vendor_portal/tenant_list.html"
    return render_page(request, template, context)


class _Echo:
    def write(self, value):
        return value


def _csv_cell(value) -> str:
    """A cell a spreadsheet will not run: text starting with = + - @ (or a tab/CR) gets a leading quote."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@require_GET
@vendor_view(Cap.READ)
def tenant_export(request):
    """The filtered tenants list as CSV, streamed a thousand rows at a time (never the whole list in memory)."""
    filterset, sort, _ = _tenant_search(request)
    if not filterset.is_valid():
        return HttpResponse("The filters are not valid.", status=400, content_type="text/plain")
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for t in keyset_iterate(filterset.qs, sort=sort):
            yield writer.writerow(
                [
                    _csv_cell(t.external_id),
                    _csv_cell(t.name),
                    t.status,
                    t.key_ownership,
                    _csv_cell(t.primary_provider),
                    t.health,
                    t.key_status,
                    t.created_at.isoformat(),
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="tenants-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response


@vendor_view(Cap.WRITE)
def tenant_create(request):
    form = TenantCreateForm(request.POST or None)
    admins = AdminInviteFormSet(request.POST or None, prefix="admins")
    if request.method == "POST" and form.is_valid() and admins.is_valid():
        invites = [tenants.AdminInvite(a["email"], a["role"]) for a in admins.cleaned_data if a and a.get("email")]
        try:
            tenant = tenants.tenant_create(
                external_id=form.cleaned_data["external_id"],
                name=form.cleaned_data["name"],
                admins=invites,
                actor=Actor.from_request(request),
                vendor_key=form.cleaned_data.get("vendor_key"),
            )
        except errors.KeyCoreError as exc:
            apply_service_errors(form, exc)
        else:
            invited = f" and invited {len(invites)} admin(s)" if invites else ""
            messages.success(request, f"Created {tenant.name} with its own vendor-provided key{invited}.")
            return redirect("vendor:tenant", external_id=tenant.external_id)
    status = 400 if request.method == "POST" else 200
    return render_page(
        request, "vendor_portal/tenant_create.html", {"nav": "tenants", "form": form, "admins": admins}, status=status
    )


@vendor_view(Cap.WRITE)
def tenant_import(request):
    """Step 1: upload a CSV; step 2 (same page): the preview with every row's verdict, and a confirm button."""
    form = CsvUploadForm(request.POST or None, request.FILES or None)
    context = {"nav": "tenants", "form": form, "columns": onboarding.COLUMNS, "max_rows": onboarding.MAX_ROWS}
    if request.method == "POST" and form.is_valid():
        try:
            text = onboarding.read_upload(form.cleaned_data["file"])
            plan = onboarding.plan_import(text)
        except onboarding.FileProblem as exc:
            form.add_error("file", str(exc))
        else:
            context.update(plan=plan, confirm=CsvConfirmForm(initial={"payload": onboarding.seal_payload(text)}))
            return render_page(request, "vendor_portal/tenant_import.html", context)
    return render_page(
        request, "vendor_portal/tenant_import.html", context, status=400 if request.method == "POST" else 200
    )


@vendor_action(Cap.WRITE)
def tenant_import_confirm(request):
    """Step 3: create what the (re-checked) file plans; report each tenant and each skipped row."""
    form = CsvConfirmForm(request.POST)
    context = {"nav": "tenants", "form": CsvUploadForm(), "columns": onboarding.COLUMNS}
    try:
        if not form.is_valid():
            raise onboarding.FileProblem("The upload could not be read back; upload the file again.")
        plan = onboarding.plan_import(onboarding.open_payload(form.cleaned_data["payload"]))
    except onboarding.FileProblem as exc:
        context["problem"] = str(exc)
        return render_page(request, "vendor_portal/tenant_import.html", context, status=400)
    outcomes = onboarding.apply_plan(plan, actor=Actor.from_request(request))
    context.update(plan=plan, outcomes=outcomes, created=sum(1 for o in outcomes if o.created))
    return render_page(request, "vendor_portal/tenant_import.html", context)


def _tenant_context(request, tenant: Tenant, **extra) -> dict:
    overview = selectors.tenant_overview(tenant)
    actor, memo = Actor.from_request(request), {}
    audit = keyset_page(
        selectors.audit_event_list(tenant=tenant), scope="tenant-audit", sort=NEWEST, cursor=None, size=10
    )
    members = selectors.vendor_tenant_members(tenant)
    invitations = selectors.vendor_tenant_invitations(tenant)
    # a tenant without an owner is stuck (only owners change its settings or make owners): invite one first
    has_owner = any(m.role == TenantRole.OWNER for m in members) or any(
        i.role == TenantRole.OWNER and i.state == "pending" for i in invitations
    )
    shred = tenants.shred_state(tenant, request.user)
    has_vendor_keys = any(
        c.owner == ConfigOwner.VENDOR and c.state != ConfigState.DESTROYED for c in overview["configs"]
    )
    context = {
        "nav": "tenants",
        "tenant": tenant,
        **overview,
        # each configuration with what this actor may do to it: the page offers exactly that (keycore/key_rules.py)
        "config_rows": [
            (c, kind_and_place(c), kms_config_allowed_actions(c, actor, memo=memo)) for c in overview["configs"]
        ],
        "members": members,
        "invitations": invitations,
        "has_owner": has_owner,
        "events": [(e, change_rows(e)) for e in audit.rows],
        "more_events": bool(audit.next_cursor),
        "invite_form": InvitationForm(initial={"role": TenantRole.ADMIN if has_owner else TenantRole.OWNER}),
        "status_form": StatusForm(),
        "shred_form": ShredForm(external_id=tenant.external_id),
        "replacement_refusal": sovereignty.vendor_key_replacement_refusal(tenant),
        "grace_days": settings.KEYCORE_OFFBOARD_GRACE_DAYS,
        "shred": shred,
        "grace_over": shred["grace_over"],
        "has_vendor_keys": has_vendor_keys,
        "can_shred": shred["may_shred"] and has_vendor_keys,
        "ConfigState": ConfigState,
    }
    context.update(extra)
    return context


@require_GET
@vendor_view(Cap.READ)
def tenant_detail(request, external_id: str):
    tenant = tenant_or_404(external_id)
    return render_page(request, "vendor_portal/tenant_detail.html", _tenant_context(request, tenant))


@require_GET
@vendor_view(Cap.READ)
def tenant_audit(request, external_id: str):
    tenant = tenant_or_404(external_id)
    page = keyset_page(
        selectors.audit_event_list(tenant=tenant),
        scope=f"tenant-audit:{tenant.pk}",
        sort=NEWEST,
        cursor=request.GET.get("cursor"),
        size=PAGE_SIZE,
    )
    return render_page(
        request,
        "vendor_portal/tenant_audit.html",
        {
            "nav": "tenants",
            "tenant": tenant,
            "events": [(e, change_rows(e)) for e in page.rows],
            "pager": pager_links(request, page),
        },
    )


def _wants_offboard(request) -> bool:
    return request.POST.get("transition") == "offboard"


@vendor_action(Cap.WRITE, reauthenticate=_wants_offboard)
def tenant_status(request, external_id: str):
    """Suspend or reactivate (confirmed in the browser), or offboard (confirmed, and after a password re-entry)."""
    tenant = tenant_or_404(external_id)
    form = StatusForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose suspend, reactivate or offboard.")
        return redirect("vendor:tenant", external_id=tenant.external_id)
    transition = form.cleaned_data["transition"]
    try:
        tenant = tenants.tenant_set_status(
            tenant=tenant, transition=transition, reason=form.cleaned_data["reason"], actor=Actor.from_request(request)
        )
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        if transition == "suspend":
            done = f"{tenant.name} is suspended: its data cannot be encrypted or decrypted until reactivated."
        elif transition == "reactivate":
            done = f"{tenant.name} is active again."
        else:
            done = (
                f"{tenant.name} is offboarding. Its vendor-provided keys can be crypto-shredded after "
                f"{tenant.shred_after:%Y-%m-%d %H:%M} UTC."
            )
        messages.success(request, done)
    return redirect("vendor:tenant", external_id=tenant.external_id)


@vendor_action(Cap.SHRED, reauthenticate=True)
def tenant_shred(request, external_id: str):
    """Crypto-shred an offboarded tenant's vendor-provided keys, typed, once the grace period is over."""
    tenant = tenant_or_404(external_id)
    form = ShredForm(request.POST, external_id=tenant.external_id)
    if not form.is_valid():
        return render_page(
            request, "vendor_portal/tenant_detail.html", _tenant_context(request, tenant, shred_form=form), status=400
        )
    try:
        count = tenants.tenant_shred(tenant=tenant, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            f"Crypto-shredded {count} vendor-provided key(s) of {tenant.name}: "
            "data under them can never be read again.",
        )
    return redirect("vendor:tenant", external_id=tenant.external_id)


@vendor_action(Cap.SHRED, reauthenticate=True)
def tenant_shred_request(request, external_id: str):
    """Ask to end the grace period now: dual control, another administrator must approve."""
    tenant = tenant_or_404(external_id)
    try:
        tenants.tenant_shred_early_request(
            tenant=tenant, actor=Actor.from_request(request), reason=request.POST.get("reason", "")[:300]
        )
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request, f"Asked to shred the keys of {tenant.name} early: another administrator must approve."
        )
    return redirect("vendor:tenant", external_id=tenant.external_id)


@vendor_action(Cap.SHRED, reauthenticate=True)
def tenant_shred_approve(request, external_id: str):
    """Approve another administrator's request: the grace period ends now (the shred itself is a next step)."""
    tenant = tenant_or_404(external_id)
    try:
        tenants.tenant_shred_early_approve(tenant=tenant, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Approved: the grace period of {tenant.name} is over; its keys can be shredded.")
    return redirect("vendor:tenant", external_id=tenant.external_id)


# --- invitations ---------------------------------------------------------------------------------


@vendor_action(Cap.WRITE)
def invitation_create(request, external_id: str):
    tenant = tenant_or_404(external_id)
    form = InvitationForm(request.POST)
    if form.is_valid():
        try:
            invitation, _token = tenants.invitation_create(
                tenant=tenant,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor=Actor.from_request(request),
            )
        except errors.KeyCoreError as exc:
            apply_service_errors(form, exc)
        else:
            if invitation.awaiting_approval:
                messages.info(
                    request,
                    f"{tenant.name} has an owner, so only the tenant adds its members: the invitation of "
                    f"{invitation.email} waits for one of its owners to approve it. No link exists until then.",
                )
                return redirect(reverse("vendor:tenant", args=[tenant.external_id]) + "#members")
            messages.success(
                request,
                f"Invited {form.cleaned_data['email']}; the link works once and expires in "
                f"{settings.KEYCORE_INVITATION_TTL_HOURS} hours.",
            )
            return redirect(reverse("vendor:tenant", args=[tenant.external_id]) + "#members")
    return render_page(
        request, "vendor_portal/tenant_detail.html", _tenant_context(request, tenant, invite_form=form), status=400
    )


def _invitation(tenant: Tenant | None, uid) -> Invitation:
    queryset = Invitation.objects.for_tenant(tenant) if tenant is not None else Invitation.objects.filter(tenant=None)
    return get_object_or_404(queryset, uid=uid)


def _after_invitation(tenant: Tenant | None):
    if tenant is None:
        return redirect("vendor:staff")
    return redirect(reverse("vendor:tenant", args=[tenant.external_id]) + "#members")


def invitation_action(request, tenant: Tenant | None, uid, action: str):
    invitation = _invitation(tenant, uid)
    actor = Actor.from_request(request)
    try:
        if action == "resend":
            tenants.invitation_resend(invitation=invitation, actor=actor)
            messages.success(request, f"Sent a new link to {invitation.email}; the previous one no longer works.")
        else:
            tenants.invitation_revoke(invitation=invitation, actor=actor)
            messages.success(request, f"Withdrew the invitation of {invitation.email}.")
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    return _after_invitation(tenant)


@vendor_action(Cap.WRITE)
def invitation_resend(request, external_id: str, uid):
    return invitation_action(request, tenant_or_404(external_id), uid, "resend")


@vendor_action(Cap.WRITE)
def invitation_revoke(request, external_id: str, uid):
    return invitation_action(request, tenant_or_404(external_id), uid, "revoke")


# --- audit trail ---------------------------------------------------------------------------------


@require_GET
@vendor_view(Cap.READ)
def audit_list(request):
    filterset = AuditEventFilterSet(request.GET, queryset=selectors.audit_event_list())
    context = {"nav": "audit", "filterset": filterset, "events": [], "pager": {}}
    if not filterset.is_valid():
        return render_page(request, "vendor_portal/audit_list.html", context, status=400)
    page = keyset_page(filterset.qs, scope="audit", sort=NEWEST, cursor=request.GET.get("cursor"), size=PAGE_SIZE)
    context.update(events=[(e, change_rows(e)) for e in page.rows], pager=pager_links(request, page))
    return render_page(request, "vendor_portal/audit_list.html", context)
