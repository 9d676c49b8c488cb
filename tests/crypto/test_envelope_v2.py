"""EDEK v2: every document's DEK under its own derived key; v1 documents keep decrypting and move to v2."""

from __future__ import annotations

import os
import uuid

import pytest

from keycore import errors
from keycore.crypto import envelope
from keycore.crypto.envelope import (
    LeaseKey,
    TenantKeyHandle,
    decrypt_document,
    decrypt_with_lease,
    encrypt_document,
    encrypt_with_lease,
    new_tenant_key,
    rewrap_edek,
    rewrap_with_leases,
)
from keycore.crypto.formats import SERVER_LEASE_ID, parse_edek


@pytest.fixture
def alice() -> TenantKeyHandle:
    return TenantKeyHandle(uuid.uuid4().bytes, 3, new_tenant_key())


def _old_v1_document(handle: TenantKeyHandle, fields: dict[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """A document as KeyCore wrote them before v2 (the DEK directly under the tenant key)."""
    edek, blobs = encrypt_document(handle, fields)
    _, dek = envelope._unwrap_dek(handle, edek)
    document_id = parse_edek(edek).document_id
    return envelope._wrap_dek_v1(handle, document_id, dek, os.urandom(12)), blobs


def test_v1_documents_decrypt_and_rewrap_to_v2(alice):
    edek_v1, blobs = _old_v1_document(alice, {"a": b"old"})
    assert parse_edek(edek_v1).format_version == 1
    assert decrypt_document(alice, edek_v1, blobs) == {"a": b"old"}
    moved = rewrap_edek(edek_v1, alice, alice)
    assert parse_edek(moved).format_version == 2
    assert decrypt_document(alice, moved, blobs) == {"a": b"old"}


def test_a_repeated_wrap_nonce_reveals_nothing(alice, monkeypatch):
    """The 2^32 bound of random nonces is about two wraps under one key meeting the same nonce: then
    AES-GCM's keystream repeats and wrapped1 XOR wrapped2 = DEK1 XOR DEK2. Force that collision on every
    document (the limit lowered to one): under v1 it leaks, under v2 each document has its own key."""
    nonce = bytes(12)
    real = os.urandom

    def urandom_with_a_stuck_nonce(n: int) -> bytes:
        out = bytearray(real(n))
        out[48:60] = nonce  # DEK (32), document id (16), then the EDEK nonce
        return bytes(out)

    monkeypatch.setattr(envelope, "_urandom", urandom_with_a_stuck_nonce)
    deks, wrapped_v1, wrapped_v2 = [], [], []
    for _ in range(2):
        edek, _ = encrypt_document(alice, {})
        assert edek[38:50] == nonce
        _, dek = envelope._unwrap_dek(alice, edek)
        deks.append(dek)
        wrapped_v2.append(edek[50:82])
        wrapped_v1.append(envelope._wrap_dek_v1(alice, parse_edek(edek).document_id, dek, nonce)[34:66])

    def xor(a: bytes, b: bytes) -> bytes:
        return bytes(x ^ y for x, y in zip(a, b, strict=True))

    assert xor(*wrapped_v1) == xor(*deks)  # the hazard the old format had
    assert xor(*wrapped_v2) != xor(*deks)  # gone


def test_every_document_has_its_own_wrapping_key(alice):
    keys = set()
    for _ in range(200):
        edek, _ = encrypt_document(alice, {})
        keys.add(alice.server_lease.document_key(parse_edek(edek).document_id))
    assert len(keys) == 200


def test_a_lease_and_the_server_read_each_others_documents(alice):
    lease_id = os.urandom(16)
    sdk = LeaseKey(alice.tenant_uid, alice.version, lease_id, alice.lease_key(lease_id))
    edek, blobs = encrypt_with_lease(sdk, {"x": b"from the sdk"})
    assert envelope.edek_lease_id(edek) == lease_id
    assert decrypt_document(alice, edek, blobs) == {"x": b"from the sdk"}  # the server re-derives the lease
    server_edek, server_blobs = encrypt_document(alice, {"x": b"from the server"})
    assert envelope.edek_lease_id(server_edek) == SERVER_LEASE_ID
    server_lease = LeaseKey(alice.tenant_uid, alice.version, SERVER_LEASE_ID, alice.lease_key(SERVER_LEASE_ID))
    assert decrypt_with_lease(server_lease, server_edek, server_blobs) == {"x": b"from the server"}
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_with_lease(sdk, server_edek, server_blobs)


def test_a_lease_key_is_not_the_tenant_key_and_leases_differ(alice):
    assert alice.lease_key(bytes(16)) != alice._key
    assert alice.lease_key(bytes(16)) != alice.lease_key(b"\x01" * 16)


def test_sdk_rekey_moves_a_document_between_leases_and_versions(alice):
    newer = TenantKeyHandle(alice.tenant_uid, 4, new_tenant_key())
    old = alice.lease(os.urandom(16))
    new = newer.lease(os.urandom(16))
    edek, blobs = encrypt_with_lease(old, {"x": b"moving"})
    moved = rewrap_with_leases(edek, old, new)
    assert parse_edek(moved).document_id == parse_edek(edek).document_id
    assert decrypt_document(newer, moved, blobs) == {"x": b"moving"}
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(alice, moved, blobs)


def test_a_lease_refuses_v1_edeks_with_a_reason(alice):
    edek_v1, _ = _old_v1_document(alice, {})
    with pytest.raises(errors.MalformedData, match="v1"):
        decrypt_with_lease(alice.server_lease, edek_v1, {})


def test_keys_cannot_be_pickled(alice):
    import pickle

    for obj in (alice, alice.server_lease, alice.deterministic()):
        with pytest.raises(TypeError):
            pickle.dumps(obj)


def test_deterministic_values(alice):
    det = alice.deterministic()
    a = det.encrypt("email", b"ada@example.com")
    assert a == det.encrypt("email", b"ada@example.com")
    assert a != det.encrypt("email2", b"ada@example.com")
    assert det.decrypt("email", a) == b"ada@example.com"
    with pytest.raises(errors.AuthenticationFailed):
        det.decrypt("email2", a)
    with pytest.raises(errors.AuthenticationFailed):
        det.decrypt("email", a[:-1] + bytes((a[-1] ^ 1,)))
    with pytest.raises(errors.MalformedData):
        det.decrypt("email", b"\xed\x02" + a[2:])
    other = TenantKeyHandle(uuid.uuid4().bytes, 3, new_tenant_key()).deterministic()
    with pytest.raises(errors.AuthenticationFailed):
        other.decrypt("email", a)
