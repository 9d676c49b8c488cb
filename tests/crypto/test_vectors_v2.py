"""Known answers of EDEK v2 (per-document wrapping keys, leases) and deterministic values v1.

Each blob is checked twice: through the library, and from first principles with plain HKDF,
AES-GCM and AES-SIV following docs/formats.md and docs/sdk.md — what an SDK in another
language would do. The Python SDK's own tests read the same files (tests/sdk/).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from keycore import errors
from keycore.crypto import envelope

VECTORS = Path(__file__).parent / "vectors"


def cases(name: str) -> list[dict]:
    return json.loads((VECTORS / f"{name}.json").read_text())["cases"]


def ids(name: str) -> list[str]:
    return [c["description"] for c in cases(name)]


def handle_for(case: dict) -> envelope.TenantKeyHandle:
    return envelope.TenantKeyHandle(
        bytes.fromhex(case["tenant_uid"]), case["key_version"], bytes.fromhex(case["tenant_key"])
    )


def hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def expand(prk: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


@pytest.mark.parametrize("case", cases("edek_v2"), ids=ids("edek_v2"))
def test_edek_v2_vectors_decrypt_through_the_library(case):
    edek = bytes.fromhex(case["edek"])
    blobs = {name: bytes.fromhex(f["ciphertext"]) for name, f in case["fields"].items()}
    expected = {name: bytes.fromhex(f["plaintext"]) for name, f in case["fields"].items()}
    handle = handle_for(case)
    assert envelope.decrypt_document(handle, edek, blobs) == expected
    lease = envelope.LeaseKey(
        handle.tenant_uid, case["key_version"], bytes.fromhex(case["lease_id"]), bytes.fromhex(case["lease_key"])
    )
    assert envelope.decrypt_with_lease(lease, edek, blobs) == expected
    assert envelope.edek_lease_id(edek).hex() == case["lease_id"]


@pytest.mark.parametrize("case", cases("edek_v2"), ids=ids("edek_v2"))
def test_edek_v2_vectors_from_first_principles(case):
    tenant_uid, version = bytes.fromhex(case["tenant_uid"]), case["key_version"]
    lease_id, edek = bytes.fromhex(case["lease_id"]), bytes.fromhex(case["edek"])
    lease_key = hkdf(
        bytes.fromhex(case["tenant_key"]), b"keycore/lease/v1" + tenant_uid + version.to_bytes(4, "big") + lease_id
    )
    assert lease_key.hex() == case["lease_key"]
    assert edek[:2] == b"\xed\x02" and len(edek) == 98
    assert int.from_bytes(edek[2:6], "big") == version and edek[6:22] == lease_id
    document_id = edek[22:38]
    dek = AESGCM(lease_key).decrypt(edek[38:50], edek[50:], edek[:38] + tenant_uid)
    for name, field in case["fields"].items():
        blob = bytes.fromhex(field["ciphertext"])
        aad = b"\xfd\x01" + document_id + name.encode()
        assert AESGCM(dek).decrypt(blob[2:14], blob[14:], aad).hex() == field["plaintext"]


@pytest.mark.parametrize("case", cases("edek_v2"), ids=ids("edek_v2"))
def test_edek_v2_vectors_fail_under_another_tenant_or_lease(case):
    edek = bytes.fromhex(case["edek"])
    with pytest.raises(errors.AuthenticationFailed):
        envelope.decrypt_document(handle_for(dict(case, tenant_uid="ff" * 16)), edek, {})
    handle = handle_for(case)
    other = handle.lease(bytes(range(16)))
    with pytest.raises(errors.AuthenticationFailed, match="lease"):
        envelope.decrypt_with_lease(other, edek, {})
    # the lease id edited to another lease the reader holds: the associated data gives it away
    forged = edek[:6] + bytes(range(16)) + edek[22:]
    with pytest.raises(errors.AuthenticationFailed):
        envelope.decrypt_with_lease(other, forged, {})


@pytest.mark.parametrize("case", cases("deterministic_v1"), ids=ids("deterministic_v1"))
def test_deterministic_v1_vectors(case):
    tenant_uid, version = bytes.fromhex(case["tenant_uid"]), case["key_version"]
    blob, value, field = bytes.fromhex(case["ciphertext"]), bytes.fromhex(case["plaintext"]), case["field"]
    handle = handle_for(case)
    # the library: same bytes again (deterministic), and back
    assert handle.deterministic().encrypt(field, value) == blob
    assert handle.deterministic().decrypt(field, blob) == value
    # first principles
    base = hkdf(
        bytes.fromhex(case["tenant_key"]), b"keycore/deterministic/v1" + tenant_uid + version.to_bytes(4, "big")
    )
    assert base.hex() == case["deterministic_base"]
    field_key = expand(base, b"keycore/deterministic-field/v1" + field.encode(), 64)
    assert blob[:6] == b"\xde\x01" + version.to_bytes(4, "big")
    assert AESSIV(field_key).decrypt(blob[6:], [blob[:6]]) == value


def test_deterministic_vectors_differ_by_field_and_version():
    by = {c["description"]: c["ciphertext"] for c in cases("deterministic_v1")}
    email = by["an email, version 1"]
    assert email != by["the same email in another field"]
    assert email != by["the same email under version 2"]
