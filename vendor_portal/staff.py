"""The vendor portal's people and machines: vendor staff (invite, role, deactivate) and REST API keys
(created and rotated with the secret shown once, revoked after a password re-entry)."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_GET

from keycore import errors, selectors
from keycore.access import vendor_view
from keycore.models import ApiKey, Tenant, VendorStaff
from keycore.pagination import keyset_page
from keycore.roles import Cap, VendorRole
from keycore.services import apikeys, tenants
from keycore.services.audit import Actor
from keycore.ui.forms import apply_service_errors
from vendor_portal.forms import (
    ApiKeyForm,
    StaffInviteForm,
    StaffRoleForm,
)
from vendor_portal.views import (
    NEWEST,
    PAGE_SIZE,
    invitation_action,
    pager_links,
    render_page,
    vendor_action,
)

# --- staff ----------------------------------------------------------------------------------------


def _staff_page(request, *, invite_form=None, status=200):
    return render_page(
        request,
        "vendor_portal/staff.html",
        {
            "nav": "staff",
            "staff": selectors.vendor_staff_list(),
            "invitations": selectors.vendor_staff_invitations(),
            "invite_form": invite_form or StaffInviteForm(),
            "role_form": StaffRoleForm(),
        },
        status=status,
    )


@require_GET
@vendor_view(Cap.MANAGE_STAFF)
def staff_list(request):
    return _staff_page(request)


@vendor_action(Cap.MANAGE_STAFF)
def staff_invite(request):
    form = StaffInviteForm(request.POST)
    if form.is_valid():
        try:
            tenants.invitation_create(
                tenant=None,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor=Actor.from_request(request),
            )
        except errors.KeyCoreError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Invited {form.cleaned_data['email']} to the vendor's staff.")
            return redirect("vendor:staff")
    return _staff_page(request, invite_form=form, status=400)


@vendor_action(Cap.MANAGE_STAFF)
def staff_role(request, pk: int):
    staff = get_object_or_404(VendorStaff.objects.select_related("user"), pk=pk)
    form = StaffRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role.")
        return redirect("vendor:staff")
    try:
        tenants.staff_set_role(staff=staff, role=form.cleaned_data["role"], actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        role = VendorRole(form.cleaned_data["role"]).label.lower()
        messages.success(request, f"{staff.user.email} is now {role}.")
    return redirect("vendor:staff")


@vendor_action(Cap.MANAGE_STAFF, reauthenticate=True)
def staff_deactivate(request, pk: int):
    staff = get_object_or_404(VendorStaff.objects.select_related("user"), pk=pk)
    try:
        tenants.staff_deactivate(staff=staff, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"{staff.user.email} can no longer use the vendor portal.")
    return redirect("vendor:staff")


@vendor_action(Cap.MANAGE_STAFF)
def staff_invitation_resend(request, uid):
    return invitation_action(request, None, uid, "resend")


@vendor_action(Cap.MANAGE_STAFF)
def staff_invitation_revoke(request, uid):
    return invitation_action(request, None, uid, "revoke")


# --- API keys ---------------------------------------------------------------------------------------


def _api_keys_page(request, *, form=None, secret=None, secret_key=None, status=200):
    """The keys list; right after a create or rotate, the secret too — in this response only, never stored."""
    page = keyset_page(
        selectors.vendor_api_keys(), scope="api-keys", sort=NEWEST, cursor=request.GET.get("cursor"), size=PAGE_SIZE
    )
    return render_page(
        request,
        "vendor_portal/api_keys.html",
        {
            "nav": "api_keys",
            "page": page,
            "pager": pager_links(request, page),
            "form": form or ApiKeyForm(),
            "secret": secret,
            "secret_key": secret_key,
            "now": timezone.now(),
        },
        status=status,
    )


@require_GET
@vendor_view(Cap.MANAGE_API_KEYS)
def api_key_list(request):
    return _api_keys_page(request)


@vendor_action(Cap.MANAGE_API_KEYS)
def api_key_create(request):
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        wanted = form.cleaned_data["tenants"]
        found = {t.external_id: t for t in Tenant.objects.filter(external_id__in=wanted)}
        unknown = [t for t in wanted if t not in found]
        if unknown:
            form.add_error("tenants", f"No tenant has the external id {', '.join(unknown)}.")
        else:
            try:
                key, secret = apikeys.api_key_create(
                    name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"],
                    tenants=[found[t] for t in wanted] or None,
                    expires_at=form.cleaned_data["expires_on"],
                    actor=Actor.from_request(request),
                )
            except errors.KeyCoreError as exc:
                apply_service_errors(form, exc, field_map={"expires_at": "expires_on"})
            else:
                return _api_keys_page(request, secret=secret, secret_key=key)
    return _api_keys_page(request, form=form, status=400)


@vendor_action(Cap.MANAGE_API_KEYS)
def api_key_rotate(request, uid):
    key = get_object_or_404(ApiKey, uid=uid)
    try:
        new, secret = apikeys.api_key_rotate(key=key, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("vendor:api_keys")
    return _api_keys_page(request, secret=secret, secret_key=new)


@vendor_action(Cap.MANAGE_API_KEYS, reauthenticate=True)
def api_key_revoke(request, uid):
    key = get_object_or_404(ApiKey, uid=uid)
    try:
        apikeys.api_key_revoke(key=key, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Revoked {key.name} ({key.prefix}…): requests with it are refused from now on.")
    return redirect("vendor:api_keys")
