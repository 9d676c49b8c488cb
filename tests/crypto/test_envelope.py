"""Document encryption: round trips, bindings, tampering, rewrap."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keycore import errors
from keycore.crypto.envelope import (
    TENANT_KEY_BYTES,
    TenantKeyHandle,
    decrypt_document,
    edek_key_version,
    encrypt_document,
    key_check_value,
    key_check_value_matches,
    new_tenant_key,
    parse_edek,
    rewrap_edek,
)

EDEK_BYTES = 98  # v2, the format written since the per-document wrapping key
FIELD_OVERHEAD = 30


def make_handle(version: int = 1, tenant: bytes | None = None, key: bytes | None = None) -> TenantKeyHandle:
    return TenantKeyHandle(tenant or uuid.uuid4().bytes, version, key or new_tenant_key())


@pytest.fixture
def alice() -> TenantKeyHandle:
    return make_handle(version=3)


@pytest.fixture
def bob() -> TenantKeyHandle:
    return make_handle(version=3)


field_names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
documents = st.dictionaries(field_names, st.binary(max_size=300), max_size=8)


# -- tenant keys -------------------------------------------------------------------


def test_new_tenant_keys_are_random_and_256_bits():
    keys = {new_tenant_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == TENANT_KEY_BYTES == 32 for k in keys)


def test_key_check_value_is_the_truncated_hmac_of_the_documented_message():
    key = bytes(range(32))
    assert key_check_value(key) == hmac.new(key, b"keycore/kcv/v1", hashlib.sha256).digest()[:16]
    assert key_check_value_matches(key, key_check_value(key))
    assert not key_check_value_matches(bytes(32), key_check_value(key))


def test_handle_repr_never_shows_key_bytes():
    key = bytes.fromhex("11" * 32)
    handle = TenantKeyHandle(bytes(16), 5, key)
    text = repr(handle) + str(handle)
    assert "11" * 8 not in text
    assert key.decode("latin-1") not in text
    assert "version=5" in text
    assert handle.version == 5
    assert handle.tenant_uid == bytes(16)


def test_handle_cannot_be_pickled(alice):
    with pytest.raises(TypeError):
        pickle.dumps(alice)


def test_handle_has_no_instance_dict(alice):
    with pytest.raises(AttributeError):
        alice.key = b"x"


@pytest.mark.parametrize(
    ("tenant", "version", "key"),
    [
        (bytes(15), 1, bytes(32)),
        ("0" * 32, 1, bytes(32)),
        (bytes(16), -1, bytes(32)),
        (bytes(16), 2**32, bytes(32)),
        (bytes(16), "1", bytes(32)),
        (bytes(16), 1, bytes(16)),
        (bytes(16), 1, "k" * 32),
    ],
)
def test_handle_rejects_bad_tenant_version_or_key(tenant, version, key):
    with pytest.raises(errors.InvalidInput):
        TenantKeyHandle(tenant, version, key)


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1024, 65536, 65537, 1024 * 1024])
def test_documents_of_every_size_round_trip(alice, size):
    value = os.urandom(size)
    edek, blobs = encrypt_document(alice, {"body": value})
    assert len(edek) == EDEK_BYTES
    assert len(blobs["body"]) == size + FIELD_OVERHEAD
    assert decrypt_document(alice, edek, blobs) == {"body": value}


def test_many_fields_round_trip(alice):
    fields = {f"field-{i}": os.urandom(i) for i in range(200)}
    edek, blobs = encrypt_document(alice, fields)
    assert set(blobs) == set(fields)
    assert decrypt_document(alice, edek, blobs) == fields


def test_an_empty_document_is_an_edek_alone(alice):
    edek, blobs = encrypt_document(alice, {})
    assert blobs == {}
    assert decrypt_document(alice, edek, {}) == {}


def test_a_subset_of_fields_can_be_decrypted(alice):
    edek, blobs = encrypt_document(alice, {"a": b"1", "b": b"2", "c": b"3"})
    assert decrypt_document(alice, edek, {"b": blobs["b"]}) == {"b": b"2"}


def test_bytes_like_values_and_blobs_are_accepted(alice):
    edek, blobs = encrypt_document(alice, {"a": bytearray(b"xy"), "b": memoryview(b"zz")})
    assert decrypt_document(alice, bytearray(edek), {"a": memoryview(blobs["a"]), "b": bytearray(blobs["b"])}) == {
        "a": b"xy",
        "b": b"zz",
    }


def test_every_document_gets_a_fresh_dek_id_and_nonces(alice):
    first = encrypt_document(alice, {"a": b"same"})
    second = encrypt_document(alice, {"a": b"same"})
    assert first[0] != second[0]
    assert first[1]["a"] != second[1]["a"]
    assert parse_edek(first[0]).document_id != parse_edek(second[0]).document_id


def test_unicode_and_255_byte_names_work_and_longer_names_are_refused(alice):
    fields = {"n\u00e4me": b"1", "\U0001f511": b"2", "x" * 255: b"3", "\u00e9" * 127: b"4"}
    edek, blobs = encrypt_document(alice, fields)
    assert decrypt_document(alice, edek, blobs) == fields
    with pytest.raises(errors.InvalidInput):
        encrypt_document(alice, {"x" * 256: b""})
    with pytest.raises(errors.InvalidInput):
        encrypt_document(alice, {"\u00e9" * 128: b""})
    with pytest.raises(errors.InvalidInput):
        decrypt_document(alice, edek, {"x" * 256: blobs["x" * 255]})


@pytest.mark.parametrize("name", ["", "\ud800", 7, b"bytes"])
def test_invalid_field_names_are_refused(alice, name):
    with pytest.raises(errors.InvalidInput):
        encrypt_document(alice, {name: b"x"})


@pytest.mark.parametrize("value", ["text", 12, None, ["a"]])
def test_values_that_are_not_bytes_are_refused(alice, value):
    with pytest.raises(errors.InvalidInput):
        encrypt_document(alice, {"a": value})


@settings(max_examples=150, deadline=None)
@given(fields=documents)
def test_any_document_round_trips(fields):
    handle = make_handle()
    edek, blobs = encrypt_document(handle, fields)
    assert decrypt_document(handle, edek, blobs) == fields


@settings(max_examples=100, deadline=None)
@given(fields=documents, old_version=st.integers(0, 2**32 - 1), new_version=st.integers(0, 2**32 - 1))
def test_any_document_survives_rewraps(fields, old_version, new_version):
    old = make_handle(version=old_version)
    same_tenant = make_handle(version=new_version, tenant=old.tenant_uid)
    other_tenant = make_handle(version=new_version)
    edek, blobs = encrypt_document(old, fields)
    for new in (same_tenant, other_tenant):
        moved = rewrap_edek(edek, old, new)
        assert edek_key_version(moved) == new_version
        assert parse_edek(moved).document_id == parse_edek(edek).document_id
        assert decrypt_document(new, moved, blobs) == fields


# -- header parsing ----------------------------------------------------------------------


def test_the_header_says_format_key_version_and_document(alice):
    edek, _ = encrypt_document(alice, {})
    header = parse_edek(edek)
    assert header.format_version == 2
    assert header.key_version == 3 == edek_key_version(edek)
    assert len(header.document_id) == 16
    assert edek[:2] == b"\xed\x02"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xed",
        b"\xed\x01",
        b"hello world",
        hashlib.sha512(b"82 bytes of noise").digest() + bytes(range(18)),
        b"\xed\x03" + bytes(96),
        b"\xfd\x01" + bytes(80),
    ],
    ids=["empty", "kind only", "header only", "text", "noise", "unknown version", "a field"],
)
def test_garbage_is_malformed_not_a_crash(alice, garbage):
    with pytest.raises(errors.MalformedData):
        parse_edek(garbage)
    with pytest.raises(errors.MalformedData):
        edek_key_version(garbage)
    with pytest.raises(errors.MalformedData):
        decrypt_document(alice, garbage, {})


@pytest.mark.parametrize("not_bytes", ["ed01" * 41, None, 82, ["x"]])
def test_edeks_that_are_not_bytes_are_malformed(alice, not_bytes):
    with pytest.raises(errors.MalformedData):
        parse_edek(not_bytes)
    with pytest.raises(errors.MalformedData):
        decrypt_document(alice, not_bytes, {})


def test_a_field_ciphertext_is_not_an_edek(alice):
    _, blobs = encrypt_document(alice, {"a": bytes(52)})
    with pytest.raises(errors.MalformedData, match="field ciphertext"):
        parse_edek(blobs["a"])


def test_an_unknown_edek_version_is_named(alice):
    edek, _ = encrypt_document(alice, {})
    with pytest.raises(errors.MalformedData, match="version 3"):
        parse_edek(b"\xed\x03" + edek[2:])


# -- tampering and truncation -----------------------------------------------------------------


def flipped(blob: bytes, index: int, mask: int) -> bytes:
    return blob[:index] + bytes((blob[index] ^ mask,)) + blob[index + 1 :]


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_flipped_edek_byte_is_caught(alice, mask):
    edek, blobs = encrypt_document(alice, {"a": b"secret"})
    for index in range(len(edek)):
        expected = errors.MalformedData if index < 2 else errors.AuthenticationFailed
        with pytest.raises(expected):
            decrypt_document(alice, flipped(edek, index, mask), blobs)
        with pytest.raises(expected):
            rewrap_edek(flipped(edek, index, mask), alice, alice)


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_flipped_field_byte_is_caught(alice, mask):
    edek, blobs = encrypt_document(alice, {"a": b"secret value", "b": b"other"})
    blob = blobs["a"]
    for index in range(len(blob)):
        expected = errors.MalformedData if index < 2 else errors.AuthenticationFailed
        with pytest.raises(expected) as caught:
            decrypt_document(alice, edek, {"b": blobs["b"], "a": flipped(blob, index, mask)})
        assert caught.value.context["field"] == "a"


def test_every_truncated_edek_is_malformed(alice):
    edek, _ = encrypt_document(alice, {})
    for length in range(len(edek)):
        with pytest.raises(errors.MalformedData):
            decrypt_document(alice, edek[:length], {})
    with pytest.raises(errors.MalformedData):
        decrypt_document(alice, edek + b"\x00", {})


def test_every_truncated_field_is_caught_by_length_or_tag(alice):
    edek, blobs = encrypt_document(alice, {"a": os.urandom(40)})
    blob = blobs["a"]
    for length in range(len(blob)):
        expected = errors.MalformedData if length < FIELD_OVERHEAD else errors.AuthenticationFailed
        with pytest.raises(expected):
            decrypt_document(alice, edek, {"a": blob[:length]})
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(alice, edek, {"a": blob + b"\x00"})


@pytest.mark.parametrize("garbage", [b"", b"x", b"\xfd\x02" + bytes(40), b"\xed\x01" + bytes(80), "text", None])
def test_garbage_fields_are_malformed(alice, garbage):
    edek, _ = encrypt_document(alice, {"a": b""})
    with pytest.raises(errors.MalformedData):
        decrypt_document(alice, edek, {"a": garbage})


def test_failures_never_leak_cryptography_exceptions(alice):
    edek, _ = encrypt_document(alice, {"a": b"x"})
    for blob in (os.urandom(30), b"\xfd\x01" + os.urandom(100)):
        with pytest.raises(errors.CryptoError):
            decrypt_document(alice, edek, {"a": blob})


# -- bindings -----------------------------------------------------------------------------


def test_an_edek_of_one_tenant_fails_with_another_tenants_handle(alice, bob):
    edek, blobs = encrypt_document(alice, {"a": b"alice's"})
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(bob, edek, blobs)


def test_an_edek_fails_with_the_same_key_under_another_tenant_uid(alice):
    """The tenant binding is the associated data, not only the key."""
    key = new_tenant_key()
    mine = TenantKeyHandle(uuid.uuid4().bytes, 1, key)
    theirs = TenantKeyHandle(uuid.uuid4().bytes, 1, key)
    edek, blobs = encrypt_document(mine, {"a": b"x"})
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(theirs, edek, blobs)


def test_an_edek_fails_with_the_same_key_under_another_version():
    key, tenant = new_tenant_key(), uuid.uuid4().bytes
    v1, v2 = TenantKeyHandle(tenant, 1, key), TenantKeyHandle(tenant, 2, key)
    edek, _ = encrypt_document(v1, {})
    with pytest.raises(errors.AuthenticationFailed, match="version 1"):
        decrypt_document(v2, edek, {})
    # Even with the version field edited to match, the associated data gives it away.
    forged = edek[:2] + (2).to_bytes(4, "big") + edek[6:]
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(v2, forged, {})


def test_a_field_of_tenant_a_fails_under_tenant_bs_edek(alice, bob):
    _, alice_blobs = encrypt_document(alice, {"a": b"alice's"})
    bob_edek, _ = encrypt_document(bob, {"a": b"bob's"})
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(bob, bob_edek, alice_blobs)


def test_fields_cannot_be_swapped_between_documents(alice):
    edek_1, blobs_1 = encrypt_document(alice, {"a": b"one"})
    _, blobs_2 = encrypt_document(alice, {"a": b"two"})
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(alice, edek_1, {"a": blobs_2["a"]})
    assert decrypt_document(alice, edek_1, blobs_1) == {"a": b"one"}


def test_fields_cannot_be_swapped_between_names(alice):
    edek, blobs = encrypt_document(alice, {"salary": b"100", "bonus": b"999"})
    with pytest.raises(errors.AuthenticationFailed, match="salary"):
        decrypt_document(alice, edek, {"salary": blobs["bonus"]})


def test_a_document_id_edited_in_the_edek_fails(alice):
    edek, blobs = encrypt_document(alice, {"a": b"x"})
    other_id = os.urandom(16)
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(alice, edek[:22] + other_id + edek[38:], blobs)


# -- rewrap -----------------------------------------------------------------------------------


def test_rewrap_to_a_newer_version_keeps_fields_valid(alice):
    newer = make_handle(version=4, tenant=alice.tenant_uid)
    edek, blobs = encrypt_document(alice, {"a": b"x" * 1024})
    moved = rewrap_edek(edek, alice, newer)
    assert edek_key_version(moved) == 4
    assert decrypt_document(newer, moved, blobs) == {"a": b"x" * 1024}
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(newer, edek, blobs)


def test_rewrap_to_another_tenant_moves_the_document(alice, bob):
    edek, blobs = encrypt_document(alice, {"a": b"moving", "b": b""})
    moved = rewrap_edek(edek, alice, bob)
    assert decrypt_document(bob, moved, blobs) == {"a": b"moving", "b": b""}
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(bob, edek, blobs)
    with pytest.raises(errors.AuthenticationFailed):
        decrypt_document(alice, moved, blobs)


def test_rewrap_needs_the_key_the_edek_is_under(alice, bob):
    edek, _ = encrypt_document(alice, {})
    with pytest.raises(errors.AuthenticationFailed):
        rewrap_edek(edek, bob, alice)
    with pytest.raises(errors.MalformedData):
        rewrap_edek(b"nope", alice, bob)


def test_rewrap_uses_a_fresh_nonce(alice, bob):
    edek, _ = encrypt_document(alice, {})
    assert rewrap_edek(edek, alice, bob) != rewrap_edek(edek, alice, bob)
