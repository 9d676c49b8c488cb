"""Chain verification in the vendor portal: the vendor-wide chain and any tenant's, on demand.

(The vendor's audit-trail list is vendor_portal/views.py's ``audit_list``.) Verifying reads
every event of a chain, so it runs as a Celery task; the page follows it with htmx.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from keycore import errors, selectors
from keycore.access import vendor_view
from keycore.models import ChainVerification, EventChain
from keycore.roles import Cap, vendor_can
from keycore.services.audit import Actor
from keycore.services.events import chain_verification_request


def _context(request, **extra) -> dict:
    recent = list(ChainVerification.objects.select_related("tenant").order_by("-created_at", "-id")[:25])
    broken = list(
        ChainVerification.objects.select_related("tenant").filter(state="broken").order_by("-created_at", "-id")[:10]
    )
    role = request.staff.role
    return {
        # what the sidebar shows (the vendor portal's other pages pass the same)
        "can": {cap: vendor_can(role, cap) for cap in (Cap.WRITE, Cap.MANAGE_STAFF, Cap.MANAGE_API_KEYS)},
        "nav": "event_chains",
        "vendor_chain": selectors.event_chain_state(None),
        "chains": EventChain.objects.count(),
        "recent": recent,
        "broken": broken,
        **extra,
    }


@vendor_view(Cap.READ)
@require_http_methods(["GET", "POST"])
def event_chains(request):
    """Start a verification of the vendor chain or of one tenant's chain (by external id)."""
    if request.method == "POST":
        which = (request.POST.get("tenant") or "").strip()
        tenant = None
        if which:
            try:
                tenant = selectors.tenant_by_external_id(which)
            except errors.TenantNotFound as exc:
                messages.error(request, exc.detail)
                return render(request, "vendor_portal/events_chains.html", _context(request, asked=which), status=400)
        verification = chain_verification_request(tenant=tenant, actor=Actor.from_request(request))
        return redirect("vendor:event_chain_verification", verification=verification.uid)
    return render(request, "vendor_portal/events_chains.html", _context(request, asked=request.GET.get("tenant", "")))


@vendor_view(Cap.READ)
@require_GET
def event_chain_verification(request, verification):
    found = ChainVerification.objects.select_related("tenant").filter(uid=verification).first()
    if found is None:
        raise Http404("No such verification.")
    if request.headers.get("HX-Request") == "true":
        response = render(request, "vendor_portal/events_verification.html", {"verification": found})
        if found.is_done:
            response["HX-Refresh"] = "true"  # the run ended: reload once, so the lists show it too
        return response
    return render(request, "vendor_portal/events_chains.html", _context(request, verification=found))
