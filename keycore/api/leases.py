"""The SDK's API: leases of derived keys, the revocation epoch, usage reports, deterministic encryption.

All under the ``crypto`` scope, parsed by hand like the crypto API (:mod:`keycore.api.crypto`), and
with the same answer for a tenant a limited key may not use as for one that does not exist.
``docs/sdk.md`` describes the protocol for SDKs in other languages.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers

from keycore import errors
from keycore.api.crypto import (
    PROBLEMS,
    CryptoView,
    _b64,
    _bytes,
    _check_keys,
    _invalid,
    _json,
    _meta,
    _meta_fields,
    _tenant,
    read_object,
)
from keycore.api.serializers import Base64Field, ProblemSerializer
from keycore.services.audit import Actor
from keycore.services.leases import (
    MAX_REPORTS,
    Lease,
    UsageReport,
    deterministic_decrypt,
    deterministic_encrypt,
    lease_derive,
    lease_issue,
    revocation_epoch,
    search_terms,
    usage_record,
)


def _examples(request: dict | None, response: dict) -> list[OpenApiExample]:
    out = [OpenApiExample("Answer", value=response, response_only=True)]
    if request is not None:
        out.insert(0, OpenApiExample("Request", value=request, request_only=True))
    return out


_LEASE_EXAMPLE = {
    "tenant": "acme",
    "tenant_uid": "0b3c1d1e5f004c4b9a2e7d61b8f0a001",
    "key_version": 3,
    "current_version": 3,
    "lease_id": "TEVBU0UAAAAAAAAAAAClpQ==",
    "lease_key": "1XJ5307SdiBjFWQotIF7VfoHdvSxLIzaVHpWzkZQU7E=",
    "ttl_seconds": 300.0,
    "epoch": 41,
    "deterministic": [
        {"key_version": 2, "key": "q2Xh0v3v8m2c1bq3VJ0K8pN3G0m7hQmC1fUuM4wYb1E="},
        {"key_version": 3, "key": "Zp0n4c8yq7f0wqJc2s3x9rH6vB1nM5kT8dLqW2eR4tY="},
    ],
}
_DET = "3gEAAAADlC4mK3xTq1dJ0yqkJYwq3l5a1aX9kq6K0mS8yWZdM1qv"

LEASE_KEYS = frozenset({"tenant", "process"})
DERIVE_KEYS = frozenset({"tenant", "process", "key_version", "lease_id"})
USAGE_KEYS = frozenset({"reports"})
REPORT_KEYS = frozenset({"tenant", "operation", "count", "key_version", "result", "label", "requesting_id"})
DET_KEYS = frozenset({"tenant", "field", "value", "requesting_id", "label", "source_ip", "object_id", "request_id"})
DET_DECRYPT_KEYS = (DET_KEYS - {"value"}) | {"ciphertext"}


def _actor(view: CryptoView, request) -> Actor:
    via = view.via(request)
    key = request.auth
    return Actor(
        label=f"api-key:{key.name}" if key is not None else "anonymous", api_key=key, source_ip=via[3] if via else None
    )


def _lease_body(lease: Lease) -> dict:
    return {
        "tenant": lease.tenant,
        "tenant_uid": lease.tenant_uid.hex(),
        "key_version": lease.key_version,
        "current_version": lease.current_version,
        "lease_id": _b64(lease.lease_id),
        "lease_key": _b64(lease.lease_key),
        "ttl_seconds": lease.ttl_seconds,
        "epoch": lease.epoch,
        "deterministic": [{"key_version": v, "key": _b64(k)} for v, k in sorted(lease.deterministic.items())],
    }


def _text(body: dict, name: str, limit: int, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if type(value) is not str or not value or len(value) > limit:
        raise _invalid(name, f"Required: a string of 1 to {limit} characters.")
    return value


_LEASE_RESPONSE = inline_serializer(
    "Lease",
    {
        "tenant": serializers.CharField(),
        "tenant_uid": serializers.CharField(help_text="32 hex digits: the tenant's uid, bound into every EDEK."),
        "key_version": serializers.IntegerField(),
        "current_version": serializers.IntegerField(allow_null=True),
        "lease_id": Base64Field(help_text="16 bytes."),
        "lease_key": Base64Field(help_text="32 bytes: HKDF of the tenant key version and the lease id (docs/sdk.md)."),
        "ttl_seconds": serializers.FloatField(help_text="Drop the key after this many seconds."),
        "epoch": serializers.IntegerField(help_text="The revocation epoch the lease was checked against."),
        "deterministic": serializers.ListField(
            child=inline_serializer(
                "DeterministicBase", {"key_version": serializers.IntegerField(), "key": Base64Field()}
            ),
            help_text="The deterministic base key of every version still in use (new leases only).",
        ),
    },
)
_LEASE_PROBLEMS = dict(PROBLEMS)


@extend_schema_view(
    post=extend_schema(
        operation_id="crypto_lease",
        summary="Lease a derived key of a tenant's current key version (SDK)",
        description="A fresh lease id and the key derived from it; every check of a crypto call applies, against "
        "the revocation epoch read now. Each lease is on the tenant's audit trail (`sdk.lease_issued`).",
        tags=["sdk"],
        request=inline_serializer(
            "LeaseRequest",
            {"tenant": serializers.CharField(), "process": serializers.CharField(help_text="Which process asks.")},
        ),
        responses={200: _LEASE_RESPONSE, **_LEASE_PROBLEMS},
        examples=_examples({"tenant": "acme", "process": "billing-web-1 pid 4242"}, _LEASE_EXAMPLE),
    )
)
class LeaseView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, LEASE_KEYS)
        tenant = _tenant(body, request.auth)
        lease = lease_issue(actor=_actor(self, request), tenant=tenant, process=_text(body, "process", 200))
        return _json(_lease_body(lease))


@extend_schema_view(
    post=extend_schema(
        operation_id="crypto_lease_derive",
        summary="The key of a lease an EDEK names (SDK decrypt)",
        description="Re-derives the key of `lease_id` under `key_version` (another SDK process's lease, or one a "
        "KeyCore process wrapped its EDEKs under), subject to the same checks as a new lease.",
        tags=["sdk"],
        request=inline_serializer(
            "LeaseDeriveRequest",
            {
                "tenant": serializers.CharField(),
                "process": serializers.CharField(),
                "key_version": serializers.IntegerField(),
                "lease_id": Base64Field(),
            },
        ),
        responses={200: _LEASE_RESPONSE, **_LEASE_PROBLEMS},
        examples=_examples(
            {"tenant": "acme", "process": "billing-web-1", "key_version": 3, "lease_id": "TEVBU0UAAAAAAAAAAAClpQ=="},
            dict(_LEASE_EXAMPLE, deterministic=[]),
        ),
    )
)
class LeaseDeriveView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, DERIVE_KEYS)
        tenant = _tenant(body, request.auth)
        version = body.get("key_version")
        if type(version) is not int:
            raise _invalid("key_version", "Required: an integer.")
        lease = lease_derive(
            actor=_actor(self, request),
            tenant=tenant,
            key_version=version,
            lease_id=_bytes(body.get("lease_id"), "lease_id"),
            process=_text(body, "process", 200),
        )
        return _json(_lease_body(lease))


@extend_schema_view(
    get=extend_schema(
        operation_id="crypto_epoch",
        summary="The revocation epoch (SDK, polled once a second)",
        description="Changes whenever a key is revoked, disabled or otherwise must stop working; an SDK drops "
        "every lease when it changes.",
        tags=["sdk"],
        responses={200: inline_serializer("Epoch", {"epoch": serializers.IntegerField()})},
        examples=_examples(None, {"epoch": 41}),
    )
)
class EpochView(CryptoView):
    @property
    def default_response_headers(self):
        return {"Allow": "GET", "Cache-Control": "no-store"}

    def get(self, request):
        return _json({"epoch": revocation_epoch()})


@extend_schema_view(
    post=extend_schema(
        operation_id="crypto_usage",
        summary="Report what an SDK did with its leases",
        description=f"Up to {MAX_REPORTS:,} counts (tenant, operation, key version, label, requesting id, result); "
        "they become key-use events attributed to this API key and address, exactly like the crypto API's. "
        "Reportable: encrypt, decrypt, det_encrypt, det_decrypt, search (rekeys go through crypto/rekey).",
        tags=["sdk"],
        request=inline_serializer(
            "UsageRequest",
            {
                "reports": serializers.ListField(
                    child=inline_serializer(
                        "UsageReport",
                        {
                            "tenant": serializers.CharField(),
                            "operation": serializers.CharField(),
                            "count": serializers.IntegerField(min_value=1),
                            "key_version": serializers.IntegerField(required=False, allow_null=True),
                            "result": serializers.CharField(required=False),
                            "label": serializers.CharField(required=False),
                            "requesting_id": serializers.CharField(required=False),
                        },
                    ),
                    max_length=MAX_REPORTS,
                )
            },
        ),
        responses={
            200: inline_serializer(
                "UsageResponse",
                {
                    "recorded": serializers.IntegerField(),
                    "skipped": serializers.ListField(
                        child=serializers.IntegerField(),
                        help_text="Reports of tenants that do not exist, are not active or this key may not use.",
                    ),
                },
            ),
            400: OpenApiResponse(ProblemSerializer),
            404: PROBLEMS[404],
        },
        examples=_examples(
            {
                "reports": [
                    {
                        "tenant": "acme",
                        "operation": "encrypt",
                        "count": 120,
                        "key_version": 3,
                        "label": "invoices",
                        "requesting_id": "billing",
                    }
                ]
            },
            {"recorded": 120, "skipped": []},
        ),
    )
)
class UsageView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, USAGE_KEYS)
        items = body.get("reports")
        if type(items) is not list:
            raise _invalid("reports", "Required: an array.")
        if len(items) > MAX_REPORTS:
            raise _invalid("reports", f"At most {MAX_REPORTS} reports per call.")
        reports = []
        for index, item in enumerate(items):
            if type(item) is not dict:
                raise _invalid(f"reports.{index}", "Expected an object.")
            _check_keys(item, REPORT_KEYS)
            version = item.get("key_version")
            count = item.get("count")
            for name, value in (("operation", item.get("operation")),):
                if type(value) is not str:
                    raise _invalid(f"reports.{index}.{name}", "Required: a string.")
            for name in ("result", "label", "requesting_id"):
                if name in item and type(item[name]) is not str:
                    raise _invalid(f"reports.{index}.{name}", "Expected a string.")
            try:
                tenant = _tenant(item, request.auth)
            except errors.TenantNotFound:
                reports.append(None)  # skipped, exactly like a tenant that does not exist
                continue
            reports.append(
                UsageReport(
                    tenant=tenant,
                    operation=item["operation"],
                    count=count if type(count) is int else -1,
                    key_version=version if type(version) is int else None,
                    result=item.get("result", "ok"),
                    label=item.get("label", ""),
                    requesting_id=item.get("requesting_id", ""),
                )
            )
        done = usage_record(actor=_actor(self, request), reports=reports)
        return _json({"recorded": done.recorded, "skipped": done.skipped})


def _det_request(name: str, value_name: str):
    return inline_serializer(
        name,
        {
            "tenant": serializers.CharField(),
            "field": serializers.CharField(help_text="The field (column) the value belongs to."),
            value_name: Base64Field(),
            **{k: v for k, v in _meta_fields().items() if k != "custom"},
        },
    )


@extend_schema_view(
    post=extend_schema(
        operation_id="crypto_deterministic_encrypt",
        summary="Deterministic (searchable) encryption of one value",
        description="AES-SIV under a key derived from the tenant's current key version and the field: equal values "
        "give equal bytes (the SDK's `encrypt_deterministic` gives the same). It reveals equality; see docs/sdk.md.",
        tags=["crypto"],
        request=_det_request("DeterministicEncrypt", "value"),
        responses={200: inline_serializer("DeterministicValue", {"ciphertext": Base64Field()}), **PROBLEMS},
        examples=_examples(
            {"tenant": "acme", "field": "email", "value": "YWRhQGV4YW1wbGUuY29t", "requesting_id": "crm"},
            {"ciphertext": _DET},
        ),
    )
)
class DeterministicEncryptView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, DET_KEYS)
        tenant = _tenant(body, request.auth)
        field = _text(body, "field", 255)
        value = _bytes(body.get("value"), "value")
        blob = deterministic_encrypt(tenant=tenant, field=field, value=value, meta=_meta(body, self.via(request)))
        return _json({"ciphertext": _b64(blob)})


@extend_schema_view(
    post=extend_schema(
        operation_id="crypto_deterministic_decrypt",
        summary="Decrypt a deterministic value",
        tags=["crypto"],
        request=_det_request("DeterministicDecrypt", "ciphertext"),
        responses={200: inline_serializer("DeterministicPlain", {"value": Base64Field()}), **PROBLEMS},
        examples=_examples(
            {"tenant": "acme", "field": "email", "ciphertext": _DET, "requesting_id": "crm"},
            {"value": "YWRhQGV4YW1wbGUuY29t"},
        ),
    )
)
class DeterministicDecryptView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, DET_DECRYPT_KEYS)
        tenant = _tenant(body, request.auth)
        field = _text(body, "field", 255)
        blob = _bytes(body.get("ciphertext"), "ciphertext")
        value = deterministic_decrypt(tenant=tenant, field=field, blob=blob, meta=_meta(body, self.via(request)))
        return _json({"value": _b64(value)})


@extend_schema_view(
    post=extend_schema(
        operation_id="crypto_search_terms",
        summary="Search terms of a value under every key version in use",
        description="The deterministic ciphertexts of the value under every tenant key version still in use, newest "
        "first: query with `IN (...)` while a rotation drains older versions. One term once they are retired.",
        tags=["crypto"],
        request=_det_request("SearchTerms", "value"),
        responses={
            200: inline_serializer("SearchTermsResponse", {"terms": serializers.ListField(child=Base64Field())}),
            **PROBLEMS,
        },
        examples=_examples(
            {"tenant": "acme", "field": "email", "value": "YWRhQGV4YW1wbGUuY29t", "requesting_id": "crm"},
            {"terms": [_DET, "3gEAAAACm1Qy5u7k0cQb8JtV1m3r8a9Qe4XwK2fP0sYhL6nD7gBv"]},
        ),
    )
)
class SearchTermsView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, DET_KEYS)
        tenant = _tenant(body, request.auth)
        field = _text(body, "field", 255)
        value = _bytes(body.get("value"), "value")
        terms = search_terms(tenant=tenant, field=field, value=value, meta=_meta(body, self.via(request)))
        return _json({"terms": [_b64(t) for t in terms]})


__all__ = [
    "DeterministicDecryptView",
    "DeterministicEncryptView",
    "EpochView",
    "LeaseDeriveView",
    "LeaseView",
    "SearchTermsView",
    "UsageView",
]
