"""Views shared by both audiences: the landing redirect, health probes, invitations, error pages."""

from __future__ import annotations

import hmac
import json
import sys

from django.conf import settings
from django.contrib import messages
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template import loader
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from keycore import errors
from keycore import metrics as process_metrics
from keycore.access import memberships_of, staff_of
from keycore.accounts import INVITATION_SESSION_KEY
from keycore.api.problems import PROBLEM_CONTENT_TYPE, RETRY_AFTER_SECONDS, problem_body
from keycore.availability import unavailable
from keycore.models import User
from keycore.models.tenants import InvitationAudience
from keycore.sealing import root_keyring
from keycore.services.audit import Actor
from keycore.services.tenants import invitation_accept as accept_invitation
from keycore.services.tenants import invitation_lookup
from keycore.unseal import root_key_sources


@never_cache
def home(request):
    """Send each person to the portal their account belongs to."""
    if not request.user.is_authenticated:
        return redirect("account_login")
    if staff_of(request.user) is not None:
        return redirect("vendor:dashboard")
    memberships = list(memberships_of(request.user)[:2])
    if len(memberships) == 1:
        return redirect("tenant:overview", tenant=memberships[0].tenant.external_id)
    if memberships:
        return redirect("tenant:switch")
    return render(request, "no_access.html", status=200)


@require_GET
@never_cache
def healthz(request):
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request):
    """Readiness: the root key is unwrapped, the database and the Celery broker are reachable.

    ``root_key`` says what seals the current root key ("environment" or the KMS provider's name), and
    whether this process holds it; never which KMS key, nor anything of the key itself.
    """
    checks: dict[str, str] = {}
    ok = True
    root_key: dict[str, object] = {"seal": "unknown", "unsealed": False}
    try:
        sources = root_key_sources()
        root_key["seal"] = sources[0].seal
        root_key["root_key_id"] = sources[0].root_key_id
        root_keyring()  # unwrapped once per process; cached afterwards
        root_key["unsealed"] = True
        checks["root_key"] = "ok"
    except errors.KeyCoreError as exc:
        ok = False
        checks["root_key"] = f"error: {exc.code}"
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        ok = False
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        from config.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        ok = False
        checks["broker"] = f"error: {exc.__class__.__name__}"
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks, "root_key": root_key}, status=200 if ok else 503
    )


@require_GET
@never_cache
def metrics(request):
    """Prometheus metrics, for whoever holds ``KEYCORE_METRICS_TOKEN`` (a 404 when none is configured).

    No label holds a tenant, a key or a secret (keycore/metrics.py), but fleet sizes and error rates are
    still the operator's business: never public by default.
    """
    token = settings.KEYCORE_METRICS_TOKEN
    if not token:
        raise Http404("Metrics are off: set KEYCORE_METRICS_TOKEN.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(process_metrics.exposition(), content_type=process_metrics.CONTENT_TYPE_LATEST)


@require_http_methods(["GET", "POST"])
@never_cache
def invitation_accept(request, token: str):
    """Land from an invitation email: explain it, sign up or sign in, then accept it (POST)."""
    try:
        invitation = invitation_lookup(token)
    except errors.KeyCoreError as exc:
        request.session.pop(INVITATION_SESSION_KEY, None)
        return render(
            request, "invitation_invalid.html", {"message": exc.detail}, status=410 if exc.http_status == 409 else 404
        )
    request.session[INVITATION_SESSION_KEY] = token
    context = {"invitation": invitation, "token": token}
    if not request.user.is_authenticated:
        context["has_account"] = User.objects.filter(email__iexact=invitation.email).exists()
        return render(request, "invitation_accept.html", context)
    if request.method == "POST":
        try:
            accept_invitation(token=token, user=request.user, actor=Actor.from_request(request))
        except errors.KeyCoreError as exc:
            context["error"] = exc.detail
            return render(request, "invitation_accept.html", context, status=exc.http_status)
        request.session.pop(INVITATION_SESSION_KEY, None)
        if invitation.audience == InvitationAudience.VENDOR:
            messages.success(request, "Welcome to the vendor portal.")
            return redirect("vendor:dashboard")
        messages.success(request, f"You are now a member of {invitation.tenant.name}.")
        return redirect("tenant:overview", tenant=invitation.tenant.external_id)
    return render(request, "invitation_accept.html", context)


def _api_problem(status: int, code: str, title: str, detail: str) -> HttpResponse:
    return HttpResponse(
        json.dumps(problem_body(code, title, status, detail)), status=status, content_type=PROBLEM_CONTENT_TYPE
    )


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    """A request Django refused before any view (a NUL in the path, too many fields, a bad Host)."""
    detail = "The request is malformed."
    if _is_api(request):
        return _api_problem(400, "malformed-request", "Malformed request", detail)
    return render(request, "400.html", {"message": detail}, status=400)


def not_found(request, exception=None):
    if _is_api(request):
        return _api_problem(404, "not-found", "Not found", "No such endpoint or resource.")
    return render(request, "404.html", status=404)


def forbidden(request, exception=None):
    if _is_api(request):
        return _api_problem(403, "forbidden", "Not allowed", "Not allowed.")
    return render(request, "403.html", {"message": str(exception or "")}, status=403)


def server_error(request):
    """Django's last resort for an exception nothing else handled (called inside its ``except``).

    KeyCore's database or broker being down is a 503 with ``Retry-After``, not a 500;
    under ``/api/`` the answer is a problem document, never HTML. The pages are
    rendered without the request's context processors: they may need the database.
    """
    down = unavailable(sys.exception())
    error = down or errors.KeyCoreError("Something went wrong on our side; it has been logged.")
    status = 503 if down else 500
    if request.path.startswith("/api/"):
        code, title = (down.code, down.title) if down else ("internal-error", "Internal error")
        response = HttpResponse(
            json.dumps(problem_body(code, title, status, error.detail)),
            status=status,
            content_type=PROBLEM_CONTENT_TYPE,
        )
    else:
        template = "503.html" if down else "500.html"
        response = HttpResponse(loader.render_to_string(template, {"message": error.detail}), status=status)
    if down:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
