"""Envelope encryption of documents under a tenant key.

A *document* is a mapping of field names to byte strings. Each call to
:func:`encrypt_document` draws a fresh 256-bit data key (DEK) and a random
16-byte document id, encrypts every field under the DEK with AES-256-GCM, and
wraps the DEK into an EDEK. The byte layouts are in :mod:`keycore.crypto.formats`
and ``docs/formats.md``.

EDEKs are written in format v2: the DEK is wrapped under a *lease key*, which HKDF
derives from the tenant key version and a random 16-byte lease id. Each holder of a
lease is one process (a KeyCore process takes its own; the in-process SDK,
:mod:`keycore.sdk`, is given one by the lease API and never sees the tenant key), and
counts its wraps: past :attr:`LeaseKey.max_wraps` (2^24) it takes a new lease. So no
key ever wraps more than 2^24 DEKs under random nonces, whatever a tenant key version
encrypts in total: the AES-GCM bound of 2^32 random nonces per key no longer limits a
version. v1 EDEKs (the DEK wrapped directly under the tenant key) keep decrypting and
are rewrapped to v2 by :func:`rewrap_edek`.

Bindings, through associated data:

* the EDEK is bound to the tenant uid, the tenant key version and the document
  id, so an EDEK of tenant A fails authentication with any key handle of B;
* a field is bound to the document id and its field name, so fields cannot be
  swapped between documents or between fields of one document. A field is bound
  to its tenant through its DEK, which only that tenant's EDEK yields; this is
  what lets :func:`rewrap_edek` move a document to another tenant key (a newer
  version, or another tenant) without touching the field ciphertexts.

Every failure is a typed error: ``MalformedData`` for bytes that are not a
KeyCore blob, ``AuthenticationFailed`` for blobs that are well formed but do not
authenticate, ``InvalidInput`` for bad field names or values.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import threading
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keycore import errors
from keycore.crypto.formats import (
    DETERMINISTIC_FIELD_INFO,
    DETERMINISTIC_INFO,
    DETERMINISTIC_V1_HEADER_BYTES,
    DOCUMENT_ID_BYTES,
    EDEK_KIND,
    EDEK_V1_AAD_BYTES,
    EDEK_V1_BYTES,
    EDEK_V1_NONCE_END,
    EDEK_V1_PREFIX_BYTES,
    EDEK_V2,
    EDEK_V2_AAD_BYTES,
    EDEK_V2_BYTES,
    EDEK_V2_NONCE_END,
    EDEK_V2_PREFIX_BYTES,
    FIELD_V1_HEADER,
    FIELD_V1_MIN_BYTES,
    FIELD_V1_NONCE_END,
    HEADER_BYTES,
    KCV_BYTES,
    KCV_MESSAGE,
    KEY_BYTES,
    LEASE_ID_BYTES,
    LEASE_INFO,
    NONCE_BYTES,
    SIV_KEY_BYTES,
    TENANT_UID_BYTES,
    EdekHeader,
    check_field_header,
    deterministic_key_version,
    edek_key_version,
    edek_lease_id,
    field_name_bytes,
    pack_deterministic_header,
    pack_edek_prefix,
    pack_edek_v2_prefix,
    parse_edek,
    unpack_edek,
)

__all__ = [
    "TENANT_KEY_BYTES",
    "DeterministicKey",
    "EdekHeader",
    "LeaseKey",
    "TenantKeyHandle",
    "decrypt_document",
    "decrypt_with_lease",
    "derive_deterministic_base",
    "derive_lease_key",
    "edek_key_version",
    "edek_lease_id",
    "encrypt_document",
    "encrypt_with_lease",
    "key_check_value",
    "key_check_value_matches",
    "new_tenant_key",
    "parse_edek",
    "rewrap_edek",
    "rewrap_with_leases",
]

TENANT_KEY_BYTES = KEY_BYTES

# One os.urandom call per document: DEK, document id, EDEK nonce, then one nonce per field.
_DEK_END = KEY_BYTES
_DOC_ID_END = _DEK_END + DOCUMENT_ID_BYTES
_EDEK_NONCE_END = _DOC_ID_END + NONCE_BYTES
# Above this size a field is decrypted through a memoryview instead of a copied slice.
_COPY_LIMIT = 64 * 1024

_urandom = os.urandom


def new_tenant_key() -> bytes:
    """A fresh random 256-bit tenant key."""
    return _urandom(TENANT_KEY_BYTES)


def key_check_value(tenant_key: bytes) -> bytes:
    """HMAC-SHA256(tenant_key, "keycore/kcv/v1")[:16], stored beside a wrapped tenant key.

    Lets any unwrap, from any KMS, be verified before the key is used.
    """
    return hmac.new(tenant_key, KCV_MESSAGE, hashlib.sha256).digest()[:KCV_BYTES]


def key_check_value_matches(tenant_key: bytes, expected: bytes) -> bool:
    """Whether ``tenant_key`` has the stored check value ``expected`` (constant time)."""
    return hmac.compare_digest(key_check_value(tenant_key), expected)


def _key_version_bytes(version: int) -> bytes:
    return version.to_bytes(4, "big")


def derive_lease_key(tenant_key: bytes, tenant_uid: bytes, version: int, lease_id: bytes) -> bytes:
    """HKDF-SHA256(tenant key, info = "keycore/lease/v1" || tenant uid || version || lease id): a lease's key.

    What KeyCore hands the SDK: it wraps and unwraps the DEKs of that lease's documents and
    nothing else; the tenant key cannot be recovered from it.
    """
    if len(lease_id) != LEASE_ID_BYTES:
        raise errors.InvalidInput(f"A lease id is {LEASE_ID_BYTES} bytes.")
    info = LEASE_INFO + tenant_uid + _key_version_bytes(version) + lease_id
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(bytes(tenant_key))


def derive_deterministic_base(tenant_key: bytes, tenant_uid: bytes, version: int) -> bytes:
    """HKDF-SHA256(tenant key, info = "keycore/deterministic/v1" || tenant uid || version): the key every
    deterministic field key of this tenant key version is expanded from."""
    info = DETERMINISTIC_INFO + tenant_uid + _key_version_bytes(version)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(bytes(tenant_key))


class LeaseKey:
    """The key of one lease of one tenant key version: wraps DEKs into v2 EDEKs naming that lease.

    Built from the derived lease key (the SDK's case, from KeyCore's lease API) or by a
    :class:`TenantKeyHandle` for a lease of KeyCore's own. Counts its wraps: past
    ``max_wraps`` it refuses (:class:`~keycore.errors.LeaseExhausted`) and its holder takes
    a new lease. Never pickled, never shown.
    """

    __slots__ = ("_aead", "_head", "_wraps", "lease_id", "tenant_uid", "version")

    #: DEKs one lease key wraps at most, each under a random 96-bit nonce: the chance that any two
    #: share a nonce stays below 2^-48 (NIST SP 800-38D §8.3 allows up to 2^32 for 2^-32)
    max_wraps = 2**24

    def __init__(self, tenant_uid: bytes, version: int, lease_id: bytes, lease_key: bytes) -> None:
        if not isinstance(tenant_uid, bytes) or len(tenant_uid) != TENANT_UID_BYTES:
            raise errors.InvalidInput("A tenant uid is the 16 bytes of a UUID.")
        if not isinstance(lease_key, bytes | bytearray) or len(lease_key) != KEY_BYTES:
            raise errors.InvalidInput(f"A lease key is {KEY_BYTES} bytes.")
        self._head = pack_edek_v2_prefix(version, lease_id)
        self.tenant_uid = tenant_uid
        self.version = version
        self.lease_id = lease_id
        self._aead = AESGCM(bytes(lease_key))
        self._wraps = itertools.count()  # next() is atomic: exact across threads without a lock

    def take_wrap(self) -> bool:
        """Count one wrap; False once this lease has wrapped ``max_wraps`` DEKs (take a new lease)."""
        return next(self._wraps) < self.max_wraps

    def __repr__(self) -> str:
        return f"<LeaseKey tenant={self.tenant_uid.hex()} version={self.version} lease={self.lease_id.hex()}>"

    def __reduce__(self):
        raise TypeError("LeaseKey holds key material and cannot be pickled.")


class DeterministicKey:
    """Deterministic (AES-SIV) encryption under one tenant key version, one key per field name."""

    __slots__ = ("_base", "_fields", "_header", "tenant_uid", "version")

    MAX_FIELDS_CACHED = 1024

    def __init__(self, tenant_uid: bytes, version: int, base: bytes) -> None:
        if not isinstance(base, bytes | bytearray) or len(base) != KEY_BYTES:
            raise errors.InvalidInput(f"A deterministic base key is {KEY_BYTES} bytes.")
        self.tenant_uid = tenant_uid
        self.version = version
        self._base = bytes(base)
        self._header = pack_deterministic_header(version)
        self._fields: dict[str, AESSIV] = {}

    def _siv(self, field: str) -> AESSIV:
        siv = self._fields.get(field)
        if siv is None:
            info = DETERMINISTIC_FIELD_INFO + field_name_bytes(field)
            # HKDF-Expand, two blocks: T(1) = HMAC(base, info || 1), T(2) = HMAC(base, T(1) || info || 2)
            t1 = hmac.digest(self._base, info + b"\x01", "sha256")
            t2 = hmac.digest(self._base, t1 + info + b"\x02", "sha256")
            siv = AESSIV((t1 + t2)[:SIV_KEY_BYTES])
            if len(self._fields) >= self.MAX_FIELDS_CACHED:
                self._fields.clear()
            self._fields[field] = siv
        return siv

    def encrypt(self, field: str, value: bytes) -> bytes:
        if type(value) is not bytes:
            if not isinstance(value, bytes | bytearray | memoryview):
                raise errors.InvalidInput(f"Field {field!r}: values must be bytes.", field=str(field))
            value = bytes(value)
        header = self._header
        return header + self._siv(field).encrypt(value, [header])

    def decrypt(self, field: str, blob: bytes) -> bytes:
        version = deterministic_key_version(blob)
        if version != self.version:
            raise errors.AuthenticationFailed(
                f"The value is under tenant key version {version}, not version {self.version}."
            )
        blob = bytes(blob)
        header = blob[:DETERMINISTIC_V1_HEADER_BYTES]
        try:
            return self._siv(field).decrypt(blob[DETERMINISTIC_V1_HEADER_BYTES:], [header])
        except InvalidTag:
            raise errors.AuthenticationFailed(
                f"The deterministic value does not authenticate for field {field!r}: altered, another field's, "
                "or another tenant's.",
                field=field,
            ) from None

    def __repr__(self) -> str:
        return f"<DeterministicKey tenant={self.tenant_uid.hex()} version={self.version}>"

    def __reduce__(self):
        raise TypeError("DeterministicKey holds key material and cannot be pickled.")


class TenantKeyHandle:
    """An unwrapped tenant key version, ready to use: holds its AES-GCM object, never shows the key.

    Build one per unwrap and keep it in a :class:`~keycore.crypto.cache.TenantKeyCache`;
    the hot paths use the prebuilt server lease and cipher. It derives lease keys
    (:meth:`lease`, :meth:`lease_key`) and the deterministic key (:meth:`deterministic`);
    it never gives out the tenant key itself.
    Handles cannot be pickled, so a key cannot end up in a shared cache by accident.
    """

    __slots__ = (
        "_aead",
        "_deterministic",
        "_edek_prefix",
        "_key",
        "_leases",
        "_lock",
        "server_lease",
        "tenant_uid",
        "version",
    )

    tenant_uid: bytes
    version: int
    #: leases whose keys a handle keeps derived (the SDK's, met on decrypt); beyond, the oldest go
    MAX_LEASES = 256

    def __init__(self, tenant_uid: bytes, version: int, key: bytes) -> None:
        if not isinstance(tenant_uid, bytes) or len(tenant_uid) != TENANT_UID_BYTES:
            raise errors.InvalidInput("A tenant uid is the 16 bytes of a UUID.")
        if not isinstance(version, int) or isinstance(version, bool):
            raise errors.InvalidInput("A tenant key version is an integer.")
        if not isinstance(key, bytes | bytearray) or len(key) != TENANT_KEY_BYTES:
            raise errors.InvalidInput(f"A tenant key is {TENANT_KEY_BYTES} bytes.")
        self._edek_prefix = pack_edek_prefix(version)
        self.tenant_uid = tenant_uid
        self.version = version
        self._key = bytes(key)
        self._aead = AESGCM(self._key)  # v1 EDEKs only
        self._lock = threading.Lock()
        self._leases: dict[bytes, LeaseKey] = {}
        self._deterministic: DeterministicKey | None = None
        #: the lease this process wraps new DEKs under: its own random id, replaced after max_wraps wraps
        self.server_lease = self.lease(_urandom(LEASE_ID_BYTES))

    def lease_for_wrap(self) -> LeaseKey:
        """The server lease with one wrap counted; a fresh lease once the current one has wrapped its maximum."""
        lease = self.server_lease
        if lease.take_wrap():
            return lease
        with self._lock:
            while not self.server_lease.take_wrap():
                self.server_lease = self.lease(_urandom(LEASE_ID_BYTES))
            return self.server_lease

    def lease_key(self, lease_id: bytes) -> bytes:
        """The derived key of lease ``lease_id`` of this version (what the lease API hands out)."""
        return derive_lease_key(self._key, self.tenant_uid, self.version, lease_id)

    def lease(self, lease_id: bytes) -> LeaseKey:
        found = self._leases.get(lease_id)
        if found is None:
            found = LeaseKey(self.tenant_uid, self.version, lease_id, self.lease_key(lease_id))
            leases = self._leases
            if len(leases) >= self.MAX_LEASES:
                for old in list(leases):  # the oldest other than the server's own
                    if old != self.server_lease.lease_id:
                        leases.pop(old, None)  # another thread may have evicted it first
                        break
            leases[lease_id] = found
        return found

    def deterministic_base(self) -> bytes:
        return derive_deterministic_base(self._key, self.tenant_uid, self.version)

    def deterministic(self) -> DeterministicKey:
        if self._deterministic is None:
            self._deterministic = DeterministicKey(self.tenant_uid, self.version, self.deterministic_base())
        return self._deterministic

    def __repr__(self) -> str:
        return f"<TenantKeyHandle tenant={self.tenant_uid.hex()} version={self.version}>"

    def __reduce__(self):
        raise TypeError("TenantKeyHandle holds key material and cannot be pickled.")


def _wrap_dek(lease: LeaseKey, document_id: bytes, dek: bytes, nonce: bytes) -> bytes:
    """A v2 EDEK: the DEK under ``lease``'s key (the caller has counted the wrap)."""
    head = lease._head + document_id
    return head + nonce + lease._aead.encrypt(nonce, dek, head + lease.tenant_uid)


def _exhausted(lease: LeaseKey) -> errors.LeaseExhausted:
    return errors.LeaseExhausted(
        f"Lease {lease.lease_id.hex()} has wrapped its {lease.max_wraps} data keys: take a new lease."
    )


def _wrap_dek_v1(handle: TenantKeyHandle, document_id: bytes, dek: bytes, nonce: bytes) -> bytes:
    """A v1 EDEK (the DEK directly under the tenant key). Not written any more; kept so tests can make old data."""
    head = handle._edek_prefix + document_id
    return head + nonce + handle._aead.encrypt(nonce, dek, head + handle.tenant_uid)


_TAMPERED = "The EDEK does not authenticate under this tenant key: it was altered or belongs to another tenant."


def _unwrap_v2(lease: LeaseKey, edek: bytes) -> tuple[bytes, bytes]:
    document_id = edek[EDEK_V2_PREFIX_BYTES:EDEK_V2_AAD_BYTES]
    try:
        dek = lease._aead.decrypt(
            edek[EDEK_V2_AAD_BYTES:EDEK_V2_NONCE_END],
            edek[EDEK_V2_NONCE_END:],
            edek[:EDEK_V2_AAD_BYTES] + lease.tenant_uid,
        )
    except InvalidTag:
        raise errors.AuthenticationFailed(_TAMPERED) from None
    return document_id, dek


def _unwrap_dek(handle: TenantKeyHandle, edek: bytes) -> tuple[bytes, bytes]:
    """(document id, DEK) from ``edek`` (v1 or v2, any lease), authenticated against ``handle``."""
    if type(edek) is not bytes:
        edek = as_edek_bytes(edek)
    if len(edek) == EDEK_V2_BYTES and edek[0] == EDEK_KIND and edek[1] == EDEK_V2:
        if edek_key_version(edek) != handle.version:
            raise errors.AuthenticationFailed(
                f"The EDEK was wrapped by tenant key version {edek_key_version(edek)}, not version {handle.version}."
            )
        return _unwrap_v2(handle.lease(edek[6:EDEK_V2_PREFIX_BYTES]), edek)
    # v1: one comparison in the common case (kind, version and key version of this handle)
    if len(edek) != EDEK_V1_BYTES or edek[:EDEK_V1_PREFIX_BYTES] != handle._edek_prefix:
        parts = unpack_edek(edek)  # MalformedData unless it is an EDEK
        if parts.key_version != handle.version:
            raise errors.AuthenticationFailed(
                f"The EDEK was wrapped by tenant key version {parts.key_version}, not version {handle.version}."
            )
    try:
        dek = handle._aead.decrypt(
            edek[EDEK_V1_AAD_BYTES:EDEK_V1_NONCE_END],
            edek[EDEK_V1_NONCE_END:],
            edek[:EDEK_V1_AAD_BYTES] + handle.tenant_uid,
        )
    except InvalidTag:
        raise errors.AuthenticationFailed(_TAMPERED) from None
    return edek[EDEK_V1_PREFIX_BYTES:EDEK_V1_AAD_BYTES], dek


def _unwrap_with_lease(lease: LeaseKey, edek: bytes) -> tuple[bytes, bytes]:
    """(document id, DEK) of a v2 EDEK of exactly this lease."""
    if type(edek) is not bytes:
        edek = as_edek_bytes(edek)
    if len(edek) != EDEK_V2_BYTES or edek[:EDEK_V2_PREFIX_BYTES] != lease._head:
        parts = unpack_edek(edek)
        if parts.format_version != EDEK_V2:
            raise errors.MalformedData("A v1 EDEK is wrapped under the tenant key itself: decrypt it through KeyCore.")
        raise errors.AuthenticationFailed(
            f"The EDEK names tenant key version {parts.key_version}, lease {parts.lease_id.hex()}; "
            f"this is lease {lease.lease_id.hex()} of version {lease.version}."
        )
    return _unwrap_v2(lease, edek)


def as_edek_bytes(edek: object) -> bytes:
    if isinstance(edek, bytes | bytearray | memoryview):
        return bytes(edek)
    raise errors.MalformedData(f"Expected an EDEK as bytes, got {type(edek).__name__}.")


def encrypt_document(handle: TenantKeyHandle, fields: Mapping[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """Encrypt ``fields`` under a fresh DEK wrapped by ``handle``'s server lease; returns (EDEK, {name: ciphertext}).

    An empty mapping gives an EDEK alone (a document whose fields come later are a new document).
    """
    return _encrypt(handle.lease_for_wrap(), fields)


def encrypt_with_lease(lease: LeaseKey, fields: Mapping[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """Encrypt ``fields`` under a fresh DEK wrapped under ``lease`` into a v2 EDEK.

    ``LeaseExhausted`` once the lease has wrapped ``max_wraps`` DEKs: take a new lease.
    """
    if not lease.take_wrap():
        raise _exhausted(lease)
    return _encrypt(lease, fields)


def _encrypt(lease: LeaseKey, fields: Mapping[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    count = len(fields)
    rnd = _urandom(_EDEK_NONCE_END + NONCE_BYTES * count)
    dek = rnd[:_DEK_END]
    document_id = rnd[_DEK_END:_DOC_ID_END]
    edek = _wrap_dek(lease, document_id, dek, rnd[_DOC_ID_END:_EDEK_NONCE_END])
    if not count:
        return edek, {}
    encrypt = AESGCM(dek).encrypt
    aad_prefix = FIELD_V1_HEADER + document_id
    out: dict[str, bytes] = {}
    at = _EDEK_NONCE_END
    try:
        for name, value in fields.items():
            nonce = rnd[at : at + NONCE_BYTES]
            at += NONCE_BYTES
            out[name] = FIELD_V1_HEADER + nonce + encrypt(nonce, value, aad_prefix + field_name_bytes(name))
    except TypeError:
        raise errors.InvalidInput(f"Field {name!r}: values must be bytes.", field=str(name)) from None
    except OverflowError:
        raise errors.InvalidInput(f"Field {name!r} is too large to encrypt in one piece.", field=str(name)) from None
    return edek, out


def decrypt_document(handle: TenantKeyHandle, edek: bytes, fields: Mapping[str, bytes]) -> dict[str, bytes]:
    """Decrypt the given ``fields`` (all of a document's, or some) of the document ``edek`` belongs to."""
    return _decrypt_fields(*_unwrap_dek(handle, edek), fields)


def decrypt_with_lease(lease: LeaseKey, edek: bytes, fields: Mapping[str, bytes]) -> dict[str, bytes]:
    """Decrypt fields of a document whose v2 EDEK names ``lease`` (the SDK's path)."""
    return _decrypt_fields(*_unwrap_with_lease(lease, edek), fields)


def _decrypt_fields(document_id: bytes, dek: bytes, fields: Mapping[str, bytes]) -> dict[str, bytes]:
    if not fields:
        return {}
    decrypt = AESGCM(dek).decrypt
    aad_prefix = FIELD_V1_HEADER + document_id
    out: dict[str, bytes] = {}
    for name, blob in fields.items():
        aad = aad_prefix + field_name_bytes(name)
        if type(blob) is not bytes:
            if not isinstance(blob, bytes | bytearray | memoryview):
                raise errors.MalformedData(f"Field {name!r}: expected bytes, got {type(blob).__name__}.", field=name)
            blob = bytes(blob)
        if len(blob) < FIELD_V1_MIN_BYTES or blob[:2] != FIELD_V1_HEADER:
            check_field_header(blob, name)  # raises, saying what is wrong
        body = blob[FIELD_V1_NONCE_END:] if len(blob) <= _COPY_LIMIT else memoryview(blob)[FIELD_V1_NONCE_END:]
        try:
            out[name] = decrypt(blob[HEADER_BYTES:FIELD_V1_NONCE_END], body, aad)
        except InvalidTag:
            raise errors.AuthenticationFailed(
                f"Field {name!r} does not authenticate: it was altered, or it belongs to another document or field.",
                field=name,
            ) from None
        except OverflowError:  # over 2 GiB: nothing encrypt_document could have written
            raise errors.MalformedData(f"Field {name!r} is too large to be a KeyCore field.", field=name) from None
    return out


def rewrap_edek(edek: bytes, old: TenantKeyHandle, new: TenantKeyHandle) -> bytes:
    """The same DEK and document id, wrapped by ``new`` instead of ``old``.

    ``new`` may be a newer version of the same tenant's key or another tenant's key;
    the document's field ciphertexts stay valid as they are. ``edek`` may be v1 or v2
    (of any lease); the result is always v2 under ``new``'s current server lease.
    """
    document_id, dek = _unwrap_dek(old, edek)
    return _wrap_dek(new.lease_for_wrap(), document_id, dek, _urandom(NONCE_BYTES))


def rewrap_with_leases(edek: bytes, old: LeaseKey, new: LeaseKey) -> bytes:
    """The SDK's rekey: the same DEK and document id, from lease ``old`` to lease ``new`` (a v2 EDEK)."""
    document_id, dek = _unwrap_with_lease(old, edek)
    if not new.take_wrap():
        raise _exhausted(new)
    return _wrap_dek(new, document_id, dek, _urandom(NONCE_BYTES))
