"""The vendor portal's vendor keys (/vendor/vendor-keys/): the vendor's own named keys and the tenants they serve.

Thin views over ``keycore.services.vendor_keys``, the move job and the selectors.
Who may do what is ``vendor_view(cap)``'s; retiring a key and moving tenants (which
retires the keys they leave) also need a recent password re-entry.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from keycore import errors, selectors
from keycore.access import vendor_view
from keycore.filtersets import TenantFilterSet
from keycore.models.keys import VendorKeyState
from keycore.providers.registry import get_provider_class, provider_choices
from keycore.roles import Cap
from keycore.services import jobs, keyring, vendor_keys
from keycore.services.audit import Actor
from keycore.ui.forms import CONFIG_NAME, CONFIG_RATE_LIMIT, KmsConfigForm, apply_service_errors
from vendor_portal.forms import ProviderChoiceForm
from vendor_portal.templatetags.vendor_caps import caps_of
from vendor_portal.views import vendor_action

#: the tenants list's filters a move may carry (the same FilterSet decides which tenants they are)
FILTER_NAMES = ("q", "match", "status", "key_ownership", "provider", "health", "vendor_key")


def _page(request, template: str, context: dict, *, status: int = 200):
    context["can"] = caps_of(request.staff.role)
    context["nav"] = "vendor_keys"
    return render(request, template, context, status=status)


def _vendor_key(uid):
    try:
        return selectors.vendor_key_get(uid=uid)
    except errors.NotFound as exc:
        raise Http404(exc.detail) from None


def _provider(request) -> tuple[str, type]:
    names = dict(provider_choices(for_tenant=False))
    name = request.POST.get("provider") or request.GET.get("provider") or "local"
    if name not in names:
        raise Http404("No such provider.")
    return name, get_provider_class(name)


def _rows(queryset=None) -> list[dict]:
    rows = selectors.vendor_key_summaries(queryset)
    for row in rows:
        row["where"] = keyring.describe_config(row["vendor_key"])
    return rows


@require_GET
@vendor_view(Cap.READ)
def vendor_key_list(request):
    rows = _rows()
    return _page(
        request,
        "vendor_portal/vendor_keys.html",
        {"rows": rows, "active": [r["vendor_key"] for r in rows if r["vendor_key"].state == VendorKeyState.ACTIVE]},
    )


@vendor_view(Cap.WRITE)
def vendor_key_create(request):
    """Add a named vendor key in any provider the vendor may use; saved only once a wrap and unwrap succeed."""
    name, cls = _provider(request)
    form = KmsConfigForm(request.POST or None, provider_cls=cls)
    form.fields[CONFIG_NAME].required = True
    form.fields[CONFIG_NAME].help_text = 'What your staff call it: "EU AWS key", "US HSM".'
    if request.method == "POST" and form.is_valid():
        settings_, secrets = form.provider_values()
        try:
            vendor_key = vendor_keys.vendor_key_create(
                name=form.cleaned_data[CONFIG_NAME],
                provider=name,
                settings_=settings_,
                secrets=secrets,
                rate_limit=form.cleaned_data[CONFIG_RATE_LIMIT] or 0,
                make_default=request.POST.get("make_default") == "on",
                actor=Actor.from_request(request),
            )
        except errors.KeyCoreError as exc:
            apply_service_errors(form, exc, field_map=form.field_map)
        else:
            messages.success(request, f"Added {vendor_key.name}. Assign tenants to it, or make it the default.")
            return redirect("vendor:vendor_key", uid=vendor_key.uid)
    return _page(
        request,
        "vendor_portal/vendor_key_create.html",
        {
            "provider": name,
            "provider_label": cls.label,
            "provider_has_fields": bool(cls.fields),
            "provider_form": ProviderChoiceForm(initial={"provider": name}, choices=provider_choices(for_tenant=False)),
            "form": form,
        },
        status=400 if request.method == "POST" else 200,
    )


@vendor_action(Cap.WRITE)
def vendor_key_test(request):
    """htmx: test a vendor key before saving it; the result replaces a live region."""
    name, cls = _provider(request)
    form = KmsConfigForm(request.POST, provider_cls=cls)
    result, problems = None, []
    if form.is_valid():
        settings_, secrets = form.provider_values()
        try:
            result = vendor_keys.vendor_key_test_connection(provider=name, settings_=settings_, secrets=secrets)
        except errors.KeyCoreError as exc:
            problems = [f"{field}: {m}" for field, ms in exc.field_errors.items() for m in ms] or [exc.detail]
    else:
        problems = [
            f"{form.fields[f].label if f in form.fields else 'Form'}: {m}" for f, ms in form.errors.items() for m in ms
        ]
    return render(request, "vendor_portal/partials/key_test_result.html", {"result": result, "problems": problems})


@require_GET
@vendor_view(Cap.READ)
def vendor_key_detail(request, uid):
    vendor_key = _vendor_key(uid)
    row = _rows(selectors.vendor_key_list().filter(pk=vendor_key.pk))[0]
    tenants = selectors.vendor_key_tenants(vendor_key).order_by("name")[:50]
    others = selectors.vendor_key_list().filter(state=VendorKeyState.ACTIVE).exclude(pk=vendor_key.pk)
    return _page(
        request,
        "vendor_portal/vendor_key_detail.html",
        {"row": row, "vendor_key": vendor_key, "tenants": tenants, "others": others},
    )


@vendor_action(Cap.WRITE)
def vendor_key_check(request, uid):
    vendor_key = _vendor_key(uid)
    result = vendor_keys.vendor_key_check(vendor_key=vendor_key)
    (messages.success if result.ok else messages.error)(request, f"{vendor_key.name}: {result.detail}")
    return redirect("vendor:vendor_key", uid=vendor_key.uid)


@vendor_action(Cap.WRITE)
def vendor_key_default(request):
    """The setting: which vendor key new tenants get (or none: a software KEK of their own)."""
    uid = request.POST.get("vendor_key") or ""
    vendor_key = _vendor_key(uid) if uid else None
    try:
        vendor_keys.vendor_key_make_default(vendor_key=vendor_key, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            f"New tenants get {vendor_key.name}." if vendor_key else "New tenants get a software KEK of their own.",
        )
    return redirect("vendor:vendor_keys")


@vendor_action(Cap.WRITE, reauthenticate=True)
def vendor_key_retire(request, uid):
    vendor_key = _vendor_key(uid)
    try:
        vendor_keys.vendor_key_retire(vendor_key=vendor_key, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Retired {vendor_key.name}.")
    return redirect("vendor:vendor_key", uid=vendor_key.uid)


@vendor_action(Cap.WRITE, reauthenticate=True)
def vendor_key_assign(request, uid):
    """Move tenants onto this vendor key: those a tenants-list filter picks, or every tenant of another key."""
    vendor_key = _vendor_key(uid)
    source = None
    if request.POST.get("from_vendor_key"):
        source = _vendor_key(request.POST["from_vendor_key"])
        tenants = selectors.vendor_key_tenants(source)
    else:
        query = QueryDict(mutable=True)
        for name in FILTER_NAMES:
            if request.POST.get(name):
                query[name] = request.POST[name]
        if not query:
            messages.error(request, "Choose the tenants first: filter the tenants list, then assign.")
            return redirect("vendor:tenants")
        filterset = TenantFilterSet(query, queryset=selectors.tenant_list(columns=None))
        if not filterset.is_valid():
            messages.error(request, "That filter is not valid.")
            return redirect(reverse("vendor:tenants") + f"?{query.urlencode()}")
        tenants = filterset.qs
    try:
        job, refused = jobs.job_start_vendor_key_move(
            vendor_key=vendor_key, tenants=tenants, actor=Actor.from_request(request), source=source
        )
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("vendor:vendor_key", uid=vendor_key.uid)
    if refused:
        messages.warning(
            request,
            f"{len(refused)} tenant(s) own their key and were not moved (a vendor key never replaces a tenant's "
            f"own key): {', '.join(t.name for t in refused[:10])}{'…' if len(refused) > 10 else ''}.",
        )
    if job is None:
        messages.info(request, f"Nothing to move: the tenants chosen are already on {vendor_key.name}.")
        return redirect("vendor:vendor_key", uid=vendor_key.uid)
    messages.success(request, f"Moving {job.total} tenant(s) to {vendor_key.name}; this job shows the progress.")
    return redirect("vendor:job", uid=job.uid)
