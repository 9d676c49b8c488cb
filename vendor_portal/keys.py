"""The vendor portal's pages for vendor-provided keys: add one (tested first), make it primary, demote, retire.

What each configuration allows is keycore/key_rules.py's; the tenant's own
configurations are not the vendor's to touch and are not found here (404).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from keycore import errors
from keycore.access import vendor_view
from keycore.models import KmsConfig, Tenant
from keycore.models.keys import ConfigOwner
from keycore.providers.registry import get_provider_class, provider_choices
from keycore.roles import Cap
from keycore.services import keys
from keycore.services.audit import Actor
from keycore.ui.forms import KmsConfigForm, apply_service_errors
from keycore.ui.kms import setup_help
from vendor_portal.forms import (
    ProviderChoiceForm,
)
from vendor_portal.views import (
    render_page,
    tenant_or_404,
    vendor_action,
)

# --- vendor-provided keys ---------------------------------------------------------------------------


def _vendor_config(tenant: Tenant, uid) -> KmsConfig:
    """One of the tenant's vendor-owned configurations; a tenant-owned one is not the vendor's to touch (404)."""
    return get_object_or_404(KmsConfig.objects.for_tenant(tenant).filter(owner=ConfigOwner.VENDOR), uid=uid)


def _provider(request) -> tuple[str, type]:
    names = dict(provider_choices(for_tenant=False))
    name = request.POST.get("provider") or request.GET.get("provider") or "local"
    if name not in names:
        raise Http404("No such provider.")
    return name, get_provider_class(name)


@vendor_view(Cap.WRITE)
def key_create(request, external_id: str):
    """Add a vendor-provided key: KeyCore's own (local) or in the vendor's own KMS, from the provider's fields."""
    tenant = tenant_or_404(external_id)
    name, cls = _provider(request)
    form = KmsConfigForm(request.POST or None, provider_cls=cls)
    if request.method == "POST" and form.is_valid():
        try:
            config = keys.kms_config_create(
                tenant=tenant, owner=ConfigOwner.VENDOR, data=form.config_input(name), actor=Actor.from_request(request)
            )
        except errors.KeyCoreError as exc:
            apply_service_errors(form, exc, field_map=form.field_map)
        else:
            messages.success(request, f"Added {config.name}. Make it primary to move {tenant.name}'s keys under it.")
            return redirect(reverse("vendor:tenant", args=[tenant.external_id]) + "#keys")
    return render_page(
        request,
        "vendor_portal/key_create.html",
        {
            "nav": "tenants",
            "tenant": tenant,
            "provider": name,
            # not the class itself: templates call callables, and a provider class is one
            "provider_label": cls.label,
            "provider_has_fields": bool(cls.fields),
            "provider_form": ProviderChoiceForm(initial={"provider": name}, choices=provider_choices(for_tenant=False)),
            "form": form,
            "setup_help": setup_help(cls, tenant),
        },
        status=400 if request.method == "POST" else 200,
    )


@vendor_action(Cap.WRITE)
def key_test(request, external_id: str):
    """htmx: test a configuration before saving it (wrap and unwrap a probe); the result replaces a live region."""
    tenant = tenant_or_404(external_id)
    name, cls = _provider(request)
    form = KmsConfigForm(request.POST, provider_cls=cls)
    result = None
    problems: list[str] = []
    if form.is_valid():
        settings_, secrets = form.provider_values()
        try:
            result = keys.kms_config_test_connection(
                tenant=tenant, provider=name, settings_=settings_, secrets=secrets, owner=ConfigOwner.VENDOR
            )
        except errors.KeyCoreError as exc:
            problems = [f"{field}: {m}" for field, ms in exc.field_errors.items() for m in ms] or [exc.detail]
    else:
        problems = [
            f"{form.fields[f].label if f in form.fields else 'Form'}: {m}" for f, ms in form.errors.items() for m in ms
        ]
    return render(request, "vendor_portal/partials/key_test_result.html", {"result": result, "problems": problems})


@vendor_action(Cap.WRITE)
def key_make_primary(request, external_id: str, uid):
    tenant = tenant_or_404(external_id)
    config = _vendor_config(tenant, uid)
    try:
        job = keys.kms_config_make_primary(config=config, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect(reverse("vendor:tenant", args=[tenant.external_id]) + "#keys")
    messages.success(
        request, f"{config.name} is now {tenant.name}'s primary key; this job moves its tenant keys under it."
    )
    return redirect("vendor:job", uid=job.uid)


@vendor_action(Cap.WRITE)
def key_decrypt_only(request, external_id: str, uid):
    tenant = tenant_or_404(external_id)
    config = _vendor_config(tenant, uid)
    try:
        keys.kms_config_decrypt_only(config=config, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request, f"{config.name} is decrypt-only: it still opens old tenant keys, never wraps new ones."
        )
    return redirect(reverse("vendor:tenant", args=[tenant.external_id]) + "#keys")


@vendor_action(Cap.WRITE, reauthenticate=True)
def key_retire(request, external_id: str, uid):
    tenant = tenant_or_404(external_id)
    config = _vendor_config(tenant, uid)
    try:
        keys.kms_config_retire(config=config, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Retired {config.name}: no tenant key is wrapped under it any more.")
    return redirect(reverse("vendor:tenant", args=[tenant.external_id]) + "#keys")
