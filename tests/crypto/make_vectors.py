"""Write the known-answer vectors in tests/crypto/vectors/ (run once per format version).

    PYTHONPATH=. python tests/crypto/make_vectors.py [--force]

The tests only read these files: they decrypt and parse the stored blobs, so a
change to a format cannot pass unnoticed. Existing files are kept unless
``--force`` is given; regenerate only when adding a new format version, and then
add new files rather than rewriting old ones.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from keycore.crypto import envelope, rootkey
from keycore.crypto.formats import LOCAL_KEK_ID_DOMAIN, encode_key_text, key_fingerprint
from keycore.providers.base import WrapContext
from keycore.providers.local import LocalProvider

VECTORS = Path(__file__).parent / "vectors"

TENANT_A = uuid.UUID("0b3c1d1e-5f00-4c4b-9a2e-7d61b8f0a001")
TENANT_B = uuid.UUID("0b3c1d1e-5f00-4c4b-9a2e-7d61b8f0b002")
KEY_A1 = bytes(range(32))
KEY_A2 = bytes(range(32, 64))
KEY_B7 = bytes(range(64, 96))


def _handle(tenant: uuid.UUID, version: int, key: bytes) -> envelope.TenantKeyHandle:
    return envelope.TenantKeyHandle(tenant.bytes, version, key)


def _key(tenant: uuid.UUID, version: int, key: bytes) -> dict:
    return {
        "tenant_uid": tenant.bytes.hex(),
        "key_version": version,
        "tenant_key": key.hex(),
        "kcv": envelope.key_check_value(key).hex(),
    }


def edek_v1() -> dict:
    a1, a2, b7 = _handle(TENANT_A, 1, KEY_A1), _handle(TENANT_A, 2, KEY_A2), _handle(TENANT_B, 7, KEY_B7)
    edek, _ = envelope.encrypt_document(a1, {})
    cases = []
    for description, key, blob in [
        ("empty document, tenant A key version 1", _key(TENANT_A, 1, KEY_A1), edek),
        (
            "the same DEK rewrapped to tenant A key version 2",
            _key(TENANT_A, 2, KEY_A2),
            envelope.rewrap_edek(edek, a1, a2),
        ),
        (
            "the same DEK rewrapped to tenant B key version 7",
            _key(TENANT_B, 7, KEY_B7),
            envelope.rewrap_edek(edek, a1, b7),
        ),
    ]:
        header = envelope.parse_edek(blob)
        cases.append(
            {
                "description": description,
                **key,
                "edek": blob.hex(),
                "format_version": header.format_version,
                "document_id": header.document_id.hex(),
            }
        )
    return {"format": "EDEK v1", "cases": cases}


def field_v1() -> dict:
    a1, b7 = _handle(TENANT_A, 1, KEY_A1), _handle(TENANT_B, 7, KEY_B7)
    documents = [
        ("one field", a1, {"body": b"Hello, tenant A."}),
        ("an empty value", a1, {"note": b""}),
        (
            "several fields, a non-ASCII name and a 255-byte name",
            a1,
            {"email": b"ada@example.com", "n\u00e4me": "Zo\u00eb".encode(), "x" * 255: bytes(range(256))},
        ),
    ]
    cases = []
    for description, handle, fields in documents:
        edek, blobs = envelope.encrypt_document(handle, fields)
        cases.append(
            {
                "description": description,
                **_key(TENANT_A, handle.version, KEY_A1),
                "edek": edek.hex(),
                "fields": {name: {"plaintext": fields[name].hex(), "ciphertext": blobs[name].hex()} for name in fields},
            }
        )
    # A document moved to tenant B: fields untouched, only the EDEK rewrapped.
    edek, blobs = envelope.encrypt_document(a1, {"body": b"moved to tenant B"})
    cases.append(
        {
            "description": "fields of tenant A's document under an EDEK rewrapped to tenant B",
            **_key(TENANT_B, 7, KEY_B7),
            "edek": envelope.rewrap_edek(edek, a1, b7).hex(),
            "fields": {"body": {"plaintext": b"moved to tenant B".hex(), "ciphertext": blobs["body"].hex()}},
        }
    )
    return {"format": "field v1", "cases": cases}


LEASE_X = bytes.fromhex("4c45415345000000000000000000a5a5")


def edek_v2() -> dict:
    """v2 EDEKs: a KeyCore process's own lease and SDK leases, each with the lease key a reader needs."""
    a1, a2 = _handle(TENANT_A, 1, KEY_A1), _handle(TENANT_A, 2, KEY_A2)
    cases = []
    fields = {"body": b"Hello from a lease.", "email": b"ada@example.com"}
    for description, handle, lease_id in [
        ("a KeyCore process's own lease, tenant A key version 1", a1, a1.server_lease.lease_id),
        ("an SDK lease, tenant A key version 1", a1, LEASE_X),
        ("an SDK lease, tenant A key version 2", a2, LEASE_X),
    ]:
        lease = handle.lease(lease_id)
        edek, blobs = envelope.encrypt_with_lease(lease, fields)
        header = envelope.parse_edek(edek)
        cases.append(
            {
                "description": description,
                **_key(TENANT_A, handle.version, KEY_A1 if handle is a1 else KEY_A2),
                "lease_id": lease_id.hex(),
                "lease_key": handle.lease_key(lease_id).hex(),
                "document_id": header.document_id.hex(),
                "edek": edek.hex(),
                "format_version": header.format_version,
                "fields": {name: {"plaintext": fields[name].hex(), "ciphertext": blobs[name].hex()} for name in fields},
            }
        )
    return {"format": "EDEK v2", "cases": cases}


def deterministic_v1() -> dict:
    a1, a2 = _handle(TENANT_A, 1, KEY_A1), _handle(TENANT_A, 2, KEY_A2)
    cases = []
    for description, handle, key, field, value in [
        ("an email, version 1", a1, KEY_A1, "email", b"ada@example.com"),
        ("the same email in another field", a1, KEY_A1, "billing_email", b"ada@example.com"),
        ("the same email under version 2", a2, KEY_A2, "email", b"ada@example.com"),
        ("an empty value", a1, KEY_A1, "email", b""),
        ("a 64-byte value and a non-ASCII field name", a1, KEY_A1, "n\u00e4me", bytes(range(64))),
    ]:
        det = handle.deterministic()
        cases.append(
            {
                "description": description,
                **_key(TENANT_A, handle.version, key),
                "deterministic_base": handle.deterministic_base().hex(),
                "field": field,
                "plaintext": value.hex(),
                "ciphertext": det.encrypt(field, value).hex(),
            }
        )
    return {"format": "deterministic v1", "cases": cases}


def sealed_v1() -> dict:
    old, new = bytes(range(100, 132)), bytes(range(200, 232))
    cases = []
    for description, keyring, plaintext, purpose, context in [
        ("under the current key", rootkey.RootKeyring(new), b'{"secret_access_key":"x"}', "kms-config-secrets", "c1"),
        ("under a previous key", rootkey.RootKeyring(old), b"", "kms-config-secrets", "c2"),
        ("unicode context", rootkey.RootKeyring(new), bytes(range(40)), "totp-seed", "\u00fcser-7"),
    ]:
        blob = keyring.seal(plaintext, purpose=purpose, context=context)
        cases.append(
            {
                "description": description,
                "sealed_with_key_id": keyring.current_id,
                "blob": blob.hex(),
                "purpose": purpose,
                "context": context,
                "plaintext": plaintext.hex(),
            }
        )
    return {
        "format": "sealed v1",
        "current_root_key": encode_key_text(new),
        "previous_root_keys": [encode_key_text(old)],
        "key_ids": {encode_key_text(new): rootkey.key_id(new), encode_key_text(old): rootkey.key_id(old)},
        "cases": cases,
    }


def local_wrap_v1() -> dict:
    kek = bytes(range(150, 182))
    provider = LocalProvider({}, {"kek": encode_key_text(kek)})
    cases = []
    for description, context, key in [
        ("tenant A key version 1", WrapContext(TENANT_A.hex, "acme", "cfg-1", 1), KEY_A1),
        ("health-check probe, version 0", WrapContext(TENANT_B.hex, "globex", "cfg-1", 0), bytes(32)),
    ]:
        cases.append(
            {
                "description": description,
                "context": {
                    "tenant_uid": context.tenant_uid,
                    "tenant_external_id": context.tenant_external_id,
                    "config_uid": context.config_uid,
                    "key_version": context.key_version,
                },
                "wrapped": provider.wrap(key, context).hex(),
                "key": key.hex(),
            }
        )
    return {
        "format": "local wrap v1",
        "kek": encode_key_text(kek),
        "kek_id": key_fingerprint(kek, LOCAL_KEK_ID_DOMAIN).hex(),
        "cases": cases,
    }


def main(argv: list[str]) -> int:
    force = "--force" in argv
    VECTORS.mkdir(exist_ok=True)
    for name, make in [
        ("edek_v1", edek_v1),
        ("field_v1", field_v1),
        ("sealed_v1", sealed_v1),
        ("local_wrap_v1", local_wrap_v1),
        ("edek_v2", edek_v2),
        ("deterministic_v1", deterministic_v1),
    ]:
        path = VECTORS / f"{name}.json"
        if path.exists() and not force:
            print(f"kept {path.name}")
            continue
        path.write_text(json.dumps(make(), indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
