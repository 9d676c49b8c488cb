"""The vendor bridge's vendor keys: the vendor's own named keys, shared by the tenants they serve.

Thin as the rest of the bridge: a serializer parses, one service or selector acts.
Scopes: ``tenants:read`` to read; ``keys:write`` to add, check, make default, replace
credentials, retire; ``jobs:write`` to move tenants onto a key (a rekey job).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from keycore import errors, selectors
from keycore.api import examples as ex
from keycore.api.idempotency import idempotent
from keycore.api.serializers import (
    RekeyJobSerializer,
    VendorKeyAssignSerializer,
    VendorKeyCreateSerializer,
    VendorKeyListSerializer,
    VendorKeyMoveSerializer,
    VendorKeySecretsSerializer,
    VendorKeySerializer,
)
from keycore.api.views import CONFLICT, JOBS, KEYS, READ, _on, _valid, actor
from keycore.filtersets import TenantFilterSet
from keycore.services import jobs as job_services
from keycore.services import vendor_keys as vendor_key_services
from keycore.services.keyring import describe_config

TAGS = ["vendor keys"]


def _shown(vendor_key) -> dict:
    """A vendor key with where it lives, the tenants it serves and its data counts."""
    row = selectors.vendor_key_summaries(selectors.vendor_key_list().filter(pk=vendor_key.pk))[0]
    for name in ("tenants", "key_versions", "documents"):
        setattr(vendor_key, name, row[name])
    vendor_key.where = describe_config(vendor_key)
    return VendorKeySerializer(vendor_key).data


@extend_schema_view(
    get=extend_schema(
        operation_id="vendor_keys_list",
        summary="List vendor keys",
        description="Each with its health, the tenants it serves and its data counts.",
        tags=TAGS,
        responses={200: VendorKeyListSerializer},
        examples=[ex.VENDOR_KEY_LIST],
    ),
    post=extend_schema(
        operation_id="vendor_keys_create",
        summary="Add a vendor key",
        description="A named key in your own KMS (or KeyCore's local one), saved only after a wrap and unwrap "
        "through it succeeded. Honours `Idempotency-Key`.",
        tags=TAGS,
        request=VendorKeyCreateSerializer,
        responses={201: VendorKeySerializer, 409: CONFLICT},
        examples=[ex.VENDOR_KEY_CREATE_AWS, ex.VENDOR_KEY_CREATE_LOCAL, ex.VENDOR_KEY],
    ),
)
class VendorKeyListView(APIView):
    required_scopes = {"GET": READ, "POST": KEYS}

    def get(self, request):
        rows = selectors.vendor_key_summaries()
        out = []
        for row in rows:
            vendor_key = row["vendor_key"]
            for name in ("tenants", "key_versions", "documents"):
                setattr(vendor_key, name, row[name])
            vendor_key.where = describe_config(vendor_key)
            out.append(VendorKeySerializer(vendor_key).data)
        return Response({"results": out})

    @idempotent
    def post(self, request):
        data = _valid(VendorKeyCreateSerializer, request.data)
        vendor_key = vendor_key_services.vendor_key_create(
            name=data["name"],
            provider=data["provider"],
            settings_=data["settings"],
            secrets=data["secrets"],
            rate_limit=data["rate_limit"],
            make_default=data["make_default"],
            actor=actor(request),
        )
        return Response(_shown(vendor_key), status=status.HTTP_201_CREATED)


class VendorKeyScoped:
    def vendor_key(self):
        return selectors.vendor_key_get(uid=self.kwargs["uid"])


@extend_schema_view(
    get=extend_schema(
        operation_id="vendor_keys_retrieve",
        summary="Get a vendor key",
        tags=TAGS,
        responses={200: VendorKeySerializer},
        examples=[ex.VENDOR_KEY],
    ),
    patch=extend_schema(
        operation_id="vendor_keys_replace_secrets",
        summary="Replace a vendor key's credentials",
        description="Tested before they replace the old ones; every tenant the key serves uses the new ones.",
        tags=TAGS,
        request=VendorKeySecretsSerializer,
        responses={200: VendorKeySerializer, 409: CONFLICT},
        examples=[ex.VENDOR_KEY_SECRETS, ex.VENDOR_KEY],
    ),
)
class VendorKeyDetailView(VendorKeyScoped, APIView):
    required_scopes = {"GET": READ, "PATCH": KEYS}
    serializer_class = VendorKeySerializer

    def get(self, request, uid):
        return Response(_shown(self.vendor_key()))

    def patch(self, request, uid):
        data = _valid(VendorKeySecretsSerializer, request.data)
        vendor_key = vendor_key_services.vendor_key_replace_secrets(
            vendor_key=self.vendor_key(), secrets=data["secrets"], actor=actor(request)
        )
        return Response(_shown(vendor_key))


@_on("post")(
    operation_id="vendor_keys_check",
    summary="Health-check a vendor key",
    description="Wraps and unwraps a probe through the KMS now and records the result on the key and on every "
    "tenant configuration that uses it.",
    tags=TAGS,
    request=None,
    responses={200: VendorKeySerializer},
    examples=[ex.VENDOR_KEY],
)
class VendorKeyCheckView(VendorKeyScoped, APIView):
    required_scope = KEYS

    def post(self, request, uid):
        vendor_key = self.vendor_key()
        vendor_key_services.vendor_key_check(vendor_key=vendor_key)
        return Response(_shown(selectors.vendor_key_get(uid=uid)))


@_on("post")(
    operation_id="vendor_keys_make_default",
    summary="Make a vendor key the default for new tenants",
    tags=TAGS,
    request=None,
    responses={200: VendorKeySerializer, 409: CONFLICT},
    examples=[ex.VENDOR_KEY],
)
class VendorKeyMakeDefaultView(VendorKeyScoped, APIView):
    required_scope = KEYS

    def post(self, request, uid):
        vendor_key = vendor_key_services.vendor_key_make_default(vendor_key=self.vendor_key(), actor=actor(request))
        return Response(_shown(vendor_key))


@_on("post")(
    operation_id="vendor_keys_retire",
    summary="Retire a vendor key",
    description="Only once no tenant key is wrapped under it: move its tenants to another vendor key first.",
    tags=TAGS,
    request=None,
    responses={200: VendorKeySerializer, 409: CONFLICT},
    examples=[ex.VENDOR_KEY],
)
class VendorKeyRetireView(VendorKeyScoped, APIView):
    required_scope = KEYS

    def post(self, request, uid):
        vendor_key = vendor_key_services.vendor_key_retire(vendor_key=self.vendor_key(), actor=actor(request))
        return Response(_shown(vendor_key))


@_on("post")(
    operation_id="vendor_keys_assign",
    summary="Move tenants onto a vendor key",
    description="Named tenants, a filter of the tenants list, or every tenant another vendor key serves (your own "
    "rotation or region move), moved by one rekey job with progress. A tenant that owns its key is never moved: "
    "it is listed in `refused` and the attempt is on its audit trail; if every tenant named was refused, the "
    "answer is 403 `tenant-sovereignty`. Honours `Idempotency-Key`.",
    tags=TAGS,
    request=VendorKeyAssignSerializer,
    responses={202: VendorKeyMoveSerializer, 403: CONFLICT, 409: CONFLICT},
    examples=[
        ex.VENDOR_KEY_ASSIGN_FILTER,
        ex.VENDOR_KEY_ASSIGN_TENANTS,
        ex.VENDOR_KEY_ASSIGN_FROM,
        ex.VENDOR_KEY_MOVED,
    ],
)
class VendorKeyAssignView(VendorKeyScoped, APIView):
    required_scope = JOBS

    @idempotent
    def post(self, request, uid):
        data = _valid(VendorKeyAssignSerializer, request.data)
        vendor_key = self.vendor_key()
        source = None
        if "tenants" in data:
            tenants = list(selectors.tenant_list(columns=None).filter(external_id__in=data["tenants"]))
            missing = sorted(set(data["tenants"]) - {t.external_id for t in tenants})
            if missing:
                raise errors.InvalidInput(
                    f"No tenant {missing[0]!r}.", field_errors={"tenants": [f"Unknown: {', '.join(missing[:20])}"]}
                )
        elif "filter" in data:
            filterset = TenantFilterSet(data["filter"], queryset=selectors.tenant_list(columns=None))
            if not filterset.is_valid():
                raise errors.InvalidInput("The filter has errors.", field_errors=dict(filterset.errors))
            tenants = filterset.qs
        else:
            source = vendor_key_services.vendor_key_resolve(data["from_vendor_key"])
            tenants = selectors.vendor_key_tenants(source)
        job, refused = job_services.job_start_vendor_key_move(
            vendor_key=vendor_key, tenants=tenants, actor=actor(request), source=source
        )
        if job is None and refused and "tenants" in data:
            raise errors.TenantSovereignty(
                f"{', '.join(t.name for t in refused[:5])} own{'s' if len(refused) == 1 else ''} their key: "
                "a vendor key never replaces a tenant's own key."
            )
        body = {
            "job": RekeyJobSerializer(job).data if job is not None else None,
            "refused": [t.external_id for t in refused],
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)
