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
from keycore.crypto.formats import parse_edek


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


def test_a_process_takes_a_new_lease_before_its_lease_key_wraps_too_many_deks(alice, monkeypatch):
    """The 2^32 bound of random nonces is per key: KeyCore counts the wraps of each lease key it holds and
    moves to a new lease past LeaseKey.max_wraps (2^24). Lowered to 3 here: 10 documents take 4 leases."""
    monkeypatch.setattr(LeaseKey, "max_wraps", 3)
    first = alice.server_lease.lease_id
    documents = [encrypt_document(alice, {"a": bytes([i])}) for i in range(10)]
    leases = [envelope.edek_lease_id(edek) for edek, _ in documents]
    assert leases[0] == first
    assert [leases.count(lease) for lease in dict.fromkeys(leases)] == [3, 3, 3, 1]
    for i, (edek, blobs) in enumerate(documents):  # every one still decrypts, under its own lease
        assert decrypt_document(alice, edek, blobs) == {"a": bytes([i])}
    # rewraps count too
    for edek, _ in documents[:3]:
        rewrap_edek(edek, alice, alice)
    assert len({envelope.edek_lease_id(rewrap_edek(documents[0][0], alice, alice))} | set(leases)) == 5


def test_a_lease_refuses_to_wrap_past_its_maximum(alice, monkeypatch):
    monkeypatch.setattr(LeaseKey, "max_wraps", 2)
    sdk = alice.lease(os.urandom(16))
    edek, blobs = encrypt_with_lease(sdk, {"a": b"1"})
    encrypt_with_lease(sdk, {"a": b"2"})
    with pytest.raises(errors.LeaseExhausted):
        encrypt_with_lease(sdk, {"a": b"3"})
    assert decrypt_with_lease(sdk, edek, blobs) == {"a": b"1"}  # decrypting is not limited


def test_wrap_counting_is_exact_across_threads(alice):
    import threading

    lease = alice.lease(os.urandom(16))
    threads = [threading.Thread(target=lambda: [lease.take_wrap() for _ in range(20_000)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert next(lease._wraps) == 80_000


def test_a_lease_and_the_server_read_each_others_documents(alice):
    lease_id = os.urandom(16)
    sdk = LeaseKey(alice.tenant_uid, alice.version, lease_id, alice.lease_key(lease_id))
    edek, blobs = encrypt_with_lease(sdk, {"x": b"from the sdk"})
    assert envelope.edek_lease_id(edek) == lease_id
    assert decrypt_document(alice, edek, blobs) == {"x": b"from the sdk"}  # the server re-derives the lease
    server_edek, server_blobs = encrypt_document(alice, {"x": b"from the server"})
    server_id = envelope.edek_lease_id(server_edek)
    assert server_id == alice.server_lease.lease_id != lease_id
    server_lease = LeaseKey(alice.tenant_uid, alice.version, server_id, alice.lease_key(server_id))
    assert decrypt_with_lease(server_lease, server_edek, server_blobs) == {"x": b"from the server"}
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_with_lease(sdk, server_edek, server_blobs)


def test_a_lease_key_is_not_the_tenant_key_and_leases_differ(alice):
    assert alice.lease_key(bytes(16)) != alice._key
    assert alice.lease_key(bytes(16)) != alice.lease_key(b"\x01" * 16)
    # two processes holding one tenant key version wrap under different leases
    twin = TenantKeyHandle(alice.tenant_uid, alice.version, alice._key)
    assert twin.server_lease.lease_id != alice.server_lease.lease_id


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
