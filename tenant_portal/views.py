"""The tenant portal (/tenant/<external_id>/): every view resolves the tenant through the user's membership."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from keycore import selectors
from keycore.access import memberships_of, staff_of, tenant_view


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


@tenant_view("read")
def overview(request):
    tenant = request.tenant
    return render(
        request,
        "tenant_portal/overview.html",
        {"tenant": tenant, **selectors.tenant_overview(tenant), "nav": "overview"},
    )
