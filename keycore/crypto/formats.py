"""Byte layouts of everything KeyCore encrypts, and their parsers.

Pure functions and constants; no keys are used here. ``docs/formats.md`` explains
the layouts, the associated data and the nonce analysis in prose.

Every blob starts with two bytes: a *kind* byte saying what the blob is and a
*version* byte saying which layout of that kind follows. Parsers dispatch on
both and raise :class:`~keycore.errors.MalformedData` for anything else, so a
field ciphertext handed in as an EDEK (or a base64 string, or random bytes) is
reported as "not a KeyCore blob" rather than as a failed authentication.
Integers are unsigned big-endian.

EDEK v1 (a data key wrapped by a tenant key), 82 bytes::

    offset  size  field
         0     1  kind            0xED
         1     1  version         0x01
         2     4  key_version     tenant key version that wrapped the DEK
         6    16  document_id     random, fresh per document
        22    12  nonce           random
        34    48  wrapped_dek     AES-256-GCM(tenant key, nonce, DEK, aad) = 32 + 16-byte tag

    aad = bytes 0..21 of the EDEK (kind, version, key_version, document_id)
          || tenant_uid (16 bytes)

EDEK v2 (a data key wrapped under a lease key derived from a tenant key), 98 bytes::

    offset  size  field
         0     1  kind            0xED
         1     1  version         0x02
         2     4  key_version     tenant key version the wrapping key is derived from
         6    16  lease_id        the lease whose key wrapped the DEK (random; a process's own)
        22    16  document_id     random, fresh per document
        38    12  nonce           random
        50    48  wrapped_dek     AES-256-GCM(lease key, nonce, DEK, aad) = 32 + 16-byte tag

    aad = bytes 0..37 of the EDEK (kind, version, key_version, lease_id, document_id)
          || tenant_uid (16 bytes)

    wrapped_dek = AES-256-GCM(lease key, nonce, DEK, aad)
    lease key   = HKDF-SHA256(ikm = tenant key, salt = none,
                              info = "keycore/lease/v1" || tenant_uid || key_version (4) || lease_id, L = 32)

A lease is held by one process, which counts its wraps and takes a new lease after
2^24 (``LeaseKey.max_wraps``): no key wraps more than 2^24 DEKs under random nonces,
so the 2^32-random-nonce bound of AES-GCM no longer limits a tenant key version.

Deterministic value v1 (a searchable field: equal values give equal bytes), 22 bytes +
the value's length::

    offset  size  field
         0     1  kind            0xDE
         1     1  version         0x01
         2     4  key_version     tenant key version the key is derived from
         6  16+n  siv             AES-256-SIV(field key, value, ad = [bytes 0..5]): 16-byte SIV, then ciphertext

    deterministic base = HKDF-SHA256(ikm = tenant key, salt = none,
                                     info = "keycore/deterministic/v1" || tenant_uid || key_version (4), L = 32)
    field key          = HKDF-Expand-SHA256(prk = deterministic base,
                                            info = "keycore/deterministic-field/v1" || field name (UTF-8), L = 64)

Field ciphertext v1 (one field of a document, under the document's DEK),
30 bytes + the plaintext length::

    offset  size  field
         0     1  kind            0xFD
         1     1  version         0x01
         2    12  nonce           random
        14   n+16 ciphertext      AES-256-GCM(DEK, nonce, value, aad), tag last

    aad = 0xFD 0x01 || document_id (16 bytes) || field name (UTF-8, 1..255 bytes)

Sealed secret v1 (a secret at rest under the operator's root key), 38 bytes +
the plaintext length::

    offset  size  field
         0     1  kind            0x5E
         1     1  version         0x01
         2     8  root_key_id     key_fingerprint(root key, ROOT_KEY_ID_DOMAIN)
        10    12  nonce           random
        22   n+16 ciphertext      AES-256-GCM(root key, nonce, secret, aad), tag last

    aad = bytes 0..9 of the blob (kind, version, root_key_id)
          || len(purpose) (1 byte) || purpose (UTF-8) || context (UTF-8)

Local-provider wrapped tenant key v1 (a tenant key wrapped by a local KEK),
38 bytes + the key length (70 bytes for a 32-byte tenant key)::

    offset  size  field
         0     1  kind            0x1E
         1     1  version         0x01
         2     8  kek_id          key_fingerprint(KEK, LOCAL_KEK_ID_DOMAIN)
        10    12  nonce           random
        22   n+16 ciphertext      AES-256-GCM(KEK, nonce, tenant key, aad), tag last

    aad = bytes 0..9 of the blob (kind, version, kek_id)
          || WrapContext.associated_data()

Key fingerprints are the first 8 bytes of SHA-256(domain || 0x00 || key). They
name a key in headers and messages; 64 bits of a hash of a 256-bit random key
reveal nothing usable about it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import struct
from typing import NamedTuple

from keycore import errors

# -- sizes ---------------------------------------------------------------------

KEY_BYTES = 32  # AES-256 everywhere: DEKs, tenant keys, root keys, local KEKs
NONCE_BYTES = 12  # AES-GCM's native 96-bit nonce
TAG_BYTES = 16  # full-length GCM tag
DOCUMENT_ID_BYTES = 16
TENANT_UID_BYTES = 16  # a UUID's bytes
KEY_ID_BYTES = 8
KCV_BYTES = 16
MAX_FIELD_NAME_BYTES = 255
MAX_KEY_VERSION = 2**32 - 1
HEADER_BYTES = 2  # kind + version, first in every blob

# -- kinds and versions --------------------------------------------------------

EDEK_KIND = 0xED
FIELD_KIND = 0xFD
SEALED_KIND = 0x5E
LOCAL_WRAP_KIND = 0x1E
DETERMINISTIC_KIND = 0xDE

EDEK_V1 = 1
EDEK_V2 = 2
DETERMINISTIC_V1 = 1
FIELD_V1 = 1
SEALED_V1 = 1
LOCAL_WRAP_V1 = 1

# -- domain-separation strings -------------------------------------------------

KCV_MESSAGE = b"keycore/kcv/v1"
ROOT_KEY_ID_DOMAIN = b"keycore/root-key-id/v1"
LOCAL_KEK_ID_DOMAIN = b"keycore/local-kek-id/v1"
LEASE_INFO = b"keycore/lease/v1"
DETERMINISTIC_INFO = b"keycore/deterministic/v1"
DETERMINISTIC_FIELD_INFO = b"keycore/deterministic-field/v1"
LEASE_ID_BYTES = 16
SIV_KEY_BYTES = 64  # AES-256-SIV takes two 256-bit keys
SIV_TAG_BYTES = 16

# -- EDEK v1 -------------------------------------------------------------------

#: kind, version, key_version: the part of the header fixed per tenant key version
EDEK_V1_PREFIX = struct.Struct(">BBI")
EDEK_V1_PREFIX_BYTES = EDEK_V1_PREFIX.size  # 6
#: the whole EDEK, unpacked in one call
EDEK_V1_LAYOUT = struct.Struct(f">BBI{DOCUMENT_ID_BYTES}s{NONCE_BYTES}s{KEY_BYTES + TAG_BYTES}s")
EDEK_V1_BYTES = EDEK_V1_LAYOUT.size  # 82
#: bytes of the EDEK that go into its associated data (everything before the nonce)
EDEK_V1_AAD_BYTES = EDEK_V1_PREFIX_BYTES + DOCUMENT_ID_BYTES  # 22
EDEK_V1_NONCE_END = EDEK_V1_AAD_BYTES + NONCE_BYTES  # 34
_KEY_VERSION = struct.Struct(">I")

# -- EDEK v2 -------------------------------------------------------------------

#: kind, version, key_version, lease_id: the part of the header fixed per lease
EDEK_V2_PREFIX = struct.Struct(f">BBI{LEASE_ID_BYTES}s")
EDEK_V2_PREFIX_BYTES = EDEK_V2_PREFIX.size  # 22
EDEK_V2_LAYOUT = struct.Struct(f">BBI{LEASE_ID_BYTES}s{DOCUMENT_ID_BYTES}s{NONCE_BYTES}s{KEY_BYTES + TAG_BYTES}s")
EDEK_V2_BYTES = EDEK_V2_LAYOUT.size  # 98
EDEK_V2_AAD_BYTES = EDEK_V2_PREFIX_BYTES + DOCUMENT_ID_BYTES  # 38
EDEK_V2_NONCE_END = EDEK_V2_AAD_BYTES + NONCE_BYTES  # 50
_EDEK_SIZES = {EDEK_V1_BYTES: EDEK_V1, EDEK_V2_BYTES: EDEK_V2}  # size → the version of that size

# -- deterministic v1 ------------------------------------------------------------

DETERMINISTIC_V1_HEADER_BYTES = EDEK_V1_PREFIX_BYTES  # kind, version, key_version
DETERMINISTIC_V1_MIN_BYTES = DETERMINISTIC_V1_HEADER_BYTES + SIV_TAG_BYTES  # 22, an empty value

# -- field v1 ------------------------------------------------------------------

FIELD_V1_HEADER = bytes((FIELD_KIND, FIELD_V1))
FIELD_V1_NONCE_END = HEADER_BYTES + NONCE_BYTES  # 14
FIELD_V1_MIN_BYTES = FIELD_V1_NONCE_END + TAG_BYTES  # 30, an empty value

# -- sealed v1 and local wrap v1 (same shape: header, key id, nonce, ciphertext) --

KEYED_V1_LAYOUT = struct.Struct(f">BB{KEY_ID_BYTES}s{NONCE_BYTES}s")
KEYED_V1_AAD_BYTES = HEADER_BYTES + KEY_ID_BYTES  # 10
KEYED_V1_MIN_BYTES = KEYED_V1_LAYOUT.size + TAG_BYTES  # 38, an empty plaintext

_KIND_NAMES = {
    EDEK_KIND: "an EDEK",
    FIELD_KIND: "a field ciphertext",
    SEALED_KIND: "a sealed secret",
    LOCAL_WRAP_KIND: "a local-provider wrapped key",
    DETERMINISTIC_KIND: "a deterministic value",
}


class EdekHeader(NamedTuple):
    """What an EDEK says about itself, readable without any key."""

    format_version: int
    key_version: int
    document_id: bytes


class EdekV1(NamedTuple):
    format_version: int
    key_version: int
    document_id: bytes
    nonce: bytes
    wrapped_dek: bytes
    aad_prefix: bytes  # the EDEK bytes that are authenticated as associated data


class EdekV2(NamedTuple):
    format_version: int
    key_version: int
    lease_id: bytes
    document_id: bytes
    nonce: bytes
    wrapped_dek: bytes
    aad_prefix: bytes


class KeyedBlobV1(NamedTuple):
    """A sealed secret or a local-provider wrap: header, key id, nonce, ciphertext."""

    key_id: bytes
    nonce: bytes
    ciphertext: bytes
    aad_prefix: bytes


# -- helpers shared by the parsers ---------------------------------------------


def as_bytes(blob: object, what: str) -> bytes:
    """``blob`` as ``bytes``; ``MalformedData`` for anything that is not bytes-like."""
    if type(blob) is bytes:
        return blob
    if isinstance(blob, bytes | bytearray | memoryview):
        return bytes(blob)
    raise errors.MalformedData(f"Expected {what} as bytes, got {type(blob).__name__}.")


def _wrong_header(blob: bytes, kind: int, what: str) -> errors.MalformedData:
    if len(blob) < HEADER_BYTES:
        return errors.MalformedData(f"Not {what}: {len(blob)} bytes is too short.")
    if blob[0] != kind:
        other = _KIND_NAMES.get(blob[0])
        if other:
            return errors.MalformedData(f"Not {what}: the bytes are {other}.")
        return errors.MalformedData(f"Not {what}: unknown leading byte 0x{blob[0]:02x}.")
    versions = "versions 1 and 2" if kind == EDEK_KIND else "version 1"
    return errors.MalformedData(f"Unsupported version {blob[1]} of {what}; this KeyCore reads {versions}.")


# -- EDEK --------------------------------------------------------------------------


def pack_edek_prefix(key_version: int) -> bytes:
    """The first 6 bytes of every v1 EDEK wrapped by tenant key version ``key_version``."""
    if not 0 <= key_version <= MAX_KEY_VERSION:
        raise errors.InvalidInput(f"Tenant key version {key_version} is out of range (0..{MAX_KEY_VERSION}).")
    return EDEK_V1_PREFIX.pack(EDEK_KIND, EDEK_V1, key_version)


def pack_edek_v2_prefix(key_version: int, lease_id: bytes) -> bytes:
    """The first 22 bytes of every v2 EDEK wrapped under lease ``lease_id`` of tenant key version ``key_version``."""
    if not 0 <= key_version <= MAX_KEY_VERSION:
        raise errors.InvalidInput(f"Tenant key version {key_version} is out of range (0..{MAX_KEY_VERSION}).")
    if type(lease_id) is not bytes or len(lease_id) != LEASE_ID_BYTES:
        raise errors.InvalidInput(f"A lease id is {LEASE_ID_BYTES} bytes.")
    return EDEK_V2_PREFIX.pack(EDEK_KIND, EDEK_V2, key_version, lease_id)


def unpack_edek(edek: bytes) -> EdekV1 | EdekV2:
    """Split an EDEK into its parts; ``MalformedData`` unless it is a v1 or v2 EDEK of the right size."""
    if type(edek) is not bytes:
        edek = as_bytes(edek, "an EDEK")
    if len(edek) >= HEADER_BYTES and edek[0] == EDEK_KIND:
        if edek[1] == EDEK_V2:
            if len(edek) != EDEK_V2_BYTES:
                raise errors.MalformedData(f"Not an EDEK: a v2 EDEK is {EDEK_V2_BYTES} bytes, got {len(edek)}.")
            _, version, key_version, lease_id, document_id, nonce, wrapped = EDEK_V2_LAYOUT.unpack(edek)
            return EdekV2(version, key_version, lease_id, document_id, nonce, wrapped, edek[:EDEK_V2_AAD_BYTES])
        if edek[1] == EDEK_V1:
            if len(edek) != EDEK_V1_BYTES:
                raise errors.MalformedData(f"Not an EDEK: a v1 EDEK is {EDEK_V1_BYTES} bytes, got {len(edek)}.")
            _, version, key_version, document_id, nonce, wrapped = EDEK_V1_LAYOUT.unpack(edek)
            return EdekV1(version, key_version, document_id, nonce, wrapped, edek[:EDEK_V1_AAD_BYTES])
    raise _wrong_header(edek, EDEK_KIND, "an EDEK")


def parse_edek(edek: bytes) -> EdekHeader:
    """Format version, tenant key version and document id of an EDEK; no cryptography involved."""
    parts = unpack_edek(edek)
    return EdekHeader(parts.format_version, parts.key_version, parts.document_id)


def edek_lease_id(edek: bytes) -> bytes | None:
    """The lease a v2 EDEK was wrapped under; None for v1."""
    parts = unpack_edek(edek)
    return parts.lease_id if parts.format_version == EDEK_V2 else None


def edek_key_version(edek: bytes) -> int:
    """Which tenant key version wrapped ``edek`` (so the caller knows which key to fetch)."""
    if type(edek) is bytes and len(edek) in _EDEK_SIZES and edek[0] == EDEK_KIND and _EDEK_SIZES[len(edek)] == edek[1]:
        return _KEY_VERSION.unpack_from(edek, 2)[0]
    return unpack_edek(edek).key_version


# -- deterministic values ------------------------------------------------------------


def pack_deterministic_header(key_version: int) -> bytes:
    if not 0 <= key_version <= MAX_KEY_VERSION:
        raise errors.InvalidInput(f"Tenant key version {key_version} is out of range (0..{MAX_KEY_VERSION}).")
    return EDEK_V1_PREFIX.pack(DETERMINISTIC_KIND, DETERMINISTIC_V1, key_version)


def deterministic_key_version(blob: bytes) -> int:
    """The tenant key version a deterministic value is under; ``MalformedData`` unless it is one."""
    blob = as_bytes(blob, "a deterministic value")
    if len(blob) < DETERMINISTIC_V1_MIN_BYTES or blob[0] != DETERMINISTIC_KIND or blob[1] != DETERMINISTIC_V1:
        if len(blob) >= HEADER_BYTES and blob[0] == DETERMINISTIC_KIND and blob[1] == DETERMINISTIC_V1:
            raise errors.MalformedData(
                f"Not a deterministic value: {len(blob)} bytes, at least {DETERMINISTIC_V1_MIN_BYTES} expected."
            )
        raise _wrong_header(blob, DETERMINISTIC_KIND, "a deterministic value")
    return _KEY_VERSION.unpack_from(blob, 2)[0]


# -- fields ------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # documents repeat a few names; errors are not cached
def field_name_bytes(name: object) -> bytes:
    """A field name as it goes into associated data; ``InvalidInput`` if it cannot be one."""
    if not isinstance(name, str):
        raise errors.InvalidInput(f"Field names must be strings, got {type(name).__name__}.")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        raise errors.InvalidInput(f"Field name {name!r} is not valid Unicode text.") from None
    if not 0 < len(encoded) <= MAX_FIELD_NAME_BYTES:
        raise errors.InvalidInput(
            f"Field names must be 1 to {MAX_FIELD_NAME_BYTES} bytes of UTF-8, got {len(encoded)}.",
            field=name[:64],
        )
    return encoded


def check_field_header(blob: bytes, name: str) -> None:
    """``MalformedData`` unless ``blob`` looks like a v1 field ciphertext (header and minimum size)."""
    if len(blob) < FIELD_V1_MIN_BYTES or blob[0] != FIELD_KIND or blob[1] != FIELD_V1:
        if len(blob) >= HEADER_BYTES and blob[0] == FIELD_KIND and blob[1] == FIELD_V1:
            raise errors.MalformedData(
                f"Field {name!r} is truncated: {len(blob)} bytes, at least {FIELD_V1_MIN_BYTES} expected.",
                field=name,
            )
        problem = _wrong_header(blob, FIELD_KIND, "a field ciphertext")
        raise errors.MalformedData(f"Field {name!r}: {problem.detail}", field=name)


# -- sealed secrets and local wraps ------------------------------------------------


def pack_keyed_header(kind: int, key_id: bytes, nonce: bytes) -> bytes:
    return KEYED_V1_LAYOUT.pack(kind, 1, key_id, nonce)


def unpack_keyed(blob: bytes, kind: int) -> KeyedBlobV1:
    """Split a v1 sealed secret (``SEALED_KIND``) or local wrap (``LOCAL_WRAP_KIND``)."""
    what = _KIND_NAMES[kind]
    blob = as_bytes(blob, what)
    if len(blob) < KEYED_V1_MIN_BYTES or blob[0] != kind or blob[1] != 1:
        if len(blob) >= HEADER_BYTES and blob[0] == kind and blob[1] == 1:
            raise errors.MalformedData(
                f"Not {what}: {len(blob)} bytes is shorter than the {KEYED_V1_MIN_BYTES}-byte minimum."
            )
        raise _wrong_header(blob, kind, what)
    _, _, key_id, nonce = KEYED_V1_LAYOUT.unpack_from(blob)
    return KeyedBlobV1(key_id, nonce, blob[KEYED_V1_LAYOUT.size :], blob[:KEYED_V1_AAD_BYTES])


# -- keys as text and key fingerprints ---------------------------------------------


def key_fingerprint(key: bytes, domain: bytes) -> bytes:
    """First 8 bytes of SHA-256(domain || 0x00 || key): names a key without revealing it."""
    return hashlib.sha256(domain + b"\x00" + key).digest()[:KEY_ID_BYTES]


def encode_key_text(key: bytes) -> str:
    """Standard padded base64, the form KeyCore prints and stores key text in."""
    return base64.b64encode(key).decode("ascii")


def decode_key_text(text: str) -> bytes:
    """Decode base64 (standard or URL-safe, padding optional) of exactly 32 bytes.

    Raises ``ValueError`` with a reason that never repeats the text (it is a secret).
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    if not cleaned:
        raise ValueError("it is empty")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        key = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("it is not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"it decodes to {len(key)} bytes, not {KEY_BYTES}")
    return key
