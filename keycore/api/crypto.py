"""The crypto API: what the vendor's applications call to encrypt, decrypt and rekey tenant data.

This is the hot path. DRF does authentication (with the in-process key cache),
the scope check, throttling, errors and the schema; the bodies are parsed and
validated by hand (``json.loads`` and strict base64), because DRF's serializers
cost more per 1,000-item batch than the cryptography does. The serializers below
exist for the OpenAPI document only.

Bytes travel as standard base64 with padding (RFC 4648 §4). Every call names
who asks (``requesting_id``, required) and may carry ``label``, ``source_ip``
(the application's end user), ``object_id``, ``request_id`` and ``custom`` (a
flat object of up to 20 short values). The security events record them as what
the caller *claims*, beside what KeyCore saw: the API key of the call and its
peer address. ``object_id``, ``request_id`` and ``custom`` are recorded for
tenants in detailed mode (docs/events.md). Batch calls take these at the top as
defaults for their items, and any item may override them.

A key limited to some tenants gets ``tenant-not-found`` (404) for every other
tenant, exactly as for a tenant that does not exist: it learns nothing about
which tenants exist.
"""

from __future__ import annotations

import binascii
import functools
import json
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from keycore import errors
from keycore.api import examples as ex
from keycore.api.authentication import tenant_allowed
from keycore.api.parsers import loads
from keycore.api.problems import error_body
from keycore.api.serializers import Base64Field, ProblemSerializer
from keycore.models.api import ApiScope
from keycore.services.audit import client_ip, normalise_ip
from keycore.services.crypto import (
    MAX_BATCH,
    MAX_FIELDS,
    CallMeta,
    DecryptItem,
    EncryptItem,
    crypto_batch_decrypt,
    crypto_batch_encrypt,
    crypto_decrypt,
    crypto_encrypt,
    crypto_rekey,
    text_problem,
)
from keycore.services.keyuse import Attribution, attribution

_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64
_MISSING = object()
#: the call's metadata: name → longest accepted value
META_LIMITS = {"requesting_id": 200, "label": 100, "object_id": 200, "request_id": 200}
META_KEYS = frozenset({*META_LIMITS, "source_ip", "custom"})
CUSTOM_MAX_ENTRIES = 20
CUSTOM_MAX_KEY = 64
CUSTOM_MAX_VALUE = 500
TENANT_MAX = 128
#: the same few addresses call all day: parsing each with ipaddress is the slowest step of small calls
PEER_CACHE_SIZE = 4096
_peers: dict[tuple, str] = {}
_normalise_ip = functools.lru_cache(maxsize=PEER_CACHE_SIZE)(normalise_ip)

ENCRYPT_KEYS = frozenset({"tenant", "fields"}) | META_KEYS
DECRYPT_KEYS = frozenset({"tenant", "edek", "fields"}) | META_KEYS
REKEY_KEYS = frozenset({"tenant", "edeks", "new_tenant"}) | META_KEYS
BATCH_KEYS = frozenset({"items"}) | META_KEYS
_ITEM_NO_META = frozenset({"tenant", "fields", "edek"})


# --- parsing ------------------------------------------------------------------------------------


def read_object(request) -> dict[str, Any]:
    """The JSON object in the body; 415 for another content type, 400 for anything but a JSON object."""
    media = request.META.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise exceptions.UnsupportedMediaType(media or "(none)", detail="Send the body as application/json.")
    data = loads(request.body)
    if type(data) is not dict:
        raise exceptions.ParseError("The body must be a JSON object.")
    return data


def _invalid(field: str, message: str, detail: str | None = None) -> errors.InvalidInput:
    return errors.InvalidInput(detail or f"{field}: {message}", field_errors={field: [message]})


def _check_keys(obj: dict, allowed: frozenset) -> None:
    if not allowed.issuperset(obj):
        unknown = sorted(k for k in obj if k not in allowed)
        raise errors.InvalidInput(
            f"Unknown member(s): {', '.join(unknown)}.", field_errors={k: ["Unknown member."] for k in unknown}
        )


def _tenant(obj: dict, key, name: str = "tenant") -> str:
    value = obj.get(name)
    if type(value) is not str or not value:
        raise _invalid(name, "Required: the tenant's external id.")
    if not value.isascii() or "\x00" in value:
        problem = text_problem(value)  # a NUL or lone surrogate would reach the database's tenant lookup
        if problem:
            raise _invalid(name, problem)
    if len(value) > TENANT_MAX or not tenant_allowed(key, value):
        # the same answer as for a tenant that does not exist: a limited key learns nothing
        raise errors.TenantNotFound(f"No tenant has the external id {value!r}.")
    return value


def _bytes(value, name: str) -> bytes:
    try:
        return _a2b(value, strict_mode=True)
    except (binascii.Error, ValueError, TypeError):
        raise _invalid(name, "Expected standard base64 with padding.") from None


def _fields(value, name: str = "fields") -> dict[str, bytes]:
    if type(value) is not dict:
        raise _invalid(name, "Expected an object of field name → base64.")
    if len(value) > MAX_FIELDS:
        raise _invalid(name, f"At most {MAX_FIELDS} fields per document.")
    out = {}
    bad = []
    for field, text in value.items():
        try:
            out[field] = _a2b(text, strict_mode=True)
        except (binascii.Error, ValueError, TypeError):
            bad.append(field)
    if bad:
        raise errors.InvalidInput(
            f"Not standard base64: {', '.join(bad[:10])}.",
            field_errors={f"{name}.{field}": ["Expected standard base64 with padding."] for field in bad},
        )
    return out


def _meta(obj: dict, via: Attribution | None, base: CallMeta | None = None, *, required: bool = True) -> CallMeta:
    """The call's metadata from ``obj``; missing members come from ``base`` (batch defaults) or are empty.

    The members are what the caller claims (``source_ip`` included: empty when not given);
    ``via`` is what KeyCore saw — the API key and the peer address — recorded beside them.
    """
    values: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for name, limit in META_LIMITS.items():
        value = obj.get(name, _MISSING)
        if value is _MISSING or value is None:
            values[name] = getattr(base, name) if base is not None else ""
        elif type(value) is not str:
            problems[name] = ["Expected a string."]
        elif len(value) > limit:
            problems[name] = [f"At most {limit} characters."]
        else:
            values[name] = value
    ip = obj.get("source_ip", _MISSING)
    if ip is _MISSING or ip is None or ip == "":
        values["source_ip"] = base.source_ip if base is not None else ""
    elif type(ip) is not str or len(ip) > 64:
        problems["source_ip"] = ["Expected an IPv4 or IPv6 address."]
    else:
        canonical = _normalise_ip(ip)
        if canonical is None:
            problems["source_ip"] = ["Expected an IPv4 or IPv6 address."]
        else:
            values["source_ip"] = canonical
    custom = obj.get("custom", _MISSING)
    if custom is _MISSING or custom is None:
        values["custom"] = base.custom if base is not None else {}
    else:
        message = _check_custom(custom)
        if message:
            problems["custom"] = [message]
        else:
            values["custom"] = custom
    if required and "requesting_id" not in problems and not values["requesting_id"].strip():
        problems["requesting_id"] = ["Required: say who asks (a service or user id)."]
    if problems:
        raise errors.InvalidInput("The call's metadata has errors; see 'errors'.", field_errors=problems)
    return CallMeta(**values, via=via)  # refuses texts no database can store (NUL, lone surrogates)


def _check_custom(custom) -> str | None:
    if type(custom) is not dict:
        return "Expected an object of short values."
    if len(custom) > CUSTOM_MAX_ENTRIES:
        return f"At most {CUSTOM_MAX_ENTRIES} entries."
    for name, value in custom.items():
        if len(name) > CUSTOM_MAX_KEY:
            return f"Names of at most {CUSTOM_MAX_KEY} characters."
        if value is not None and type(value) not in (str, int, float, bool):
            return "Values must be strings, numbers, booleans or null."
        if type(value) is str and len(value) > CUSTOM_MAX_VALUE:
            return f"Values of at most {CUSTOM_MAX_VALUE} characters."
    return None


def _items(body: dict) -> list:
    items = body.get("items")
    if type(items) is not list or not items:
        raise _invalid("items", "Required: a non-empty array.")
    if len(items) > MAX_BATCH:
        raise _invalid("items", f"At most {MAX_BATCH} items per batch.")
    return items


def _b64(data: bytes) -> str:
    return _b2a(data, newline=False).decode("ascii")


def _json(payload: dict) -> HttpResponse:
    return HttpResponse(json.dumps(payload, separators=(",", ":")), content_type="application/json")


# --- schema (documentation only) ---------------------------------------------------------------------


def _meta_fields() -> dict:
    return {
        "requesting_id": serializers.CharField(max_length=200, help_text="Who asks: a service or user id. Required."),
        "label": serializers.CharField(max_length=100, required=False, help_text="What the data is, e.g. 'invoices'."),
        "source_ip": serializers.IPAddressField(
            required=False, help_text="The end user's address, as claimed (the peer address is recorded too)."
        ),
        "object_id": serializers.CharField(max_length=200, required=False),
        "request_id": serializers.CharField(max_length=200, required=False),
        "custom": serializers.DictField(required=False, help_text="Up to 20 short values for the security events."),
    }


def _fields_schema(help_text: str) -> serializers.DictField:
    return serializers.DictField(child=Base64Field(), help_text=help_text)


_ENCRYPTED = {"edek": Base64Field(help_text="Store it with the document."), "fields": _fields_schema("Ciphertexts.")}
PROBLEMS = {
    400: OpenApiResponse(ProblemSerializer, description="Malformed input, base64 or ciphertext."),
    404: OpenApiResponse(ProblemSerializer, description="Unknown tenant (or one this key may not use)."),
    409: OpenApiResponse(ProblemSerializer, description="Tenant inactive, or its key revoked/disabled."),
    410: OpenApiResponse(ProblemSerializer, description="The tenant key version was destroyed."),
    422: OpenApiResponse(ProblemSerializer, description="Tampered data, or data of another tenant."),
    502: OpenApiResponse(ProblemSerializer, description="The tenant's KMS refused (access denied, key missing)."),
    503: OpenApiResponse(ProblemSerializer, description="The tenant's KMS is unreachable; retry after Retry-After."),
}


def _post(**kwargs):
    return extend_schema_view(post=extend_schema(**kwargs))


class CryptoView(APIView):
    """DRF's pipeline (authentication, scope, throttle, problems), minus the per-call set-up a hot path can skip.

    Authenticators and parsers hold no per-request state, so one instance of each
    serves every call; permissions and throttles do (a message, a wait) and are
    made per call as DRF does.
    """

    required_scope = ApiScope.CRYPTO.value
    _renderer = JSONRenderer()
    _authenticators = None
    _parsers = None

    def perform_content_negotiation(self, request, force=False):
        # JSON only, whatever Accept says (see keycore.api.negotiation), without parsing Accept per call
        return self._renderer, self._renderer.media_type

    def get_authenticators(self):
        if CryptoView._authenticators is None:
            CryptoView._authenticators = super().get_authenticators()
        return CryptoView._authenticators

    def get_parsers(self):
        if CryptoView._parsers is None:
            CryptoView._parsers = super().get_parsers()
        return CryptoView._parsers

    @property
    def default_response_headers(self):
        return {"Allow": "POST"}

    def via(self, request) -> Attribution | None:
        """Who really calls: the API key of the request and its peer address (not what the body claims)."""
        meta = request._request.META
        key = (meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"), settings.KEYCORE_TRUSTED_PROXY_COUNT)
        ip = _peers.get(key)
        if ip is None:
            if len(_peers) > PEER_CACHE_SIZE:
                _peers.clear()
            ip = _peers[key] = client_ip(request) or ""
        return attribution(request.auth, ip)


# --- endpoints ---------------------------------------------------------------------------------------------


@_post(
    operation_id="crypto_encrypt",
    summary="Encrypt a document for a tenant",
    description="A fresh data key per document; each field is encrypted under it and the data key is wrapped by "
    "the tenant's current key into the EDEK. Store the EDEK with the fields.",
    tags=["crypto"],
    request=inline_serializer(
        "Encrypt",
        {"tenant": serializers.CharField(), "fields": _fields_schema("Field name → plaintext."), **_meta_fields()},
    ),
    responses={200: inline_serializer("EncryptResponse", _ENCRYPTED), **PROBLEMS},
    examples=[ex.ENCRYPT_REQUEST, ex.ENCRYPT_RESPONSE],
)
class EncryptView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, ENCRYPT_KEYS)
        tenant = _tenant(body, request.auth)
        fields = _fields(body.get("fields"))
        done = crypto_encrypt(tenant=tenant, fields=fields, meta=_meta(body, self.via(request)))
        return _json({"edek": _b64(done.edek), "fields": {name: _b64(value) for name, value in done.fields.items()}})


@_post(
    operation_id="crypto_decrypt",
    summary="Decrypt a document of a tenant",
    description="Give the EDEK and any subset of the document's fields.",
    tags=["crypto"],
    request=inline_serializer(
        "Decrypt",
        {
            "tenant": serializers.CharField(),
            "edek": Base64Field(),
            "fields": _fields_schema("Field name → ciphertext."),
            **_meta_fields(),
        },
    ),
    responses={200: inline_serializer("DecryptResponse", {"fields": _fields_schema("Plaintexts.")}), **PROBLEMS},
    examples=[ex.DECRYPT_REQUEST, ex.DECRYPT_RESPONSE],
)
class DecryptView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, DECRYPT_KEYS)
        tenant = _tenant(body, request.auth)
        edek = _bytes(body.get("edek"), "edek")
        fields = _fields(body.get("fields"))
        plain = crypto_decrypt(tenant=tenant, edek=edek, fields=fields, meta=_meta(body, self.via(request)))
        return _json({"fields": {name: _b64(value) for name, value in plain.items()}})


@_post(
    operation_id="crypto_rekey",
    summary="Rewrap EDEKs to a tenant's current key",
    description="Field ciphertexts are untouched: only the EDEKs change. With `new_tenant`, documents move to "
    "another tenant. Results are in order; an EDEK that cannot be rewrapped is `null` and explained in `errors`.",
    tags=["crypto"],
    request=inline_serializer(
        "Rekey",
        {
            "tenant": serializers.CharField(),
            "edeks": serializers.ListField(child=Base64Field(), max_length=MAX_BATCH),
            "new_tenant": serializers.CharField(required=False, allow_null=True),
            **_meta_fields(),
        },
    ),
    responses={
        200: inline_serializer(
            "RekeyResponse",
            {
                "edeks": serializers.ListField(child=Base64Field(allow_null=True)),
                "errors": serializers.ListField(
                    child=inline_serializer(
                        "RekeyError", {"index": serializers.IntegerField(), **ProblemSerializer().get_fields()}
                    )
                ),
            },
        ),
        **PROBLEMS,
    },
    examples=[ex.REKEY_REQUEST, ex.REKEY_RESPONSE],
)
class RekeyView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, REKEY_KEYS)
        key = request.auth
        tenant = _tenant(body, key)
        new_tenant = _tenant(body, key, "new_tenant") if body.get("new_tenant") is not None else None
        edeks = body.get("edeks")
        if type(edeks) is not list or not edeks:
            raise _invalid("edeks", "Required: a non-empty array of base64 EDEKs.")
        if len(edeks) > MAX_BATCH:
            raise _invalid("edeks", f"At most {MAX_BATCH} EDEKs per call.")
        meta = _meta(body, self.via(request))
        out: list[str | None] = [None] * len(edeks)
        problems = []
        decoded, positions = [], []
        for index, text in enumerate(edeks):
            try:
                decoded.append(_bytes(text, "edek"))
                positions.append(index)
            except errors.KeyCoreError as exc:
                problems.append({"index": index, **error_body(exc)})
        if decoded:
            results = crypto_rekey(tenant=tenant, edeks=decoded, meta=meta, new_tenant=new_tenant)
            for index, result in zip(positions, results, strict=True):
                if result.ok:
                    out[index] = _b64(result.value)
                else:
                    problems.append({"index": index, **error_body(result.error)})
        problems.sort(key=lambda p: p["index"])
        return _json({"edeks": out, "errors": problems})


def _batch_schema(name: str, item: dict, result: dict, request_example, response_example, summary: str):
    return _post(
        operation_id=f"crypto_{name.replace('-', '_')}",
        summary=summary,
        description=f"Up to {MAX_BATCH:,} documents of any tenants. Metadata at the top applies to every item "
        "unless the item sets its own. One item's failure does not stop the others: each result is either the "
        "item's output or `error`, a problem object.",
        tags=["crypto"],
        request=inline_serializer(
            f"{name.title().replace('-', '')}",
            {
                "items": serializers.ListField(
                    child=inline_serializer(f"{name.title().replace('-', '')}Item", item), max_length=MAX_BATCH
                ),
                **{k: v for k, v in _meta_fields().items() if k != "requesting_id"},
                "requesting_id": serializers.CharField(
                    max_length=200, required=False, help_text="Default for items that do not name it."
                ),
            },
        ),
        responses={
            200: inline_serializer(
                f"{name.title().replace('-', '')}Response",
                {
                    "succeeded": serializers.IntegerField(),
                    "failed": serializers.IntegerField(),
                    "results": serializers.ListField(child=result),
                },
            ),
            400: PROBLEMS[400],
            404: PROBLEMS[404],
        },
        examples=[request_example, response_example],
    )


def _plain_item(tenant, fields, allowed) -> bool:
    """Whether a batch item's tenant and fields pass as they are, for the inline path of the batch views.

    Anything this does not accept goes the careful way (``_tenant``, ``_fields``), which says what is wrong.
    """
    return (
        type(tenant) is str
        and 0 < len(tenant) <= TENANT_MAX
        and tenant.isascii()
        and "\x00" not in tenant
        and (allowed is None or tenant in allowed)
        and type(fields) is dict
        and len(fields) <= MAX_FIELDS
    )


_OPTIONAL_META = {k: v for k, v in _meta_fields().items() if k != "requesting_id"}
_OPTIONAL_META["requesting_id"] = serializers.CharField(max_length=200, required=False)


@_batch_schema(
    "batch-encrypt",
    {"tenant": serializers.CharField(), "fields": _fields_schema("Field name → plaintext."), **_OPTIONAL_META},
    inline_serializer(
        "BatchEncryptResult",
        {
            "edek": Base64Field(required=False, help_text="When the item succeeded."),
            "fields": serializers.DictField(child=Base64Field(), required=False, help_text="Ciphertexts."),
            "error": ProblemSerializer(required=False, help_text="When the item failed."),
        },
    ),
    ex.BATCH_ENCRYPT_REQUEST,
    ex.BATCH_ENCRYPT_RESPONSE,
    "Encrypt up to 1,000 documents",
)
class BatchEncryptView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, BATCH_KEYS)
        items = _items(body)
        key = request.auth
        via = self.via(request)
        base = _meta(body, via, required=False)
        results: list[dict | None] = [None] * len(items)
        work: list[EncryptItem] = []
        positions: list[int] = []
        allowed = getattr(key, "allowed_tenants", None)
        quick_meta = base if base.requesting_id else None
        for index, item in enumerate(items):
            # the common item, {"tenant", "fields"} with the batch's metadata, checked inline; anything else (or
            # anything wrong) takes the careful path below, which says exactly what is wrong
            if quick_meta is not None and type(item) is dict and len(item) == 2:
                tenant, fields = item.get("tenant"), item.get("fields")
                if _plain_item(tenant, fields, allowed):
                    try:
                        decoded = {name: _a2b(text, strict_mode=True) for name, text in fields.items()}
                    except (binascii.Error, ValueError, TypeError):
                        pass
                    else:
                        work.append(EncryptItem(tenant, decoded, quick_meta))
                        positions.append(index)
                        continue
            try:
                if type(item) is not dict:
                    raise _invalid("__all__", "Expected an object.", "Each item must be an object.")
                _check_keys(item, ENCRYPT_KEYS)
                tenant = _tenant(item, key)
                fields = _fields(item.get("fields"))
                meta = base if _ITEM_NO_META.issuperset(item) and base.requesting_id else _meta(item, via, base)
            except errors.KeyCoreError as exc:
                results[index] = {"error": error_body(exc)}
                continue
            work.append(EncryptItem(tenant, fields, meta))
            positions.append(index)
        b2a = _b2a
        for index, result in zip(positions, crypto_batch_encrypt(work), strict=True):
            if result.error is None:
                done = result.value
                results[index] = {
                    "edek": b2a(done.edek, newline=False).decode("ascii"),
                    "fields": {n: b2a(v, newline=False).decode("ascii") for n, v in done.fields.items()},
                }
            else:
                results[index] = {"error": error_body(result.error)}
        failed = sum(1 for r in results if "error" in r)
        return _json({"succeeded": len(results) - failed, "failed": failed, "results": results})


@_batch_schema(
    "batch-decrypt",
    {
        "tenant": serializers.CharField(),
        "edek": Base64Field(),
        "fields": _fields_schema("Field name → ciphertext."),
        **_OPTIONAL_META,
    },
    inline_serializer(
        "BatchDecryptResult",
        {
            "fields": serializers.DictField(child=Base64Field(), required=False, help_text="Plaintexts."),
            "error": ProblemSerializer(required=False, help_text="When the item failed."),
        },
    ),
    ex.BATCH_DECRYPT_REQUEST,
    ex.BATCH_DECRYPT_RESPONSE,
    "Decrypt up to 1,000 documents",
)
class BatchDecryptView(CryptoView):
    def post(self, request):
        body = read_object(request)
        _check_keys(body, BATCH_KEYS)
        items = _items(body)
        key = request.auth
        via = self.via(request)
        base = _meta(body, via, required=False)
        results: list[dict | None] = [None] * len(items)
        work: list[DecryptItem] = []
        positions: list[int] = []
        allowed = getattr(key, "allowed_tenants", None)
        quick_meta = base if base.requesting_id else None
        for index, item in enumerate(items):
            # as in batch-encrypt: {"tenant", "edek", "fields"} inline, anything else the careful way
            if quick_meta is not None and type(item) is dict and len(item) == 3:
                tenant, edek, fields = item.get("tenant"), item.get("edek"), item.get("fields")
                if _plain_item(tenant, fields, allowed):
                    try:
                        raw_edek = _a2b(edek, strict_mode=True)
                        decoded = {name: _a2b(text, strict_mode=True) for name, text in fields.items()}
                    except (binascii.Error, ValueError, TypeError):
                        pass
                    else:
                        work.append(DecryptItem(tenant, raw_edek, decoded, quick_meta))
                        positions.append(index)
                        continue
            try:
                if type(item) is not dict:
                    raise _invalid("__all__", "Expected an object.", "Each item must be an object.")
                _check_keys(item, DECRYPT_KEYS)
                tenant = _tenant(item, key)
                edek = _bytes(item.get("edek"), "edek")
                fields = _fields(item.get("fields"))
                meta = base if _ITEM_NO_META.issuperset(item) and base.requesting_id else _meta(item, via, base)
            except errors.KeyCoreError as exc:
                results[index] = {"error": error_body(exc)}
                continue
            work.append(DecryptItem(tenant, edek, fields, meta))
            positions.append(index)
        b2a = _b2a
        for index, result in zip(positions, crypto_batch_decrypt(work), strict=True):
            if result.error is None:
                results[index] = {"fields": {n: b2a(v, newline=False).decode("ascii") for n, v in result.value.items()}}
            else:
                results[index] = {"error": error_body(result.error)}
        failed = sum(1 for r in results if "error" in r)
        return _json({"succeeded": len(results) - failed, "failed": failed, "results": results})
