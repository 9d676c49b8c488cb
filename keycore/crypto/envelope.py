"""Envelope encryption of documents under a tenant key.

A *document* is a mapping of field names to byte strings. Each call to
:func:`encrypt_document` draws a fresh 256-bit data key (DEK) and a random
16-byte document id, encrypts every field under the DEK with AES-256-GCM, and
wraps the DEK under the tenant key into an EDEK. The byte layouts are in
:mod:`keycore.crypto.formats` and ``docs/formats.md``.

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
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keycore import errors
from keycore.crypto.formats import (
    DOCUMENT_ID_BYTES,
    EDEK_V1_AAD_BYTES,
    EDEK_V1_BYTES,
    EDEK_V1_NONCE_END,
    EDEK_V1_PREFIX_BYTES,
    FIELD_V1_HEADER,
    FIELD_V1_MIN_BYTES,
    FIELD_V1_NONCE_END,
    HEADER_BYTES,
    KCV_BYTES,
    KCV_MESSAGE,
    KEY_BYTES,
    NONCE_BYTES,
    TENANT_UID_BYTES,
    EdekHeader,
    check_field_header,
    edek_key_version,
    field_name_bytes,
    pack_edek_prefix,
    parse_edek,
    unpack_edek,
)

__all__ = [
    "TENANT_KEY_BYTES",
    "EdekHeader",
    "TenantKeyHandle",
    "decrypt_document",
    "edek_key_version",
    "encrypt_document",
    "key_check_value",
    "key_check_value_matches",
    "new_tenant_key",
    "parse_edek",
    "rewrap_edek",
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


class TenantKeyHandle:
    """An unwrapped tenant key version, ready to use: holds its AES-GCM object, never shows the key.

    Build one per unwrap and keep it in a :class:`~keycore.crypto.cache.TenantKeyCache`;
    the hot paths use the prebuilt cipher and the precomputed EDEK prefix.
    Handles cannot be pickled, so a key cannot end up in a shared cache by accident.
    """

    __slots__ = ("_aead", "_edek_prefix", "tenant_uid", "version")

    tenant_uid: bytes
    version: int

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
        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return f"<TenantKeyHandle tenant={self.tenant_uid.hex()} version={self.version}>"

    def __reduce__(self):
        raise TypeError("TenantKeyHandle holds key material and cannot be pickled.")


def _wrap_dek(handle: TenantKeyHandle, document_id: bytes, dek: bytes, nonce: bytes) -> bytes:
    head = handle._edek_prefix + document_id
    return head + nonce + handle._aead.encrypt(nonce, dek, head + handle.tenant_uid)


def _unwrap_dek(handle: TenantKeyHandle, edek: bytes) -> tuple[bytes, bytes]:
    """(document id, DEK) from ``edek``, authenticated against ``handle``."""
    # The common case is one comparison: a v1 EDEK whose first 6 bytes (kind, version,
    # key version) are those of this handle. Anything else takes the explaining path.
    if type(edek) is not bytes or len(edek) != EDEK_V1_BYTES or edek[:EDEK_V1_PREFIX_BYTES] != handle._edek_prefix:
        parts = unpack_edek(edek)  # MalformedData unless it is a v1 EDEK
        if parts.key_version != handle.version:
            raise errors.AuthenticationFailed(
                f"The EDEK was wrapped by tenant key version {parts.key_version}, not version {handle.version}."
            )
        edek = bytes(edek)
    try:
        dek = handle._aead.decrypt(
            edek[EDEK_V1_AAD_BYTES:EDEK_V1_NONCE_END],
            edek[EDEK_V1_NONCE_END:],
            edek[:EDEK_V1_AAD_BYTES] + handle.tenant_uid,
        )
    except InvalidTag:
        raise errors.AuthenticationFailed(
            "The EDEK does not authenticate under this tenant key: it was altered or belongs to another tenant."
        ) from None
    return edek[EDEK_V1_PREFIX_BYTES:EDEK_V1_AAD_BYTES], dek


def encrypt_document(handle: TenantKeyHandle, fields: Mapping[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """Encrypt ``fields`` under a fresh DEK wrapped by ``handle``; returns (EDEK, {name: ciphertext}).

    An empty mapping gives an EDEK alone (a document whose fields come later are a new document).
    """
    count = len(fields)
    rnd = _urandom(_EDEK_NONCE_END + NONCE_BYTES * count)
    dek = rnd[:_DEK_END]
    document_id = rnd[_DEK_END:_DOC_ID_END]
    edek = _wrap_dek(handle, document_id, dek, rnd[_DOC_ID_END:_EDEK_NONCE_END])
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
    document_id, dek = _unwrap_dek(handle, edek)
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
    the document's field ciphertexts stay valid as they are.
    """
    document_id, dek = _unwrap_dek(old, edek)
    return _wrap_dek(new, document_id, dek, _urandom(NONCE_BYTES))
