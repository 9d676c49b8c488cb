"""Leases for the in-process SDK: derived keys handed to the vendor's application, never tenant keys.

A *lease* is a random 16-byte id and the key HKDF derives from a tenant key version and that id
(:func:`keycore.crypto.envelope.derive_lease_key`). The SDK encrypts documents locally under it
(EDEK v2 names the version and the lease), so KeyCore never sees those plaintexts; it takes a new
lease after 2^24 wraps (``LeaseKey.max_wraps``), as KeyCore's own processes do with theirs. A lease lives
at most ``KEYCORE_SDK_LEASE_SECONDS`` (300 s), or the tenant's own key-cache bound if shorter
(``Tenant.key_cache_seconds``, a setting the vendor cannot weaken).

Every issue — a new lease for encrypting, or the key of a known lease id for decrypting one of its
documents — passes every check a crypto call passes (tenant active, key neither revoked nor
disabled, version not destroyed), against the revocation epoch read *now* rather than at the last
poll, and is written to the tenant's audit trail (``sdk.lease_issued``: which API key, from where,
which process, which version, for how long). The SDK follows :func:`revocation_epoch` once a second
and drops its leases when it moves.

The SDK reports what it did with its leases (:func:`usage_record`) at least once a second; the uses
go to the same recorder as the crypto API's, attributed to the reporting API key and address.
Reports can only add uses that do not move documents between versions: a rekey goes through
:func:`keycore.services.crypto.crypto_rekey` with the EDEKs themselves, so a claimed report can never
make a version look drained.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from keycore import errors
from keycore.crypto.formats import LEASE_ID_BYTES, deterministic_key_version
from keycore.models import TenantKey
from keycore.models.keys import KEY_VERSION_MAX, TenantKeyState
from keycore.services import keyuse
from keycore.services.audit import Actor, audit_record
from keycore.services.crypto import CallMeta, TenantRef, _check_meta, _handle, _record, resolve_tenant, text_problem
from keycore.services.keyring import read_epoch, refresh_epoch

#: operations an SDK may report: none of them moves a document between versions
REPORTABLE_OPERATIONS = frozenset({"encrypt", "decrypt", "det_encrypt", "det_decrypt", "search"})
MAX_REPORTS = 1000
MAX_REPORTED_COUNT = 10_000_000
PROCESS_MAX = 200


@dataclass(frozen=True, slots=True)
class Lease:
    tenant: str
    tenant_uid: bytes
    key_version: int
    lease_id: bytes
    lease_key: bytes
    ttl_seconds: float
    epoch: int
    #: the deterministic base key of every version still in use (version → key), for search terms
    deterministic: dict[int, bytes]
    current_version: int | None

    def __repr__(self) -> str:  # never the keys
        return f"Lease({self.tenant!r}, v{self.key_version}, {self.lease_id.hex()}, {self.ttl_seconds:g}s)"


def lease_ttl(ref: TenantRef) -> float:
    """The operator's lease bound, or the tenant's own key-cache bound if shorter."""
    default = settings.KEYCORE_SDK_LEASE_SECONDS
    own = ref.key_cache_seconds
    return min(default, float(own)) if own else default


def versions_in_use(ref: TenantRef) -> list[int]:
    """Versions data may still be under: the current one and every other not destroyed that still counts
    documents. Newest first. Once a version is drained and retired, it is not listed any more."""
    rows = TenantKey.objects.filter(tenant_id=ref.pk).exclude(state=TenantKeyState.DESTROYED)
    found = [
        version
        for version, documents in rows.values_list("version", "documents")
        if version == ref.current_version or documents > 0
    ]
    return sorted(found, reverse=True)


def _fresh(tenant: str) -> tuple[TenantRef, int]:
    """The tenant after the revocation epoch was read now: a key revoked a moment ago is never leased."""
    epoch = refresh_epoch()
    return resolve_tenant(tenant), epoch


def _audit(actor: Actor, ref: TenantRef, lease: Lease, process: str, why: str) -> None:
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="sdk.lease_issued",
            tenant=ref,
            target_type="lease",
            target_id=lease.lease_id.hex(),
            target_repr=f"lease {lease.lease_id.hex()[:12]}… of key v{lease.key_version}",
            changes={
                "lease_id": lease.lease_id.hex(),
                "key_version": lease.key_version,
                "ttl_seconds": lease.ttl_seconds,
                "process": process,
                "for": why,
                "api_key": actor.api_key.prefix if actor.api_key is not None else "",
            },
        )


def _check_process(process: str) -> str:
    if not isinstance(process, str) or not process.strip():
        raise errors.InvalidInput("Say which process asks.", field_errors={"process": ["Required."]})
    problem = text_problem(process)
    if problem or len(process) > PROCESS_MAX:
        raise errors.InvalidInput(
            "process: " + (problem or f"At most {PROCESS_MAX} characters."),
            field_errors={"process": [problem or f"At most {PROCESS_MAX} characters."]},
        )
    return process


def _lease(ref: TenantRef, version: int, lease_id: bytes, epoch: int, *, with_deterministic: bool) -> Lease:
    handle = _handle(ref, version)  # KeyRevoked, KeyDisabled, KeyDestroyed, the KMS's errors
    deterministic: dict[int, bytes] = {}
    if with_deterministic:
        for other in versions_in_use(ref):
            deterministic[other] = _handle(ref, other).deterministic_base()
    return Lease(
        ref.external_id,
        ref.uid.bytes,
        version,
        lease_id,
        handle.lease_key(lease_id),
        lease_ttl(ref),
        epoch,
        deterministic,
        ref.current_version,
    )


def lease_issue(*, actor: Actor, tenant: str, process: str) -> Lease:
    """A new lease of the tenant's current key version, for encrypting (and decrypting what it encrypts)."""
    process = _check_process(process)
    ref, epoch = _fresh(tenant)
    if ref.current_version is None:
        raise errors.KeyUnavailable(f"Tenant {tenant} has no active tenant key.")
    lease = _lease(ref, ref.current_version, os.urandom(LEASE_ID_BYTES), epoch, with_deterministic=True)
    _audit(actor, ref, lease, process, "encrypt")
    return lease


def lease_derive(*, actor: Actor, tenant: str, key_version: int, lease_id: bytes, process: str) -> Lease:
    """The key of a lease an EDEK names (another process's, or a KeyCore process's own), to decrypt its documents."""
    process = _check_process(process)
    if type(key_version) is not int or not 0 <= key_version <= KEY_VERSION_MAX:
        raise errors.InvalidInput(
            f"key_version: an integer 0..{KEY_VERSION_MAX}.", field_errors={"key_version": ["Out of range."]}
        )
    if type(lease_id) is not bytes or len(lease_id) != LEASE_ID_BYTES:
        raise errors.InvalidInput(
            f"lease_id: {LEASE_ID_BYTES} bytes.", field_errors={"lease_id": [f"Expected {LEASE_ID_BYTES} bytes."]}
        )
    ref, epoch = _fresh(tenant)
    if not TenantKey.objects.filter(tenant_id=ref.pk, version=key_version).exists():
        raise errors.AuthenticationFailed(
            f"No tenant key v{key_version} exists for tenant {tenant}: "
            "the data belongs to another tenant or is corrupt."
        )
    lease = _lease(ref, key_version, lease_id, epoch, with_deterministic=False)
    _audit(actor, ref, lease, process, "decrypt")
    return lease


def revocation_epoch() -> int:
    """The revocation epoch as the database has it now (what the SDK polls)."""
    return read_epoch()


@dataclass(frozen=True, slots=True)
class UsageReport:
    tenant: str
    operation: str
    count: int
    key_version: int | None = None
    result: str = "ok"
    label: str = ""
    requesting_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageResult:
    recorded: int
    #: indexes of reports whose tenant does not exist, is not active, or may not be used by this key
    skipped: list[int]


def usage_record(*, actor: Actor, reports: Sequence[UsageReport | None]) -> UsageResult:
    """Count uses an SDK made of its leases, attributed to the reporting API key and address.

    A malformed report refuses the whole call (400: the client has a bug). A report for a tenant that
    does not exist or is not active (or that the API passes as None: a tenant this key may not use) is
    skipped and listed, so one removed tenant never holds back the counts of every other.
    """
    if len(reports) > MAX_REPORTS:
        raise errors.InvalidInput(f"At most {MAX_REPORTS} reports per call.", field_errors={"reports": ["Too many."]})
    checked: list[tuple[int, UsageReport]] = []
    for index, report in enumerate(reports):
        if report is None:
            continue
        where = f"reports.{index}"
        if report.operation not in REPORTABLE_OPERATIONS:
            raise errors.InvalidInput(
                f"{where}.operation: one of {', '.join(sorted(REPORTABLE_OPERATIONS))} "
                "(rekeys go through crypto/rekey).",
                field_errors={f"{where}.operation": ["Not a reportable operation."]},
            )
        if type(report.count) is not int or not 0 < report.count <= MAX_REPORTED_COUNT:
            raise errors.InvalidInput(
                f"{where}.count: 1..{MAX_REPORTED_COUNT}.", field_errors={f"{where}.count": ["Out of range."]}
            )
        if report.key_version is not None and (
            type(report.key_version) is not int or not 0 <= report.key_version <= KEY_VERSION_MAX
        ):
            raise errors.InvalidInput(
                f"{where}.key_version: 0..{KEY_VERSION_MAX}.", field_errors={f"{where}.key_version": ["Out of range."]}
            )
        for name, limit in (("result", keyuse.RESULT_MAX), ("label", keyuse.LABEL_MAX), ("requesting_id", 200)):
            value = getattr(report, name)
            problem = text_problem(value) or (f"At most {limit} characters." if len(value) > limit else None)
            if problem:
                raise errors.InvalidInput(f"{where}.{name}: {problem}", field_errors={f"{where}.{name}": [problem]})
        checked.append((index, report))
    via = keyuse.attribution(actor.api_key, actor.source_ip)
    total = 0
    skipped = [index for index, report in enumerate(reports) if report is None]
    for index, report in checked:
        try:
            ref = resolve_tenant(report.tenant)  # a report cannot write into another tenant's trail
        except (errors.TenantNotFound, errors.TenantInactive):
            skipped.append(index)
            continue
        _record(
            ref,
            report.operation,
            CallMeta(report.requesting_id or "sdk", label=report.label, via=via),
            report.result,
            report.key_version,
            report.count,
        )
        total += report.count
    return UsageResult(total, sorted(skipped))


# --- deterministic encryption through the API (the same bytes as the SDK's) ------------------------------


def deterministic_encrypt(*, tenant: str, field: str, value: bytes, meta: CallMeta) -> bytes:
    """AES-SIV of ``value`` for ``field`` under the tenant's current key version: equal values, equal bytes."""
    _check_meta(meta)
    ref = resolve_tenant(tenant)
    version = ref.current_version
    try:
        if version is None:
            raise errors.KeyUnavailable(f"Tenant {tenant} has no active tenant key.")
        blob = _handle(ref, version).deterministic().encrypt(field, value)
    except errors.KeyCoreError as exc:
        _record(ref, "det_encrypt", meta, exc.code, version)
        raise
    _record(ref, "det_encrypt", meta, "ok", version)
    return blob


def search_terms(*, tenant: str, field: str, value: bytes, meta: CallMeta) -> list[bytes]:
    """The deterministic ciphertexts of ``value`` under every version still in use, newest first
    (for ``WHERE column IN (...)`` while a rotation drains the older versions)."""
    _check_meta(meta)
    ref = resolve_tenant(tenant)
    terms = []
    try:
        for version in versions_in_use(ref):
            terms.append(_handle(ref, version).deterministic().encrypt(field, value))
    except errors.KeyCoreError as exc:
        _record(ref, "search", meta, exc.code, ref.current_version)
        raise
    _record(ref, "search", meta, "ok", ref.current_version)
    return terms


def deterministic_decrypt(*, tenant: str, field: str, blob: bytes, meta: CallMeta) -> bytes:
    _check_meta(meta)
    ref = resolve_tenant(tenant)
    version = None
    try:
        version = deterministic_key_version(blob)
        if version > KEY_VERSION_MAX:
            raise errors.MalformedData(f"The value names tenant key version {version}, which cannot exist.")
        value = _handle(ref, version).deterministic().decrypt(field, blob)
    except errors.KeyCoreError as exc:
        _record(ref, "det_decrypt", meta, exc.code, version)
        raise
    _record(ref, "det_decrypt", meta, "ok", version)
    return value


__all__ = [
    "Lease",
    "UsageReport",
    "UsageResult",
    "deterministic_decrypt",
    "deterministic_encrypt",
    "lease_derive",
    "lease_issue",
    "lease_ttl",
    "revocation_epoch",
    "search_terms",
    "usage_record",
    "versions_in_use",
]
