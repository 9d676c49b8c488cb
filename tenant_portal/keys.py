"""KMS configurations in the tenant portal: bring a key, test it, make it primary, demote, disable, revoke.

Tenants act only on their own configurations (owner = tenant); vendor-provided ones
are shown read-only. Credentials are write-only: no page renders them after they
are typed, and a form that fails is shown again with its secret fields empty.
Actions that can cut off or redirect access to the tenant's data ask for the
password again (allauth re-authentication); revoking also asks for the tenant's name.
"""

from __future__ import annotations

import math

from allauth.account.decorators import reauthentication_required
from allauth.core.exceptions import ReauthenticationRequired
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from keycore import errors, selectors
from keycore.access import tenant_view
from keycore.key_rules import REPLACE_SECRETS, kms_config_allowed_actions
from keycore.models import KmsConfig, RekeyJob
from keycore.models.keys import ConfigOwner
from keycore.providers.registry import get_provider_class, provider_choices
from keycore.roles import Cap
from keycore.services.audit import Actor
from keycore.services.keys import (
    kms_config_check,
    kms_config_create,
    kms_config_decrypt_only,
    kms_config_disable,
    kms_config_make_primary,
    kms_config_reenable,
    kms_config_replace_secrets,
    kms_config_revoke,
    kms_config_test_connection,
)
from keycore.ui.forms import KmsConfigForm, SecretsForm, apply_service_errors
from keycore.ui.kms import provider_label, setup_help, where_the_key_lives
from tenant_portal.forms import RevokeForm
from tenant_portal.views import can, is_htmx


def revocation_seconds() -> int:
    """How long a revocation takes to reach every KeyCore process: one poll of the epoch, plus a second in flight."""
    return max(2, math.ceil(settings.KEYCORE_REVOCATION_POLL) + 1)


def _tenant_provider(provider: str):
    """The provider class a tenant may bring, or 404 (unknown names and vendor-only providers alike)."""
    if provider not in dict(provider_choices(for_tenant=True)):
        raise Http404("No such provider.")
    return get_provider_class(provider)


def _config(request, config) -> KmsConfig:
    return get_object_or_404(KmsConfig.objects.for_tenant(request.tenant), uid=config)


def _own_config(request, config) -> KmsConfig:
    """A configuration the tenant may act on: its own. Vendor-provided ones are read-only here."""
    found = _config(request, config)
    if found.owner != ConfigOwner.TENANT:
        raise errors.PermissionDenied(
            f"{found.name} is provided by the vendor; you can see it but not change it. "
            "Bring your own key and make it primary to replace it."
        )
    return found


def _config_form(provider_cls, data=None) -> KmsConfigForm:
    return KmsConfigForm(
        data,
        provider_cls=provider_cls,
        rate_limit_help="Background jobs stay under this rate so they never exhaust your KMS quota. 0: no limit.",
    )


# --- list and add ------------------------------------------------------------------------


@tenant_view(Cap.READ)
@require_GET
def config_list(request):
    configs = selectors.tenant_configs(request.tenant)
    for c in configs:
        c.provider_label = provider_label(c.provider)
    return render(
        request,
        "tenant_portal/keys.html",
        {
            "tenant": request.tenant,
            "configs": configs,
            "can_manage": can(request, Cap.MANAGE_KEYS),
            "nav": "keys",
        },
    )


@tenant_view(Cap.MANAGE_KEYS)
@require_GET
def config_new(request):
    providers = []
    for name, label in provider_choices(for_tenant=True):
        cls = get_provider_class(name)
        summary = next(iter((cls.__doc__ or "").strip().splitlines()), "")
        providers.append({"name": name, "label": label, "summary": summary})
    return render(
        request, "tenant_portal/key_new.html", {"tenant": request.tenant, "providers": providers, "nav": "keys"}
    )


def _form_page(request, provider_cls, form, *, test=None, status=200):
    return render(
        request,
        "tenant_portal/key_form.html",
        {
            "tenant": request.tenant,
            # a class would be called by the template engine: hand it plain values
            "provider": {"name": provider_cls.name, "label": provider_cls.label},
            "form": form,
            "setup_help": setup_help(provider_cls, request.tenant),
            "test": test,
            "nav": "keys",
        },
        status=status,
    )


@tenant_view(Cap.MANAGE_KEYS)
@require_http_methods(["GET", "POST"])
def config_create(request, provider):
    """GET: the provider's form beside its setup help. POST: test again and save (kms_config_create)."""
    provider_cls = _tenant_provider(provider)
    if request.method != "POST":
        return _form_page(request, provider_cls, _config_form(provider_cls))
    form = _config_form(provider_cls, request.POST)
    if not form.is_valid():
        return _form_page(request, provider_cls, form, status=400)
    try:
        config = kms_config_create(
            tenant=request.tenant,
            owner=ConfigOwner.TENANT,
            data=form.config_input(provider),
            actor=Actor.from_request(request),
        )
    except errors.KeyCoreError as exc:
        apply_service_errors(form, exc, field_map=form.field_map)
        return _form_page(request, provider_cls, form, status=exc.http_status if exc.http_status < 500 else 400)
    if config.is_primary:
        messages.success(request, f"{config.name} passed the test and protects your data now.")
    else:
        messages.success(
            request,
            f"{config.name} passed the test and is saved. It protects nothing yet: make it primary to move "
            "your data under it.",
        )
    return redirect("tenant:key", tenant=request.tenant.external_id, config=config.uid)


@tenant_view(Cap.MANAGE_KEYS)
@require_POST
def config_test(request, provider):
    """Test connection before saving: wrap and unwrap a random probe through the KMS; nothing is stored."""
    provider_cls = _tenant_provider(provider)
    form = _config_form(provider_cls, request.POST)
    test: dict = {"ok": False, "detail": "", "code": "", "problems": []}
    if form.is_valid():
        settings_, secrets = form.provider_values()
        try:
            result = kms_config_test_connection(
                tenant=request.tenant, provider=provider, settings_=settings_, secrets=secrets
            )
        except errors.KeyCoreError as exc:
            test.update(detail=exc.detail, code=exc.code)
            apply_service_errors(form, exc, field_map=form.field_map)
        else:
            test.update(ok=result.ok, detail=result.detail, code=result.error_code or "", latency=result.latency_ms)
    else:
        test["detail"] = "The form has errors."
    if not test["ok"]:
        test["problems"] = [
            (form.fields[name].label if name != "__all__" else "", message)
            for name, messages_ in form.errors.items()
            for message in messages_
            if message != test["detail"]
        ]
    if is_htmx(request):
        return render(request, "tenant_portal/_test_result.html", {"test": test})
    return _form_page(request, provider_cls, form, test=test, status=200 if test["ok"] else 400)


# --- one configuration -------------------------------------------------------------------


def _detail_context(request, config: KmsConfig, **extra) -> dict:
    provider_cls = get_provider_class(config.provider)
    own = config.owner == ConfigOwner.TENANT
    manage = own and can(request, Cap.MANAGE_KEYS)
    settings_rows = []
    for setting in provider_cls.fields:
        if setting.secret:
            continue
        value = config.settings.get(setting.name)
        if value in (None, "", {}):
            continue
        if isinstance(value, dict):
            value = "\n".join(f"{k}={v}" for k, v in value.items())
        settings_rows.append((setting, value))
    secret_rows = [
        (setting, setting.name in (config.secret_fields_set or [])) for setting in provider_cls.fields if setting.secret
    ]
    actions = kms_config_allowed_actions(config, Actor.from_request(request))
    manage_secrets = manage and REPLACE_SECRETS in actions
    return {
        "tenant": request.tenant,
        "config": config,
        "provider": {"name": provider_cls.name, "label": provider_cls.label},
        "where": where_the_key_lives(config),
        "own": own,
        "manage": manage,
        "settings_rows": settings_rows,
        "secret_rows": secret_rows if own else [],
        "secrets_form": extra.pop("secrets_form", None)
        or (SecretsForm(provider_cls=provider_cls) if manage_secrets else None),
        "live_wraps": next((c.live_wraps for c in selectors.tenant_configs(request.tenant) if c.pk == config.pk), 0),
        "history": selectors.tenant_history(request.tenant, config=config, limit=50),
        "jobs": list(
            RekeyJob.objects.for_tenant(request.tenant).filter(target_config=config).order_by("-created_at")[:5]
        ),
        # what the services would allow, offered only on the tenant's own keys and to a role that manages keys
        "actions": {action: manage and allowed for action, allowed in actions.can.items()},
        "revocation_seconds": revocation_seconds(),
        "nav": "keys",
        **extra,
    }


@tenant_view(Cap.READ)
@require_GET
def config_detail(request, config):
    found = _config(request, config)
    return render(request, "tenant_portal/key_detail.html", _detail_context(request, found))


_ACTIONS = {
    # name: (service, what the message says happened)
    "make-primary": (kms_config_make_primary, None),
    "decrypt-only": (
        kms_config_decrypt_only,
        "{name} is decrypt-only: it still decrypts data under it, and encrypts nothing new.",
    ),
    "disable": (
        kms_config_disable,
        "{name} is disabled: data under it cannot be read until you re-enable it.",
    ),
    "reenable": (kms_config_reenable, "{name} is enabled again ({state})."),
}


#: actions that change which key opens the tenant's data: a page of their own says what happens before they do
CONFIRMED_ACTIONS = ("make-primary", "reenable")


@tenant_view(Cap.MANAGE_KEYS)
@require_http_methods(["GET", "POST"])
def config_action(request, config, action):
    """GET (make primary, re-enable): what the action does, and its button. POST: do it (after the password)."""
    if action not in _ACTIONS:
        raise Http404("No such action.")
    if request.method == "POST":
        return _config_action(request, config, action)
    if action not in CONFIRMED_ACTIONS:
        return HttpResponseNotAllowed(["POST"])
    try:
        found = _own_config(request, config)
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:key", tenant=request.tenant.external_id, config=config)
    configs = selectors.tenant_configs(request.tenant)
    return render(
        request,
        "tenant_portal/key_confirm.html",
        {
            "tenant": request.tenant,
            "config": found,
            "action": action,
            "primary": next((c for c in configs if c.is_primary), None),
            "live_wraps": next((c.live_wraps for c in configs if c.pk == found.pk), 0),
            "versions": sum(1 for v in selectors.tenant_key_versions(request.tenant) if v.state != "destroyed"),
            "nav": "keys",
        },
    )


@reauthentication_required
def _config_action(request, config, action):
    """Make primary, demote to decrypt-only, disable, re-enable: each one service call, audited there."""
    service, message = _ACTIONS[action]
    try:
        found = _own_config(request, config)
        outcome = service(config=found, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:key", tenant=request.tenant.external_id, config=config)
    if action == "make-primary":
        job = outcome
        messages.success(
            request,
            f"{found.name} is your primary key: new data is encrypted under it from now on. A rekey job moves "
            f"your {job.total} existing tenant key version(s) under it.",
        )
        return redirect("tenant:job", tenant=request.tenant.external_id, job=job.uid)
    messages.success(request, message.format(name=outcome.name, state=outcome.get_state_display().lower()))
    return redirect("tenant:key", tenant=request.tenant.external_id, config=config)


@tenant_view(Cap.MANAGE_KEYS)
@require_POST
def config_check(request, config):
    """Run a health check now: wrap and unwrap a probe through the KMS, and record the result."""
    try:
        found = _own_config(request, config)
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:key", tenant=request.tenant.external_id, config=config)
    try:
        result = kms_config_check(config=found, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:key", tenant=request.tenant.external_id, config=config)
    if result.ok:
        messages.success(request, f"Health check passed in {result.latency_ms:.0f} ms: {result.detail}")
    else:
        messages.error(request, f"Health check failed: {result.detail}")
    return redirect("tenant:key", tenant=request.tenant.external_id, config=config)


@reauthentication_required
def _replace_secrets(request, found: KmsConfig):
    provider_cls = get_provider_class(found.provider)
    form = SecretsForm(request.POST, provider_cls=provider_cls)
    if form.is_valid():
        try:
            kms_config_replace_secrets(config=found, secrets=form.secrets(), actor=Actor.from_request(request))
        except errors.KeyCoreError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"The credentials of {found.name} were tested and replaced.")
            return redirect("tenant:key", tenant=request.tenant.external_id, config=found.uid)
    return render(
        request, "tenant_portal/key_detail.html", _detail_context(request, found, secrets_form=form), status=400
    )


@tenant_view(Cap.MANAGE_KEYS)
@require_POST
def config_secrets(request, config):
    """Replace credentials (after a test). Asks for the password first, without ever parking the
    typed credentials in the session as a suspended request would: they are dropped and typed again."""
    try:
        found = _own_config(request, config)
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:key", tenant=request.tenant.external_id, config=config)
    try:
        return _replace_secrets(request, found)
    except ReauthenticationRequired:
        messages.warning(
            request,
            "Confirm your password first. The credentials you typed were not kept; enter them again afterwards.",
        )
        detail = reverse("tenant:key", kwargs={"tenant": request.tenant.external_id, "config": found.uid})
        return redirect(f"{reverse('account_reauthenticate')}?{urlencode({'next': detail})}")


# --- revoke: the kill switch -------------------------------------------------------------


def _revoke_page(request, found: KmsConfig, form: RevokeForm, status: int = 200):
    live_versions = [v for v in selectors.tenant_key_versions(request.tenant) if v.state != "destroyed"]
    versions = [v for v in live_versions if any(w.kms_config_id == found.pk for w in v.wraps.all())]
    live = len(live_versions)
    return render(
        request,
        "tenant_portal/key_revoke.html",
        {
            "tenant": request.tenant,
            "config": found,
            "form": form,
            "versions": versions,
            "all_data": bool(versions) and len(versions) == live,
            "revocation_seconds": revocation_seconds(),
            "nav": "keys",
        },
        status=status,
    )


@tenant_view(Cap.MANAGE_KEYS)
@require_http_methods(["GET", "POST"])
def config_revoke(request, config):
    """GET: what revoking stops, exactly. POST (typed tenant name + fresh password): revoke."""
    try:
        found = _own_config(request, config)
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:key", tenant=request.tenant.external_id, config=config)
    if request.method == "POST":
        return _revoke(request, found)
    return _revoke_page(request, found, RevokeForm(tenant_name=request.tenant.name))


@reauthentication_required
def _revoke(request, found: KmsConfig):
    form = RevokeForm(request.POST, tenant_name=request.tenant.name)
    if not form.is_valid():
        return _revoke_page(request, found, form, status=400)
    try:
        kms_config_revoke(config=found, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        form.add_error(None, exc.detail)
        return _revoke_page(request, found, form, status=exc.http_status)
    messages.warning(
        request,
        f"{found.name} is revoked. Within {revocation_seconds()} seconds every KeyCore process refuses to encrypt "
        "or decrypt data under it. Only an owner or administrator of your tenant can re-enable it.",
    )
    return redirect("tenant:key", tenant=request.tenant.external_id, config=found.uid)
