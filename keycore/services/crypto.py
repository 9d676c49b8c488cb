"""The crypto service: encrypt, decrypt and rekey documents for a tenant named on every call.

This is the one code path of the vendor's applications (through the REST API)
and of the portals and jobs (in process). Which key protects a tenant is this
module's business: it resolves the tenant, takes its current tenant key from
the in-process cache (unwrapping through the KMS on a miss), runs the envelope
crypto, and counts the use as a security event. Every failure is a typed error
from :mod:`keycore.errors`; batch forms report them per item.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keycore import errors
from keycore.crypto.envelope import decrypt_document, edek_key_version, encrypt_document, rewrap_edek
from keycore.models.keys import KEY_VERSION_MAX
from keycore.models.tenants import TenantStatus
from keycore.selectors import tenant_by_external_id
from keycore.services import keyuse
from keycore.services.keyring import current_key_version, tenant_cache, unwrap_tenant_key

MAX_FIELDS = 1000
MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class CallMeta:
    """Who asks and why; every call carries it and it reaches the security events.

    ``requesting_id``, ``label``, ``source_ip``, ``object_id``, ``request_id`` and ``custom`` are
    what the caller *claims*. ``via`` is what KeyCore knows: the API key that made the call and
    its peer address (:func:`keycore.services.keyuse.attribution`; None for calls inside KeyCore).

    Texts the database cannot store (NUL, lone surrogates) are refused here, when the call is
    made, with ``invalid-input`` — never later by the database, where they would be lost.
    """

    requesting_id: str
    label: str = ""
    source_ip: str = ""
    object_id: str = ""
    request_id: str = ""
    custom: Mapping[str, Any] = field(default_factory=dict)
    via: keyuse.Attribution | None = None

    def __post_init__(self) -> None:
        problems = meta_problems(self)
        if problems:
            raise errors.InvalidInput("The call's metadata has errors; see 'errors'.", field_errors=problems)


def text_problem(value: Any) -> str | None:
    """Why a recorded text cannot be stored (a NUL, a lone surrogate), or None."""
    if type(value) is not str:
        return None if value is None or type(value) in (bool, int, float) else "Expected a string."
    if "\x00" in value:
        return "NUL characters are not allowed."
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "Not valid Unicode text: it has a lone surrogate."
    return None


def meta_problems(meta: CallMeta) -> dict[str, list[str]]:
    """Field errors of a call's metadata (the texts and custom values that reach the security events)."""
    problems: dict[str, list[str]] = {}
    for name in ("requesting_id", "label", "source_ip", "object_id", "request_id"):
        value = getattr(meta, name)
        if type(value) is str and (not value.isascii() or "\x00" in value):
            problem = text_problem(value)
            if problem:
                problems[name] = [problem]
    custom = meta.custom
    if custom:
        if not isinstance(custom, Mapping):
            problems["custom"] = ["Expected an object of short values."]
        else:
            for name, value in custom.items():
                problem = text_problem(name) or text_problem(value)
                if problem is None and type(value) is float and not math.isfinite(value):
                    problem = "Numbers must be finite."
                if problem:
                    problems["custom"] = [f"{str(name)[:64]!r}: {problem}"]
                    break
    return problems


@dataclass(frozen=True, slots=True)
class TenantRef:
    """What the hot path needs of a tenant, cached per process (dropped on any epoch change)."""

    pk: int
    uid: uuid.UUID
    external_id: str
    status: str
    current_version: int | None
    #: the tenant's own bound on how long its unwrapped keys stay cached (None: the operator's)
    key_cache_seconds: int | None = None
    #: record each operation on its own (object id, request id, time), not only counts
    detailed_events: bool = False


@dataclass(frozen=True, slots=True)
class Encrypted:
    edek: bytes
    fields: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item of a batch: ``value`` when it worked, ``error`` (typed) when it did not."""

    value: Any = None
    error: errors.KeyCoreError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def resolve_tenant(external_id: str) -> TenantRef:
    """The tenant by its external id; TenantNotFound or TenantInactive otherwise."""
    if not isinstance(external_id, str) or not external_id:
        raise errors.InvalidInput("Name the tenant (its external id).", field_errors={"tenant": ["Required."]})
    cache = tenant_cache()
    ref = cache.get(external_id)
    if ref is None:
        generation = cache.generation
        tenant = tenant_by_external_id(
            external_id, only=("pk", "uid", "external_id", "status", "key_cache_seconds", "detailed_events")
        )
        try:
            version = current_key_version(tenant)
        except errors.KeyUnavailable:
            version = None
        ref = TenantRef(
            tenant.pk,
            tenant.uid,
            tenant.external_id,
            tenant.status,
            version,
            key_cache_seconds=tenant.key_cache_seconds,
            detailed_events=tenant.detailed_events,
        )
        cache.put(external_id, ref, generation=generation)
    if ref.status != TenantStatus.ACTIVE:
        raise errors.TenantInactive(f"Tenant {external_id} is {ref.status}; its data cannot be used.")
    return ref


def _record(ref: TenantRef, operation: str, meta: CallMeta, result: str, version: int | None, count: int = 1) -> None:
    # positional: this runs once per crypto operation (the recorder's hot path)
    if ref.detailed_events:
        keyuse.recorder.record_detail(
            ref.pk,
            operation,
            result,
            meta.label,
            meta.requesting_id,
            meta.source_ip,
            version,
            count,
            meta.via,
            meta.object_id,
            meta.request_id,
            meta.custom,
        )
    else:
        keyuse.recorder.record(
            ref.pk, operation, result, meta.label, meta.requesting_id, meta.source_ip, version, count, meta.via
        )


def _check_meta(meta: CallMeta) -> None:
    requesting_id = meta.requesting_id
    if not requesting_id or not isinstance(requesting_id, str) or requesting_id.isspace():
        raise errors.InvalidInput(
            "Say who asks: requesting_id is required on every crypto call.",
            field_errors={"requesting_id": ["Required."]},
        )


def _check_fields(fields: Mapping[str, bytes]) -> None:
    if type(fields) is not dict and not isinstance(fields, Mapping):  # the ABC check is slow; dicts are the norm
        raise errors.InvalidInput(
            "fields must map field names to bytes.", field_errors={"fields": ["Expected an object."]}
        )
    if len(fields) > MAX_FIELDS:
        raise errors.InvalidInput(
            f"At most {MAX_FIELDS} fields per document.", field_errors={"fields": ["Too many fields."]}
        )


_handle = unwrap_tenant_key


def _edek_version(edek: bytes) -> int:
    """The tenant-key version an EDEK names; one no tenant key can have is malformed data (400)."""
    version = edek_key_version(edek)
    if version > KEY_VERSION_MAX:
        raise errors.MalformedData(
            f"The EDEK names tenant key version {version}; no tenant key has a version above {KEY_VERSION_MAX}."
        )
    return version


def crypto_encrypt(*, tenant: str, fields: Mapping[str, bytes], meta: CallMeta) -> Encrypted:
    """Encrypt a document (field name → bytes) under the tenant's current key."""
    _check_meta(meta)
    _check_fields(fields)
    ref = resolve_tenant(tenant)
    version = ref.current_version
    try:
        if version is None:
            raise errors.KeyUnavailable(f"Tenant {tenant} has no active tenant key.")
        edek, out = encrypt_document(_handle(ref, version), fields)
    except errors.KeyCoreError as exc:
        _record(ref, "encrypt", meta, exc.code, version)
        raise
    _record(ref, "encrypt", meta, "ok", version)
    return Encrypted(edek, out)


def crypto_decrypt(*, tenant: str, edek: bytes, fields: Mapping[str, bytes], meta: CallMeta) -> dict[str, bytes]:
    """Decrypt a document; the EDEK names the tenant-key version it needs."""
    _check_meta(meta)
    _check_fields(fields)
    ref = resolve_tenant(tenant)
    version: int | None = None
    try:
        version = _edek_version(edek)
        plain = decrypt_document(_handle(ref, version), edek, fields)
    except errors.KeyCoreError as exc:
        _record(ref, "decrypt", meta, exc.code, version)
        raise
    _record(ref, "decrypt", meta, "ok", version)
    return plain


def crypto_rekey(
    *, tenant: str, edeks: Sequence[bytes], meta: CallMeta, new_tenant: str | None = None
) -> list[ItemResult]:
    """Rewrap EDEKs to the current key of ``tenant`` (or of ``new_tenant``, moving data between tenants).

    Field ciphertexts are untouched. Results are per EDEK, in order.
    """
    _check_meta(meta)
    if len(edeks) > MAX_BATCH:
        raise errors.InvalidInput(f"At most {MAX_BATCH} EDEKs per call.", field_errors={"edeks": ["Too many."]})
    source = resolve_tenant(tenant)
    target = resolve_tenant(new_tenant) if new_tenant and new_tenant != tenant else source
    if target.current_version is None:
        raise errors.KeyUnavailable(f"Tenant {target.external_id} has no active tenant key.")
    new_handle = _handle(target, target.current_version)
    results: list[ItemResult] = []
    moved: dict[int, int] = {}
    for edek in edeks:
        version = None
        try:
            version = _edek_version(edek)
            results.append(ItemResult(rewrap_edek(edek, _handle(source, version), new_handle)))
            moved[version] = moved.get(version, 0) + 1
        except errors.KeyCoreError as exc:
            _record(source, "rekey", meta, exc.code, version)
            results.append(ItemResult(error=exc))
    # documents leave their old versions and arrive under the current one (counted per version: docs/events.md)
    for version, count in moved.items():
        _record(source, "rekey", meta, "ok", version, count=count)
    if moved:
        _record(target, "rekey_in", meta, "ok", target.current_version, count=sum(moved.values()))
    return results


@dataclass(frozen=True, slots=True)
class EncryptItem:
    tenant: str
    fields: Mapping[str, bytes]
    meta: CallMeta


@dataclass(frozen=True, slots=True)
class DecryptItem:
    tenant: str
    edek: bytes
    fields: Mapping[str, bytes]
    meta: CallMeta


def crypto_batch_encrypt(items: Sequence[EncryptItem]) -> list[ItemResult]:
    """Encrypt up to MAX_BATCH documents (any tenants); one failure does not stop the others."""
    if len(items) > MAX_BATCH:
        raise errors.InvalidInput(f"At most {MAX_BATCH} items per batch.", field_errors={"items": ["Too many."]})
    out = []
    for item in items:
        try:
            out.append(ItemResult(crypto_encrypt(tenant=item.tenant, fields=item.fields, meta=item.meta)))
        except errors.KeyCoreError as exc:
            out.append(ItemResult(error=exc))
    return out


def crypto_batch_decrypt(items: Sequence[DecryptItem]) -> list[ItemResult]:
    if len(items) > MAX_BATCH:
        raise errors.InvalidInput(f"At most {MAX_BATCH} items per batch.", field_errors={"items": ["Too many."]})
    out = []
    for item in items:
        try:
            out.append(
                ItemResult(crypto_decrypt(tenant=item.tenant, edek=item.edek, fields=item.fields, meta=item.meta))
            )
        except errors.KeyCoreError as exc:
            out.append(ItemResult(error=exc))
    return out
