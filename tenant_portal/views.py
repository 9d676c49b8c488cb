"""The tenant portal (/tenant/<external_id>/): every view resolves the tenant through the user's membership.

Views are thin: parse, call one service or selector, render. Objects named in a URL
are looked up by uid through ``Model.objects.for_tenant(request.tenant)`` only, so
another tenant's id is a 404 like an id that does not exist. KMS configuration
pages are in tenant_portal/keys.py; security events in tenant_portal/events.py.
"""

from __future__ import annotations

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from keycore import errors, selectors
from keycore.access import memberships_of, staff_of, tenant_view
from keycore.models import Invitation, Membership, RekeyJob
from keycore.models.jobs import JobKind
from keycore.models.keys import ConfigOwner, ConfigState
from keycore.roles import Cap, TenantRole, tenant_can
from keycore.services import keyring
from keycore.services.audit import Actor
from keycore.services.jobs import job_cancel, job_retry
from keycore.services.keys import tenant_key_create
from keycore.services.tenants import (
    invitation_approve,
    invitation_create,
    invitation_resend,
    invitation_revoke,
    membership_remove,
    membership_set_role,
    tenant_update,
)
from keycore.ui.charts import key_use_charts
from keycore.ui.forms import apply_service_errors
from keycore.ui.kms import where_the_key_lives
from tenant_portal.forms import InviteForm, RoleForm, SettingsForm, assignable_roles, may_manage_member


def is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def can(request, cap: str) -> bool:
    return tenant_can(request.membership.role, cap)


@login_required
def switch(request):
    """The tenant switcher: one entry per tenant the user belongs to."""
    if staff_of(request.user) is not None:
        return render(
            request, "403.html", {"message": "Vendor staff accounts cannot use the tenant portal."}, status=403
        )
    memberships = list(memberships_of(request.user))
    if len(memberships) == 1:
        return redirect("tenant:overview", tenant=memberships[0].tenant.external_id)
    return render(request, "tenant_portal/switch.html", {"memberships": memberships})


# --- overview ----------------------------------------------------------------------------


#: tenant-key versions listed on the overview (a daily rotation makes hundreds a year)
SHOWN_KEY_VERSIONS = 10


def key_state(tenant) -> dict:
    """What protects the tenant's data now: configurations, tenant-key versions and their wraps, history."""
    configs = selectors.tenant_configs(tenant)
    primary = next((c for c in configs if c.is_primary), None)
    versions = selectors.tenant_key_versions(tenant)
    live = [v for v in versions if v.state != "destroyed"]
    vendor_wrapped = [
        v
        for v in live
        if any(w.kms_config.owner == ConfigOwner.VENDOR and w.kms_config.is_usable_for_unwrap for w in v.wraps.all())
    ]
    return {
        "configs": configs,
        "primary": primary,
        "primary_where": where_the_key_lives(primary) if primary else "",
        "primary_blocked": primary is not None and primary.state in (ConfigState.DISABLED, ConfigState.REVOKED),
        "key_versions": versions[:SHOWN_KEY_VERSIONS],
        "older_versions": max(0, len(versions) - SHOWN_KEY_VERSIONS),
        "live_versions": len(live),
        "vendor_wrapped": vendor_wrapped,
        "vendor_held_live": [v for v in live if v.vendor_held],
        "vendor_held_documents": sum(max(0, v.documents) for v in live if v.vendor_held),
        "history": selectors.tenant_history(tenant, limit=20),
    }


@tenant_view(Cap.READ)
@require_GET
def overview(request):
    tenant = request.tenant
    days, rows = selectors.tenant_key_use_daily(tenant, days=30)
    return render(
        request,
        "tenant_portal/overview.html",
        {
            "tenant": tenant,
            **key_state(tenant),
            "active_jobs": selectors.tenant_jobs(tenant, active_only=True, limit=10),
            "charts": key_use_charts(days, rows),
            "nav": "overview",
        },
    )


@tenant_view(Cap.READ)
@require_GET
def overview_key_state(request):
    """The overview's key section alone, for htmx to refresh when a job finishes."""
    return render(request, "tenant_portal/_key_state.html", {"tenant": request.tenant, **key_state(request.tenant)})


# --- members -----------------------------------------------------------------------------


def _members_page(request, *, invite_form: InviteForm | None = None, status: int = 200):
    role = request.membership.role
    members = selectors.tenant_members(request.tenant)
    for m in members:
        m.manageable = can(request, Cap.MANAGE_MEMBERS) and may_manage_member(role, m.role)
        m.role_form = RoleForm(initial={"role": m.role}, actor_role=role, auto_id=f"id_{m.uid.hex}_%s")
    return render(
        request,
        "tenant_portal/members.html",
        {
            "tenant": request.tenant,
            "members": members,
            "owners": sum(1 for m in members if m.role == TenantRole.OWNER),
            "invitations": selectors.tenant_open_invitations(request.tenant),
            "invite_form": invite_form or InviteForm(inviter_role=role),
            "can_manage": can(request, Cap.MANAGE_MEMBERS),
            "may_invite_owners": any(value == TenantRole.OWNER for value, _ in assignable_roles(role)),
            "nav": "members",
        },
        status=status,
    )


@tenant_view(Cap.READ)
@require_GET
def members(request):
    return _members_page(request)


@tenant_view(Cap.MANAGE_MEMBERS)
@require_POST
@reauthentication_required
def member_invite(request):
    form = InviteForm(request.POST, inviter_role=request.membership.role)
    if not form.is_valid():
        return _members_page(request, invite_form=form, status=400)
    try:
        invitation, _token = invitation_create(
            tenant=request.tenant,
            email=form.cleaned_data["email"],
            role=form.cleaned_data["role"],
            actor=Actor.from_request(request),
        )
    except errors.KeyCoreError as exc:
        apply_service_errors(form, exc)
        return _members_page(request, invite_form=form, status=exc.http_status)
    messages.success(
        request,
        f"Invitation sent to {invitation.email} as {invitation.get_role_display()}. "
        f"The link works once and expires {invitation.expires_at:%Y-%m-%d %H:%M} UTC.",
    )
    return redirect("tenant:members", tenant=request.tenant.external_id)


def _member(request, member) -> Membership:
    membership = get_object_or_404(Membership.objects.for_tenant(request.tenant).select_related("user"), uid=member)
    if not may_manage_member(request.membership.role, membership.role):
        raise errors.PermissionDenied("Only an owner can change or remove an owner.")
    return membership


@tenant_view(Cap.MANAGE_MEMBERS)
@require_POST
@reauthentication_required
def member_role(request, member):
    try:
        membership = _member(request, member)
        form = RoleForm(request.POST, actor_role=request.membership.role)
        if not form.is_valid():
            raise errors.InvalidInput(f"You cannot give the role {request.POST.get('role', '')!r}.")
        membership_set_role(membership=membership, role=form.cleaned_data["role"], actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:members", tenant=request.tenant.external_id)
    messages.success(request, f"{membership.user.email} is now {TenantRole(form.cleaned_data['role']).label}.")
    if membership.pk == request.membership.pk and not tenant_can(form.cleaned_data["role"], Cap.MANAGE_MEMBERS):
        return redirect("tenant:overview", tenant=request.tenant.external_id)
    return redirect("tenant:members", tenant=request.tenant.external_id)


@tenant_view(Cap.MANAGE_MEMBERS)
@require_POST
def member_remove(request, member):
    try:
        membership = _member(request, member)
        membership_remove(membership=membership, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:members", tenant=request.tenant.external_id)
    messages.success(request, f"{membership.user.email} no longer has access to {request.tenant.name}.")
    if membership.pk == request.membership.pk:
        return redirect("home")
    return redirect("tenant:members", tenant=request.tenant.external_id)


def _invitation(request, invitation) -> Invitation:
    found = get_object_or_404(Invitation.objects.for_tenant(request.tenant), uid=invitation)
    if not may_manage_member(request.membership.role, found.role):
        raise errors.PermissionDenied("Only an owner can manage an invitation to become owner.")
    return found


@tenant_view(Cap.MANAGE_MEMBERS)
@require_POST
def invitation_resend_view(request, invitation):
    try:
        found, _token = invitation_resend(
            invitation=_invitation(request, invitation), actor=Actor.from_request(request)
        )
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"A new link was sent to {found.email}; the previous link no longer works.")
    return redirect("tenant:members", tenant=request.tenant.external_id)


@tenant_view(Cap.MANAGE_MEMBERS)
@require_POST
@reauthentication_required
def invitation_approve_view(request, invitation):
    """An owner lets an invitation the vendor asked for go out (the recovery path); its link is sent now."""
    try:
        found, _token = invitation_approve(
            invitation=get_object_or_404(Invitation.objects.for_tenant(request.tenant), uid=invitation),
            actor=Actor.from_request(request),
        )
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Approved: {found.email} was sent a link to join as {found.get_role_display()}.")
    return redirect("tenant:members", tenant=request.tenant.external_id)


@tenant_view(Cap.MANAGE_MEMBERS)
@require_POST
def invitation_revoke_view(request, invitation):
    try:
        found = invitation_revoke(invitation=_invitation(request, invitation), actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"The invitation of {found.email} was withdrawn; its link no longer works.")
    return redirect("tenant:members", tenant=request.tenant.external_id)


# --- jobs --------------------------------------------------------------------------------


def _job(request, job) -> RekeyJob:
    return get_object_or_404(
        RekeyJob.objects.for_tenant(request.tenant).select_related("source_config", "target_config"), uid=job
    )


@tenant_view(Cap.READ)
@require_GET
def jobs(request):
    return render(
        request,
        "tenant_portal/jobs.html",
        {"tenant": request.tenant, "jobs": selectors.tenant_jobs(request.tenant), "nav": "jobs"},
    )


@tenant_view(Cap.READ)
@require_GET
def job_detail(request, job):
    found = _job(request, job)
    return render(
        request,
        "tenant_portal/job_detail.html",
        {
            "tenant": request.tenant,
            "job": found,
            "can_act": can(request, Cap.MANAGE_KEYS) and found.kind == JobKind.REWRAP,
            **key_state(request.tenant),
            "nav": "jobs",
        },
    )


@tenant_view(Cap.READ)
@require_GET
def job_progress(request, job):
    """One job's progress, for htmx to poll while the job is active; says "job-finished" once it is not."""
    found = _job(request, job)
    context = {
        "tenant": request.tenant,
        "job": found,
        "detail": request.GET.get("detail") == "1",
        "can_act": can(request, Cap.MANAGE_KEYS) and found.kind == JobKind.REWRAP,
    }
    response = render(request, "tenant_portal/_job_progress.html", context)
    if is_htmx(request) and not found.is_active:
        response["HX-Trigger"] = "job-finished"
    return response


@tenant_view(Cap.MANAGE_KEYS)
@require_POST
def job_action(request, job, action):
    found = _job(request, job)
    service = {"retry": job_retry, "cancel": job_cancel}.get(action)
    if service is None or found.kind != JobKind.REWRAP:
        raise Http404("No such action.")
    try:
        service(job=found, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, "The job runs again." if action == "retry" else "The job stops after its batch.")
    return redirect("tenant:job", tenant=request.tenant.external_id, job=found.uid)


# --- settings ----------------------------------------------------------------------------


def _settings_page(request, form: SettingsForm | None = None, status: int = 200):
    tenant = request.tenant
    form = form or SettingsForm(
        initial={
            "require_mfa": tenant.require_mfa,
            "key_rotation_days": tenant.key_rotation_days,
            "event_retention_days": tenant.event_retention_days,
            "key_cache_seconds": tenant.key_cache_seconds,
            "retire_idle_days": tenant.retire_idle_days,
            "auto_retire_versions": tenant.auto_retire_versions,
            "detailed_events": tenant.detailed_events,
        }
    )
    versions = selectors.tenant_key_versions(tenant)
    return render(
        request,
        "tenant_portal/settings.html",
        {
            "tenant": tenant,
            "form": form,
            "current_version": next((v for v in versions if v.state == "active"), None),
            "key_cache_seconds": keyring.cache_ttl(tenant),
            "nav": "settings",
        },
        status=status,
    )


@tenant_view(Cap.MANAGE_SETTINGS)
@require_GET
def settings_view(request):
    return _settings_page(request)


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
@reauthentication_required
def settings_save(request):
    form = SettingsForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, form, status=400)
    try:
        tenant_update(tenant=request.tenant, actor=Actor.from_request(request), **form.cleaned_data)
    except errors.KeyCoreError as exc:
        apply_service_errors(form, exc)
        return _settings_page(request, form, status=exc.http_status)
    messages.success(request, "Settings saved.")
    return redirect("tenant:settings", tenant=request.tenant.external_id)


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
@reauthentication_required
def rotate_tenant_key(request):
    try:
        key = tenant_key_create(tenant=request.tenant, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            f"Tenant key v{key.version} was created under your primary key; new data is encrypted with it. "
            "Older versions still decrypt the data written under them.",
        )
    return redirect("tenant:settings", tenant=request.tenant.external_id)
