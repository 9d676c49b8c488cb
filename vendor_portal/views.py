"""The vendor portal (/vendor/): thin views over keycore's selectors and services."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, render

from keycore import selectors
from keycore.access import vendor_view
from keycore.models import Tenant


@vendor_view("read")
def dashboard(request):
    return render(
        request, "vendor_portal/dashboard.html", {"stats": selectors.vendor_dashboard_stats(), "nav": "dashboard"}
    )


@vendor_view("read")
def tenant_list(request):
    tenants = Tenant.objects.order_by("name", "id")[:50]
    return render(request, "vendor_portal/tenant_list.html", {"tenants": tenants, "nav": "tenants"})


@vendor_view("read")
def tenant_detail(request, external_id: str):
    tenant = get_object_or_404(Tenant, external_id=external_id)
    return render(
        request,
        "vendor_portal/tenant_detail.html",
        {"tenant": tenant, **selectors.tenant_overview(tenant), "nav": "tenants"},
    )
