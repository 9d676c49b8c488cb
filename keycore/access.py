"""The one place both portals ask who may see and do what.

``vendor_view(cap)`` guards every ``/vendor/`` view, ``tenant_view(cap)`` every
``/tenant/<external_id>/`` view. They sign anonymous users in, refuse the other
audience, require MFA where a role needs it, and resolve the tenant from the URL
*through the user's own membership*, so another tenant's id is a 404, never a
403 that would confirm it exists.
"""

from __future__ import annotations

from functools import wraps

from allauth.mfa.utils import is_mfa_enabled
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import redirect, render

from keycore.models import Membership, VendorStaff
from keycore.models.tenants import TenantStatus
from keycore.roles import (
    TENANT_ROLES_REQUIRING_MFA,
    VENDOR_ROLES_REQUIRING_MFA,
    tenant_can,
    vendor_can,
)


def staff_of(user) -> VendorStaff | None:
    if not user.is_authenticated:
        return None
    staff = getattr(user, "_keycore_staff", False)
    if staff is False:
        staff = VendorStaff.objects.filter(user=user, is_active=True).first()
        user._keycore_staff = staff
    return staff


def memberships_of(user):
    return (
        Membership.objects.filter(user=user)
        .exclude(tenant__status=TenantStatus.OFFBOARDED)
        .select_related("tenant")
        .order_by("tenant__name")
    )


def _mfa_gate(request, needs_mfa: bool, why: str):
    """A passkey or an authenticator app satisfies it (recovery codes only come with one of them)."""
    if needs_mfa and not is_mfa_enabled(request.user):
        messages.warning(request, f"{why} Add a passkey or an authenticator app to continue.")
        return redirect("mfa_index")
    return None


def _denied(request, message: str, status: int = 403):
    return render(request, "403.html", {"message": message}, status=status)


def vendor_view(cap: str = "read"):
    """Guard a vendor-portal view: active vendor staff whose role has ``cap``."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            staff = staff_of(request.user)
            if staff is None:
                return _denied(request, "The vendor portal is for the vendor's staff.")
            gate = _mfa_gate(
                request,
                settings.KEYCORE_REQUIRE_ADMIN_MFA and staff.role in VENDOR_ROLES_REQUIRING_MFA,
                f"Vendor staff who can change anything ({staff.get_role_display().lower()}s too) must use "
                "two-factor authentication.",
            )
            if gate is not None:
                return gate
            if not vendor_can(staff.role, cap):
                return _denied(request, f"Your role ({staff.get_role_display()}) cannot do this.")
            request.staff = staff
            return view(request, *args, **kwargs)

        wrapper.keycore_access = ("vendor", cap)
        return wrapper

    return decorator


def tenant_view(cap: str = "read"):
    """Guard a tenant-portal view under ``/tenant/<tenant>/``: a member of that tenant whose role has ``cap``."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, tenant: str, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if staff_of(request.user) is not None:
                return _denied(request, "Vendor staff accounts cannot use the tenant portal.")
            membership = memberships_of(request.user).filter(tenant__external_id=tenant).first()
            if membership is None:
                raise Http404("No such tenant.")
            needs = (
                settings.KEYCORE_REQUIRE_ADMIN_MFA and membership.role in TENANT_ROLES_REQUIRING_MFA
            ) or membership.tenant.require_mfa
            gate = _mfa_gate(request, needs, f"{membership.tenant.name} requires two-factor authentication.")
            if gate is not None:
                return gate
            if not tenant_can(membership.role, cap):
                return _denied(request, f"Your role ({membership.get_role_display()}) cannot do this.")
            request.membership = membership
            request.tenant = membership.tenant
            return view(request, *args, **kwargs)

        wrapper.keycore_access = ("tenant", cap)
        return wrapper

    return decorator
