"""The vendor bridge: what the vendor portal does, for machines. Tenants are addressed by ``external_id``.

Views are thin: parse with a serializer, call one service (the same ones the
portals call, so a rule lives once), return a serializer's output. They read
only through ``keycore.selectors``, as the portals do: lists start from
``for_tenant(tenant)`` where they belong to a tenant, are filtered by the
FilterSets the portals use and paged by the portals' keyset pager. Every POST
that creates something honours ``Idempotency-Key``.

Scopes: ``tenants:read`` for reading tenants, their configurations, history and
jobs; ``tenants:write`` for tenants and invitations; ``keys:write`` for
vendor-provided configurations; ``jobs:write`` for starting and cancelling
rekey jobs; ``events:read`` for key-use events and the audit trail.
"""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from keycore import errors, selectors
from keycore.api import examples as ex
from keycore.api.idempotency import idempotent
from keycore.api.pagination import HistoryPagination, NewestFirstByTime, OldestFirstPagination
from keycore.api.problems import _flatten, error_body
from keycore.api.serializers import (
    AuditEventSerializer,
    BulkResultSerializer,
    BulkTenantsSerializer,
    InvitationCreateSerializer,
    InvitationSerializer,
    KeyHistorySerializer,
    KeyUseEventSerializer,
    KeyVersionSerializer,
    KmsConfigCreateSerializer,
    KmsConfigSerializer,
    ProblemSerializer,
    RekeyJobSerializer,
    StatusChangeSerializer,
    TenantCreateSerializer,
    TenantSerializer,
    TenantUpdateSerializer,
)
from keycore.filtersets import AuditEventFilterSet, KeyUseEventFilterSet, RekeyJobFilterSet, TenantFilterSet
from keycore.models import KmsConfig, RekeyJob, Tenant
from keycore.models.api import ApiScope
from keycore.models.keys import ConfigOwner
from keycore.providers.registry import get_provider_class
from keycore.services import jobs as job_services
from keycore.services import keys as key_services
from keycore.services import tenants as tenant_services
from keycore.services import vendor_keys as vendor_key_services
from keycore.services.audit import Actor
from keycore.services.keys import ConfigInput

READ = ApiScope.TENANTS_READ.value
WRITE = ApiScope.TENANTS_WRITE.value
KEYS = ApiScope.KEYS_WRITE.value
JOBS = ApiScope.JOBS_WRITE.value
EVENTS = ApiScope.EVENTS_READ.value

CONFLICT = OpenApiResponse(ProblemSerializer, description="The action does not fit the current state.")
ACCEPTED_JOB = OpenApiResponse(RekeyJobSerializer, description="The rekey job that was started.")


def _on(method: str):
    """``@_on("post")(summary=…)``: document one method of a view class (operation ids are per method)."""

    def schema(**kwargs):
        return extend_schema_view(**{method: extend_schema(**kwargs)})

    return schema


def actor(request) -> Actor:
    return Actor.from_request(request)


class TenantScoped:
    """Views under /tenants/{external_id}/: the tenant is resolved once, from the URL."""

    _tenant: Tenant | None = None

    @property
    def tenant(self) -> Tenant:
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no URL to resolve
            return Tenant(pk=0)
        if self._tenant is None:
            self._tenant = selectors.tenant_by_external_id(self.kwargs["external_id"])
        return self._tenant


# --- tenants ---------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        operation_id="tenants_list",
        summary="List tenants",
        description="Search (`q`, prefix by default, `match=contains`) and filter on the indexed summary columns.",
        tags=["tenants"],
        examples=[ex.TENANT_PAGE],
    ),
    post=extend_schema(
        operation_id="tenants_create",
        summary="Create a tenant",
        description="Creates the tenant with a working vendor-provided key, and invites its first admins. "
        "Honours `Idempotency-Key`.",
        tags=["tenants"],
        request=TenantCreateSerializer,
        responses={201: TenantSerializer, 409: CONFLICT},
        examples=[ex.TENANT_CREATE, ex.TENANT],
    ),
)
class TenantListView(generics.ListAPIView):
    required_scopes = {"GET": READ, "POST": WRITE}
    serializer_class = TenantSerializer
    filterset_class = TenantFilterSet

    def get_queryset(self):
        return selectors.tenant_list(columns=None)

    @idempotent
    def post(self, request):
        data = _valid(TenantCreateSerializer, request.data)
        tenant = tenant_services.tenant_create(
            external_id=data["external_id"],
            name=data["name"],
            admins=[tenant_services.AdminInvite(a["email"], a["role"]) for a in data.get("admins", [])],
            actor=actor(request),
            vendor_key=_vendor_key(data),
        )
        return Response(TenantSerializer(tenant).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(operation_id="tenants_retrieve", summary="Get a tenant", tags=["tenants"], examples=[ex.TENANT]),
    patch=extend_schema(
        operation_id="tenants_update",
        summary="Change a tenant",
        description="Name and settings. `external_id` cannot change: your applications address the tenant by it.",
        tags=["tenants"],
        request=TenantUpdateSerializer,
        responses={200: TenantSerializer},
        examples=[ex.TENANT_UPDATE, ex.TENANT],
    ),
)
class TenantDetailView(TenantScoped, generics.GenericAPIView):
    required_scopes = {"GET": READ, "PATCH": WRITE}
    serializer_class = TenantSerializer

    def get(self, request, external_id: str):
        return Response(TenantSerializer(self.tenant).data)

    def patch(self, request, external_id: str):
        data = _valid(TenantUpdateSerializer, request.data)
        tenant = tenant_services.tenant_update(tenant=self.tenant, actor=actor(request), **data)
        return Response(TenantSerializer(tenant).data)


class TenantStatusView(TenantScoped, APIView):
    """suspend / reactivate / offboard; ``transition`` is set per URL."""

    required_scope = WRITE
    transition = ""

    def post(self, request, external_id: str):
        data = _valid(StatusChangeSerializer, request.data)
        tenant = tenant_services.tenant_set_status(
            tenant=self.tenant, transition=self.transition, actor=actor(request), reason=data["reason"]
        )
        return Response(TenantSerializer(tenant).data)


def _status_view(transition: str, summary: str, description: str):
    decorated = _on("post")(
        operation_id=f"tenants_{transition}",
        summary=summary,
        description=description,
        tags=["tenants"],
        request=StatusChangeSerializer,
        responses={200: TenantSerializer, 409: CONFLICT},
        examples=[ex.STATUS_CHANGE, ex.TENANT],
    )(type(f"Tenant{transition.title()}View", (TenantStatusView,), {"transition": transition}))
    return decorated.as_view()


tenant_suspend = _status_view(
    "suspend", "Suspend a tenant", "Crypto for the tenant is refused until it is reactivated (within seconds)."
)
tenant_reactivate = _status_view("reactivate", "Reactivate a tenant", "From suspended or offboarding back to active.")
tenant_offboard = _status_view(
    "offboard",
    "Offboard a tenant",
    "Starts the grace period after which the tenant's vendor-provided keys may be crypto-shredded.",
)


def _bulk_failure(index: int, external_id: str | None, exc: errors.KeyCoreError) -> dict:
    return {"index": index, "external_id": external_id, "status": exc.http_status, "error": error_body(exc)}


@_on("post")(
    operation_id="tenants_bulk_create",
    summary="Create up to 1,000 tenants",
    description="Each tenant stands on its own: valid ones are created (each exactly as `POST /tenants/` would, "
    "together in one transaction), invalid or taken ones reported with a problem, in order. "
    "Honours `Idempotency-Key`.",
    tags=["tenants"],
    request=BulkTenantsSerializer,
    responses={200: BulkResultSerializer},
    examples=[ex.BULK_REQUEST, ex.BULK_RESULT],
)
class TenantBulkView(APIView):
    required_scope = WRITE

    @idempotent
    def post(self, request):
        envelope = _valid(BulkTenantsSerializer, request.data)
        items, shared_key = envelope["tenants"], envelope.get("vendor_key")
        results: list[dict | None] = [None] * len(items)
        wanted, positions = [], []
        validator = TenantCreateSerializer()
        resolved: dict[str, object] = {}  # each vendor key named in the call is looked up once
        for index, item in enumerate(items):
            external_id = item.get("external_id") if isinstance(item.get("external_id"), str) else None
            try:
                data = _valid_with(validator, {"vendor_key": shared_key, **item} if shared_key else item)
                reference = data.get("vendor_key") or ""
                if reference and reference not in resolved:
                    resolved[reference] = _vendor_key(data)
                vendor_key = resolved[reference] if reference else None
            except errors.KeyCoreError as exc:
                results[index] = _bulk_failure(index, external_id, exc)
                continue
            admins = tuple(tenant_services.AdminInvite(a["email"], a["role"]) for a in data.get("admins", []))
            wanted.append(tenant_services.NewTenant(data["external_id"], data["name"], admins, vendor_key))
            positions.append(index)
        # set-based: every valid tenant in one transaction, each one exactly as tenant_create leaves it
        outcomes = tenant_services.tenant_create_many(items=wanted, actor=actor(request))
        made = [outcome for outcome in outcomes if not isinstance(outcome, errors.KeyCoreError)]
        # one serializer for all: its fields are built once, not once per tenant
        shown = iter(TenantSerializer(made, many=True).data)
        for index, item, outcome in zip(positions, wanted, outcomes, strict=True):
            if isinstance(outcome, errors.KeyCoreError):
                results[index] = _bulk_failure(index, item.external_id, outcome)
            else:
                results[index] = {
                    "index": index,
                    "external_id": outcome.external_id,
                    "status": 201,
                    "tenant": next(shown),
                }
        created = sum(1 for r in results if r["status"] == 201)
        return Response({"created": created, "failed": len(results) - created, "results": results})


# --- invitations ---------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        operation_id="invitations_list",
        summary="List a tenant's invitations",
        tags=["invitations"],
        examples=[ex.INVITATION_PAGE],
    ),
    post=extend_schema(
        operation_id="invitations_create",
        summary="Invite someone to administer a tenant",
        description="Emails a single-use, expiring link. A pending invitation of the same address is replaced. "
        "Honours `Idempotency-Key`.",
        tags=["invitations"],
        request=InvitationCreateSerializer,
        responses={201: InvitationSerializer, 409: CONFLICT},
        examples=[ex.INVITATION_CREATE, ex.INVITATION],
    ),
)
class InvitationListView(TenantScoped, generics.ListAPIView):
    required_scopes = {"GET": READ, "POST": WRITE}
    serializer_class = InvitationSerializer

    def get_queryset(self):
        return selectors.invitation_list(tenant=self.tenant)

    @idempotent
    def post(self, request, external_id: str):
        data = _valid(InvitationCreateSerializer, request.data)
        invitation, _token = tenant_services.invitation_create(
            tenant=self.tenant, email=data["email"], role=data["role"], actor=actor(request)
        )
        return Response(InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)


class InvitationActionView(TenantScoped, APIView):
    required_scope = WRITE
    action = ""

    def post(self, request, external_id: str, uid):
        invitation = selectors.invitation_get(tenant=self.tenant, uid=uid)
        if self.action == "revoke":
            invitation = tenant_services.invitation_revoke(invitation=invitation, actor=actor(request))
        else:
            invitation, _token = tenant_services.invitation_resend(invitation=invitation, actor=actor(request))
        return Response(InvitationSerializer(invitation).data)


def _invitation_view(action: str, summary: str):
    cls = type(f"Invitation{action.title()}View", (InvitationActionView,), {"action": action})
    return _on("post")(
        operation_id=f"invitations_{action}",
        summary=summary,
        tags=["invitations"],
        request=None,
        responses={200: InvitationSerializer, 409: CONFLICT},
        examples=[ex.INVITATION],
    )(cls).as_view()


invitation_revoke = _invitation_view("revoke", "Withdraw an invitation")
invitation_resend = _invitation_view("resend", "Send an invitation again (the old link stops working)")


# --- KMS configurations ---------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        operation_id="kms_configs_list",
        summary="List a tenant's KMS configurations",
        description="Vendor-provided and the tenant's own, oldest first (`is_primary` marks the one that wraps new "
        "keys). Secrets are never returned, only the names of those that are set.",
        tags=["kms-configs"],
        examples=[ex.CONFIG_PAGE],
    ),
    post=extend_schema(
        operation_id="kms_configs_create",
        summary="Add a vendor-provided KMS configuration",
        description="The provider's settings and secrets are validated, then a wrap and unwrap are tested "
        "through the KMS before anything is saved. Secrets are write-only. Honours `Idempotency-Key`.",
        tags=["kms-configs"],
        request=KmsConfigCreateSerializer,
        responses={201: KmsConfigSerializer, 409: CONFLICT},
        examples=[ex.CONFIG_CREATE_AWS, ex.CONFIG_CREATE_LOCAL, ex.CONFIG],
    ),
)
class KmsConfigListView(TenantScoped, generics.ListAPIView):
    required_scopes = {"GET": READ, "POST": KEYS}
    serializer_class = KmsConfigSerializer
    pagination_class = OldestFirstPagination

    def get_queryset(self):
        return selectors.kms_config_list(tenant=self.tenant)

    @idempotent
    def post(self, request, external_id: str):
        data = _valid(KmsConfigCreateSerializer, request.data)
        try:
            config = key_services.kms_config_create(
                tenant=self.tenant,
                owner=ConfigOwner.VENDOR,
                data=ConfigInput(
                    provider=data["provider"],
                    name=data["name"],
                    settings=data["settings"],
                    secrets=data["secrets"],
                    rate_limit=data["rate_limit"],
                ),
                actor=actor(request),
                make_primary=data["make_primary"],
            )
        except errors.InvalidInput as exc:
            raise _placed(exc, data) from None
        return Response(KmsConfigSerializer(config, context={"request": request}).data, status=status.HTTP_201_CREATED)


def _placed(exc: errors.InvalidInput, data: dict) -> errors.InvalidInput:
    """Name a provider's field errors after where they belong: ``settings.key_id``, ``secrets.pin``."""
    try:
        declared = {f.name: f.secret for f in get_provider_class(data["provider"]).fields}
    except errors.KeyCoreError:
        return exc
    placed = {}
    for name, messages in exc.field_errors.items():
        if name in data["secrets"] or declared.get(name) is True:
            placed[f"secrets.{name}"] = messages
        elif name in data["settings"] or name in declared:
            placed[f"settings.{name}"] = messages
        else:
            placed[name] = messages
    exc.field_errors = placed
    return exc


class KmsConfigScoped(TenantScoped):
    def config(self) -> KmsConfig:
        return selectors.kms_config_get(tenant=self.tenant, uid=self.kwargs["uid"])

    def vendor_config(self) -> KmsConfig:
        """Vendor staff and their automation never change a tenant's own key: only the tenant does."""
        config = self.config()
        if config.owner != ConfigOwner.VENDOR:
            raise errors.PermissionDenied(
                f"{config.name} is the tenant's own key: only the tenant can change it, in the tenant portal."
            )
        return config


@_on("get")(
    operation_id="kms_configs_retrieve",
    summary="Get a KMS configuration",
    tags=["kms-configs"],
    responses={200: KmsConfigSerializer},
    examples=[ex.CONFIG],
)
class KmsConfigDetailView(KmsConfigScoped, APIView):
    required_scope = READ

    def get(self, request, external_id: str, uid):
        return Response(KmsConfigSerializer(self.config(), context={"request": request}).data)


@_on("post")(
    operation_id="kms_configs_make_primary",
    summary="Make a vendor-provided configuration primary",
    description="New tenant keys are wrapped under it at once; the returned rekey job moves the existing ones. "
    "While the tenant's own key is primary this is refused, unless the tenant is suspended or offboarding. "
    "Honours `Idempotency-Key`.",
    tags=["kms-configs"],
    request=None,
    responses={202: ACCEPTED_JOB, 409: CONFLICT},
    examples=[ex.JOB_STARTED],
)
class KmsConfigMakePrimaryView(KmsConfigScoped, APIView):
    required_scope = KEYS

    @idempotent
    def post(self, request, external_id: str, uid):
        job = key_services.kms_config_make_primary(config=self.vendor_config(), actor=actor(request))
        return Response(RekeyJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class KmsConfigStateView(KmsConfigScoped, APIView):
    required_scope = KEYS
    service = None

    def post(self, request, external_id: str, uid):
        config = type(self).service(config=self.vendor_config(), actor=actor(request))
        return Response(KmsConfigSerializer(config, context={"request": request}).data)


def _config_state_view(name: str, service, summary: str, description: str):
    cls = type(f"KmsConfig{name.title()}View", (KmsConfigStateView,), {"service": staticmethod(service)})
    return _on("post")(
        operation_id=f"kms_configs_{name.replace('-', '_')}",
        summary=summary,
        description=description,
        tags=["kms-configs"],
        request=None,
        responses={200: KmsConfigSerializer, 409: CONFLICT},
        examples=[ex.CONFIG],
    )(cls).as_view()


kms_config_decrypt_only = _config_state_view(
    "decrypt-only",
    key_services.kms_config_decrypt_only,
    "Demote a vendor-provided configuration to decrypt-only",
    "Data under it can still be read; nothing new is wrapped under it.",
)
kms_config_retire = _config_state_view(
    "retire",
    key_services.kms_config_retire,
    "Retire a vendor-provided configuration",
    "Only once no tenant key depends on it alone (the rekey job has moved them).",
)


# --- key history, rekey jobs -------------------------------------------------------------------------


@_on("get")(
    operation_id="key_history_list",
    summary="A tenant's key history",
    description="Which configuration was primary when, and every state change, newest first.",
    tags=["kms-configs"],
    examples=[ex.HISTORY_PAGE],
)
class KeyHistoryView(TenantScoped, generics.ListAPIView):
    required_scope = READ
    serializer_class = KeyHistorySerializer
    pagination_class = HistoryPagination

    def get_queryset(self):
        return selectors.key_history_list(tenant=self.tenant)


@_on("get")(
    operation_id="tenant_key_versions_list",
    summary="List a tenant's key versions",
    description="Newest first: each version's state, the documents counted under it, its last decrypt, whether a "
    "vendor-provided key ever held it, and which keys can open it now.",
    tags=["kms-configs"],
    examples=[ex.KEY_VERSIONS_PAGE],
)
class KeyVersionsView(TenantScoped, generics.ListAPIView):
    required_scope = READ
    serializer_class = KeyVersionSerializer

    def get_queryset(self):
        return selectors.tenant_key_versions_queryset(self.tenant)


@_on("get")(
    operation_id="rekey_jobs_list",
    summary="List rekey jobs",
    description="Of every tenant, newest first; filter by state, kind or tenant.",
    tags=["rekey-jobs"],
    examples=[ex.JOB_PAGE],
)
class RekeyJobListView(generics.ListAPIView):
    required_scope = READ
    serializer_class = RekeyJobSerializer
    pagination_class = NewestFirstByTime
    filterset_class = RekeyJobFilterSet

    def get_queryset(self):
        return selectors.rekey_job_list()


class RekeyJobScoped:
    def job(self) -> RekeyJob:
        return selectors.rekey_job_get(uid=self.kwargs["uid"])


@_on("get")(
    operation_id="rekey_jobs_retrieve",
    summary="Get a rekey job",
    tags=["rekey-jobs"],
    responses={200: RekeyJobSerializer},
    examples=[ex.JOB],
)
class RekeyJobDetailView(RekeyJobScoped, APIView):
    required_scope = READ

    def get(self, request, uid):
        return Response(RekeyJobSerializer(self.job()).data)


@extend_schema_view(
    get=extend_schema(
        operation_id="tenant_rekey_jobs_list",
        summary="List a tenant's rekey jobs",
        tags=["rekey-jobs"],
        examples=[ex.JOB_PAGE],
    ),
    post=extend_schema(
        operation_id="tenant_rekey_jobs_create",
        summary="Start a rewrap of a tenant's keys under its primary configuration",
        description="Moves every live tenant key under the current primary configuration (a newer, still running "
        "rewrap of the tenant is superseded). Honours `Idempotency-Key`.",
        tags=["rekey-jobs"],
        request=None,
        responses={202: ACCEPTED_JOB, 409: CONFLICT},
        examples=[ex.JOB_STARTED],
    ),
)
class TenantRekeyJobsView(TenantScoped, generics.ListAPIView):
    required_scopes = {"GET": READ, "POST": JOBS}
    serializer_class = RekeyJobSerializer
    pagination_class = NewestFirstByTime

    def get_queryset(self):
        return selectors.rekey_job_list(tenant=self.tenant)

    @idempotent
    def post(self, request, external_id: str):
        tenant = self.tenant
        with transaction.atomic():
            primary = selectors.kms_config_primary(tenant=tenant)
            if primary is None:
                raise errors.Conflict(f"{tenant.name} has no primary key to rewrap to.")
            job = job_services.job_start_rewrap(tenant=tenant, source=None, target=primary, actor=actor(request))
        return Response(RekeyJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class RekeyJobActionView(RekeyJobScoped, APIView):
    required_scope = JOBS
    service = None

    def post(self, request, uid):
        job = type(self).service(job=self.job(), actor=actor(request))
        job = selectors.rekey_job_get(uid=job.uid)  # with its tenant and configurations, as the list shows it
        return Response(RekeyJobSerializer(job).data)


def _job_action_view(name: str, service, summary: str):
    cls = type(f"RekeyJob{name.title()}View", (RekeyJobActionView,), {"service": staticmethod(service)})
    return _on("post")(
        operation_id=f"rekey_jobs_{name}",
        summary=summary,
        tags=["rekey-jobs"],
        request=None,
        responses={200: RekeyJobSerializer, 409: CONFLICT},
        examples=[ex.JOB],
    )(cls).as_view()


rekey_job_cancel = _job_action_view("cancel", lambda **kw: job_services.job_cancel(**kw), "Cancel a rekey job")
rekey_job_retry = _job_action_view(
    "retry", lambda **kw: job_services.job_retry(**kw), "Retry a failed, paused or cancelled rekey job"
)


# --- events and audit -------------------------------------------------------------------------------------


@_on("get")(
    operation_id="tenant_events_list",
    summary="A tenant's key-use events",
    description="Every use of the tenant's keys, counted per minute and per who/what/result, newest first; "
    "each row is a link of the tenant's hash chain.",
    tags=["events"],
    examples=[ex.EVENT_PAGE],
)
class TenantEventsView(TenantScoped, generics.ListAPIView):
    required_scope = EVENTS
    serializer_class = KeyUseEventSerializer
    filterset_class = KeyUseEventFilterSet

    def get_queryset(self):
        return selectors.key_use_list(tenant=self.tenant)


@_on("get")(
    operation_id="audit_list",
    summary="The audit trail",
    description="Every admin action (portals, API, jobs), newest first; filter by tenant, actor, action, time.",
    tags=["events"],
    examples=[ex.AUDIT_PAGE],
)
class AuditListView(generics.ListAPIView):
    required_scope = EVENTS
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet

    def get_queryset(self):
        return selectors.audit_event_list()


# --- helpers ------------------------------------------------------------------------------------------------


def _vendor_key(data: dict):
    """The vendor key a create request names, or None for the default one."""
    return vendor_key_services.vendor_key_resolve(data["vendor_key"]) if data.get("vendor_key") else None


def _valid(serializer_class, data) -> dict:
    """Validated data, or InvalidInput with field errors (a problem with ``errors``)."""
    if data is None or not hasattr(data, "get"):
        raise errors.InvalidInput("The body must be a JSON object.", field_errors={"__all__": ["Expected an object."]})
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise errors.InvalidInput("The request has errors; see 'errors'.", field_errors=_flatten(serializer.errors))
    return serializer.validated_data


def _valid_with(serializer, data) -> dict:
    """What :func:`_valid` does, with one serializer instance reused for many bodies (its fields are built once:
    building them is most of a ModelSerializer's or nested serializer's cost)."""
    if data is None or not hasattr(data, "get"):
        raise errors.InvalidInput("The body must be a JSON object.", field_errors={"__all__": ["Expected an object."]})
    try:
        return serializer.run_validation(data)
    except ValidationError as exc:
        raise errors.InvalidInput("The request has errors; see 'errors'.", field_errors=_flatten(exc.detail)) from None
