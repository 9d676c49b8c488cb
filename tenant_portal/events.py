"""Security events in the tenant portal: every use of the tenant's keys and every admin change, filtered
and exported; the SIEM destinations they are forwarded to; and verification of the tenant's hash chain.

Everything is looked up through the tenant of the URL (``for_tenant``); another tenant's
destination or verification is a 404. Reading and exporting need ``read`` (auditors too);
configuring forwarding is the owner's (``manage_settings``), and what could silence a SIEM —
re-pointing, disabling, deleting a destination, replacing its secret — asks for the password again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from allauth.account.decorators import reauthentication_required
from django import forms
from django.contrib import messages
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from keycore import errors, selectors
from keycore.access import tenant_view
from keycore.filtersets import AuditEventFilterSet, KeyUseEventFilterSet
from keycore.models import ChainVerification, DeadLetter, EventDestination
from keycore.models.events import DestinationKind
from keycore.pagination import Sort, keyset_page
from keycore.roles import Cap, tenant_can
from keycore.services import event_export, forwarding
from keycore.services import events as event_services
from keycore.services.audit import Actor
from keycore.ui.changes import change_rows
from keycore.ui.forms import WriteOnlyTextarea

PAGE_SIZE = 100
#: the key-use range one page sums when no "From" is given
USAGE_WINDOW = timedelta(hours=24)
FACILITY_CHOICES = [(number, f"{number} · {name}") for number, name in forwarding.SYSLOG_FACILITIES.items()]
#: admin events, newest first, paged by keyset (keycore.pagination)
NEWEST = Sort("-created", "created_at", True)
#: the filters' wording here, where times are typed into the browser's local-time field
LABELS = {"since": "From (UTC)", "until": "Until (UTC)", "action": "Admin action"}
HELP = {"action": "e.g. kms_config."}


@dataclass(frozen=True)
class EventFilters:
    """One query string, two lists: the API's FilterSets for key use and for admin events, bound to
    this tenant's rows. Key-use filters leave admin events out and the action filter leaves key use
    out (docs/events.md); ``export_filter`` says so to the service that applies them."""

    key_use: KeyUseEventFilterSet
    audit: AuditEventFilterSet

    def is_valid(self) -> bool:
        return self.key_use.is_valid() & self.audit.is_valid()  # both, so both forms carry their errors

    def form(self, view: str):
        """The form the page shows: the one of the tab's list (the fields both lists share are in both)."""
        return self.key_use.form if view == "usage" else self.audit.form

    @property
    def errors(self) -> list[str]:
        """Each problem once (the fields both lists share are checked by both)."""
        found = (str(e) for fs in (self.key_use, self.audit) for problems in fs.errors.values() for e in problems)
        return list(dict.fromkeys(found))

    def export_filter(self, kind: str = "all") -> event_export.ExportFilter:
        key_use, audit = self.key_use.form.cleaned_data, self.audit.form.cleaned_data
        return event_export.ExportFilter(
            kind=kind,
            since=key_use.get("since"),
            until=key_use.get("until"),
            operation=key_use.get("operation") or "",
            label=key_use.get("label") or "",
            result=key_use.get("result") or "",
            action=audit.get("action") or "",
            who=key_use.get("who") or "",
            api_key=(key_use.get("api_key") or "").strip(),
        )


def _filters(request) -> EventFilters:
    """Always bound: no parameters at all means every event."""
    tenant = request.tenant
    filters = EventFilters(
        key_use=KeyUseEventFilterSet(request.GET, queryset=selectors.key_use_list(tenant=tenant)),
        audit=AuditEventFilterSet(request.GET, queryset=selectors.audit_event_list(tenant=tenant)),
    )
    for filterset in (filters.key_use, filters.audit):
        for name, field in filterset.form.fields.items():
            field.label = LABELS.get(name, field.label)
            field.help_text = HELP.get(name, field.help_text)
    filters.is_valid()
    return filters


def _query_without(request, *names: str) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


def _can_manage(request) -> bool:
    return tenant_can(request.membership.role, Cap.MANAGE_SETTINGS)


@tenant_view(Cap.READ)
@require_GET
def events(request):
    """Key use (aggregated per minute, with counts) or admin events, filtered; chain and SIEM at a glance."""
    tenant = request.tenant
    view = "admin" if request.GET.get("view") == "admin" else "usage"
    filters = _filters(request)
    context = {
        "tenant": tenant,
        "nav": "events",
        "can_manage": _can_manage(request),
        "view": view,
        "form": filters.form(view),
        "filtered": bool(request.GET.keys() - {"view", "before", "cursor"}),
        "chain": selectors.event_chain_state(tenant),
        "destinations": selectors.tenant_destinations(tenant),
        "query": _query_without(request, "before", "cursor", "view"),
        # switching tabs keeps the filters both kinds share; operation, label, result and action belong to one
        "tab_query": _query_without(request, "before", "cursor", "view", "operation", "label", "result", "action"),
    }
    if not filters.is_valid():
        return render(request, "tenant_portal/events.html", context, status=400)
    chosen = filters.export_filter()
    audit_qs, keyuse_qs = event_export.export_querysets(tenant, chosen)
    if view == "usage":
        # key use is summed per minute, so it pages by whole minutes ("before"), not by row
        before = _before(request.GET.get("before"))
        rows, totals, next_before, window = [], [], None, None
        if keyuse_qs is not None:
            if not chosen.since:
                # summing needs every row of the range: without a "From", a page covers one window
                # (rows of a busy tenant's whole retention period are never grouped at once)
                end = before or chosen.until or timezone.now()
                window = (_earlier(end, USAGE_WINDOW), end)
                windowed = keyuse_qs.filter(minute__gte=window[0], minute__lt=end)
            else:
                windowed = keyuse_qs
            rows, next_before = selectors.key_use_grouped(windowed, before=before, limit=PAGE_SIZE)
            totals = selectors.key_use_totals(windowed.filter(minute__lt=before) if before else windowed)
            if next_before is None and window and keyuse_qs.filter(minute__lt=window[0]).exists():
                next_before = window[0]  # older use exists: the next page is the window before this one
        context.update(
            rows=rows,
            totals=totals,
            window=window,
            excluded=keyuse_qs is None,
            next_before=next_before.isoformat() if next_before else "",
            paged=before is not None,
        )
    else:
        page = None
        if audit_qs is not None:
            page = keyset_page(
                audit_qs, scope="tenant-events-admin", sort=NEWEST, cursor=request.GET.get("cursor"), size=PAGE_SIZE
            )
            if page.cursor_rejected:
                messages.warning(request, "That page link is no longer valid; showing the first page.")
        context.update(
            audit=[(e, change_rows(e)) for e in (page.rows if page else [])],
            excluded=audit_qs is None,
            next_cursor=page.next_cursor if page else "",
            paged=bool(page and page.previous_cursor),
        )
    return render(request, "tenant_portal/events.html", context)


def _before(value: str | None) -> datetime | None:
    """The minute a key-use page ends before; anything that is not a usable time means the first page."""
    if not value:
        return None
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            return None
        return parsed.astimezone(UTC) if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # well-formed but impossible (month 13), or out of range in UTC
        return None


def _earlier(moment: datetime, span: timedelta) -> datetime:
    try:
        return moment - span
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv", event_export.export_csv),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl", event_export.export_jsonl),
}


@tenant_view(Cap.READ)
@require_GET
def events_export(request):
    """Stream the filtered events as CSV or JSON Lines, oldest first (chain order); the export is audited."""
    fmt = request.GET.get("format", "csv")
    if fmt not in EXPORT_FORMATS:
        raise Http404("Unknown export format.")
    filters = _filters(request)
    if not filters.is_valid():
        messages.error(request, "The filters are not valid: " + " ".join(filters.errors))
        return redirect(f"{request.path.rsplit('export/', 1)[0]}?{_query_without(request, 'format')}")
    kind = request.GET.get("kind", "all")
    if kind not in ("all", "admin", "key_use"):
        kind = "all"
    chosen = filters.export_filter(kind)
    event_export.events_export_record(tenant=request.tenant, actor=Actor.from_request(request), fmt=fmt, f=chosen)
    content_type, extension, render_rows = EXPORT_FORMATS[fmt]
    documents = event_export.export_with_head(request.tenant, chosen)
    response = StreamingHttpResponse(render_rows(documents), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = (
        f'attachment; filename="keycore-events-{request.tenant.external_id}-{stamp}.{extension}"'
    )
    response["Cache-Control"] = "no-store"
    return response


# --- chain verification -------------------------------------------------------------------------------


@tenant_view(Cap.READ)
@require_http_methods(["GET", "POST"])
def events_verify(request):
    """Verify the tenant's chain (a Celery task walks it) and show where it stands."""
    tenant = request.tenant
    kept_text = ""
    if request.method == "POST":
        kept_text = (request.POST.get("known_head") or "").strip()
        try:
            known_head = event_services.anchor_parse(kept_text) if kept_text else None
        except errors.KeyCoreError as exc:
            messages.error(request, exc.detail)
        else:
            verification = event_services.chain_verification_request(
                tenant=tenant, actor=Actor.from_request(request), known_head=known_head
            )
            messages.info(request, "Verification started: every event of your chain is checked, oldest first.")
            return redirect("tenant:events_verification", tenant=tenant.external_id, verification=verification.uid)
    return render(
        request,
        "tenant_portal/events_verify.html",
        {"tenant": tenant, "nav": "events", "kept_text": kept_text, **_chain_context(tenant)},
        status=400 if kept_text else 200,
    )


def _chain_context(tenant) -> dict:
    """Where the chain stands, and its signed head as a document to keep (issued now)."""
    state = selectors.event_chain_state(tenant)
    anchor = event_services.chain_anchor(state["key"])
    state["anchor"] = json.dumps(anchor, separators=(",", ":")) if anchor else ""
    return state


@tenant_view(Cap.READ)
@require_GET
def events_verification(request, verification):
    tenant = request.tenant
    found = ChainVerification.objects.for_tenant(tenant).filter(uid=verification).first()
    if found is None:
        raise Http404("No such verification.")
    context = {"tenant": tenant, "nav": "events", "verification": found, **_chain_context(tenant)}
    if request.headers.get("HX-Request") == "true":
        response = render(request, "tenant_portal/events_verification.html", context)
        if found.is_done:
            response["HX-Refresh"] = "true"  # the run ended: reload once, so the list below shows it too
        return response
    return render(request, "tenant_portal/events_verify.html", context)


# --- SIEM destinations ------------------------------------------------------------------------------


class DestinationForm(forms.Form):
    """Both kinds in one form; the service validates what each kind needs and names the field."""

    kind = forms.ChoiceField(
        label="Kind", choices=DestinationKind.choices, widget=forms.RadioSelect, initial=DestinationKind.WEBHOOK
    )
    name = forms.CharField(label="Name", max_length=120, required=False)
    url = forms.CharField(
        label="Webhook URL",
        required=False,
        max_length=500,
        help_text="HTTPS. KeyCore POSTs JSON batches of events, signed with HMAC-SHA256 (see the signature notes).",
    )
    secret = forms.CharField(
        label="Signing secret",
        required=False,
        max_length=200,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to let KeyCore generate one; it is shown once. Write-only: never shown again.",
    )
    host = forms.CharField(label="Syslog host", required=False, max_length=253)
    port = forms.IntegerField(label="Port", required=False, min_value=1, max_value=65535, help_text="514 or 6514")
    tls = forms.BooleanField(label="Use TLS (RFC 5425)", required=False)
    ca_bundle = forms.CharField(
        label="CA bundle (PEM)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="The certificates that sign your syslog server's certificate; empty: the system's trusted CAs.",
    )
    client_cert = forms.CharField(
        label="Client certificate (PEM)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For a syslog server that requires one (TLS): the certificate KeyCore presents, and its chain.",
    )
    client_key = forms.CharField(
        label="Client key (PEM)",
        required=False,
        strip=True,
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}),
        help_text="The certificate's unencrypted private key. Write-only: stored sealed, never shown again; "
        "leave empty to keep the one stored.",
    )
    server_name = forms.CharField(label="TLS server name", required=False, max_length=253)
    hostname = forms.CharField(
        label="HOSTNAME", required=False, max_length=255, help_text="Sent in each message; empty: this server's name."
    )
    facility = forms.TypedChoiceField(
        label="Facility", choices=FACILITY_CHOICES, coerce=int, required=False, initial=13
    )
    app_name = forms.CharField(label="APP-NAME", required=False, max_length=48, initial="keycore")
    from_beginning = forms.BooleanField(
        label="Also send the events already kept (oldest first)", required=False, help_text="Else: from now on."
    )

    def settings_(self) -> dict:
        data = self.cleaned_data
        if data["kind"] == DestinationKind.WEBHOOK:
            return {"url": data.get("url", "")}
        return {
            "host": data.get("host", ""),
            "port": data.get("port"),
            "tls": data.get("tls", False),
            "ca_bundle": data.get("ca_bundle", ""),
            "client_cert": data.get("client_cert", ""),
            "server_name": data.get("server_name", ""),
            "hostname": data.get("hostname", ""),
            "facility": data.get("facility") or 13,
            "app_name": data.get("app_name") or "keycore",
        }


class DestinationEditForm(DestinationForm):
    """The same fields, without the kind (fixed) or the secret (replaced on its own)."""

    def __init__(self, *args, destination: EventDestination, **kwargs) -> None:
        initial = {"kind": destination.kind, "name": destination.name, **destination.settings}
        super().__init__(*args, initial=initial, **kwargs)
        self.fields["kind"].required = False
        del self.fields["secret"]
        del self.fields["from_beginning"]
        self.destination = destination

    def clean_kind(self):
        return self.destination.kind


def _apply(form: forms.Form, exc: errors.KeyCoreError) -> None:
    placed = False
    for name, problems in exc.field_errors.items():
        for problem in problems:
            form.add_error(name if name in form.fields else None, problem)
            placed = True
    if not placed:
        form.add_error(None, exc.detail)


def _destination(request, destination) -> EventDestination:
    found = EventDestination.objects.for_tenant(request.tenant).filter(uid=destination).first()
    if found is None:
        raise Http404("No such destination.")
    return found


def _list_context(request, form) -> dict:
    return {
        "tenant": request.tenant,
        "nav": "events",
        "can_manage": _can_manage(request),
        "destinations": selectors.tenant_destinations(request.tenant),
        "form": form,
    }


@tenant_view(Cap.READ)
@require_GET
def destinations(request):
    return render(request, "tenant_portal/events_destinations.html", _list_context(request, DestinationForm()))


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
def destination_create(request):
    form = DestinationForm(request.POST)
    if form.is_valid():
        try:
            destination, secret = forwarding.destination_create(
                tenant=request.tenant,
                kind=form.cleaned_data["kind"],
                name=form.cleaned_data.get("name", ""),
                settings_=form.settings_(),
                actor=Actor.from_request(request),
                secret=form.cleaned_data.get("secret") or None,
                client_key=form.cleaned_data.get("client_key") or None,
                from_beginning=form.cleaned_data.get("from_beginning", False),
            )
        except errors.KeyCoreError as exc:
            _apply(form, exc)
        else:
            start = "the oldest kept event" if form.cleaned_data.get("from_beginning") else "the next event"
            messages.success(request, f"{destination.name} added: forwarding starts with {start}.")
            if secret:
                return _secret_page(request, destination, secret)
            return redirect("tenant:destination", tenant=request.tenant.external_id, destination=destination.uid)
    return render(request, "tenant_portal/events_destinations.html", _list_context(request, form), status=400)


def _secret_page(request, destination: EventDestination, secret: str):
    response = render(
        request,
        "tenant_portal/events_secret.html",
        {"tenant": request.tenant, "nav": "events", "destination": destination, "secret": secret},
    )
    response["Cache-Control"] = "no-store"
    return response


def _detail_context(request, destination: EventDestination, **extra) -> dict:
    destination = next(d for d in selectors.tenant_destinations(request.tenant) if d.pk == destination.pk)
    return {
        "tenant": request.tenant,
        "nav": "events",
        "can_manage": _can_manage(request),
        "destination": destination,
        "deliveries": selectors.destination_deliveries(destination),
        "dead_letters": selectors.destination_dead_letters(destination),
        "edit_form": extra.pop("edit_form", None) or DestinationEditForm(destination=destination),
        **extra,
    }


@tenant_view(Cap.READ)
@require_GET
def destination_detail(request, destination):
    found = _destination(request, destination)
    return render(request, "tenant_portal/events_destination.html", _detail_context(request, found))


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
@reauthentication_required
def destination_edit(request, destination):
    found = _destination(request, destination)
    form = DestinationEditForm(request.POST, destination=found)
    if form.is_valid():
        try:
            forwarding.destination_update(
                destination=found,
                actor=Actor.from_request(request),
                name=form.cleaned_data.get("name", ""),
                settings_=form.settings_(),
                client_key=form.cleaned_data.get("client_key") or None,
            )
        except errors.KeyCoreError as exc:
            _apply(form, exc)
        else:
            messages.success(request, "Saved.")
            return redirect("tenant:destination", tenant=request.tenant.external_id, destination=found.uid)
    return render(
        request, "tenant_portal/events_destination.html", _detail_context(request, found, edit_form=form), status=400
    )


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
def destination_test(request, destination):
    found = _destination(request, destination)
    result = forwarding.destination_test(destination=found, actor=Actor.from_request(request))
    context = {"tenant": request.tenant, "destination": found, "result": result}
    if request.headers.get("HX-Request") == "true":
        return render(request, "tenant_portal/events_test_result.html", context)
    if result.ok:
        messages.success(request, f"Test event accepted: {result.detail} in {result.duration_ms:.0f} ms.")
    else:
        messages.error(request, f"Test event not delivered: {result.detail}")
    return redirect("tenant:destination", tenant=request.tenant.external_id, destination=found.uid)


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
def destination_enable(request, destination):
    found = _destination(request, destination)
    try:
        forwarding.destination_set_enabled(destination=found, enabled=True, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"{found.name} is enabled: waiting events follow in order.")
    return redirect("tenant:destination", tenant=request.tenant.external_id, destination=found.uid)


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
@reauthentication_required
def destination_disable(request, destination):
    found = _destination(request, destination)
    try:
        forwarding.destination_set_enabled(destination=found, enabled=False, actor=Actor.from_request(request))
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.warning(request, f"{found.name} is disabled: events are kept and sent when you enable it again.")
    return redirect("tenant:destination", tenant=request.tenant.external_id, destination=found.uid)


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
@reauthentication_required
def destination_secret(request, destination):
    found = _destination(request, destination)
    chosen = (request.POST.get("secret") or "").strip() or None
    try:
        secret = forwarding.destination_rotate_secret(
            destination=found, actor=Actor.from_request(request), secret=chosen
        )
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
        return redirect("tenant:destination", tenant=request.tenant.external_id, destination=found.uid)
    if secret:
        return _secret_page(request, found, secret)
    messages.success(request, "The signing secret was replaced; requests are signed with it from now on.")
    return redirect("tenant:destination", tenant=request.tenant.external_id, destination=found.uid)


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
@reauthentication_required
def destination_delete(request, destination):
    found = _destination(request, destination)
    forwarding.destination_delete(destination=found, actor=Actor.from_request(request))
    messages.warning(request, f"{found.name} was deleted; nothing more is forwarded to it.")
    return redirect("tenant:destinations", tenant=request.tenant.external_id)


@tenant_view(Cap.MANAGE_SETTINGS)
@require_POST
def destination_replay(request, destination):
    found = _destination(request, destination)
    ids = None
    if request.POST.get("which") != "all":
        chosen = [int(v) for v in request.POST.getlist("letter") if v.isdigit()]
        ids = list(
            DeadLetter.objects.for_tenant(request.tenant)
            .filter(destination=found, pk__in=chosen)
            .values_list("pk", flat=True)
        )
        if not ids:
            messages.error(request, "Choose the dead letters to replay.")
            return redirect("tenant:destination", tenant=request.tenant.external_id, destination=found.uid)
    try:
        count = forwarding.dead_letters_replay(destination=found, actor=Actor.from_request(request), ids=ids)
    except errors.KeyCoreError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"{count} dead letter(s) queued: they are sent again in chain order.")
    return redirect("tenant:destination", tenant=request.tenant.external_id, destination=found.uid)
