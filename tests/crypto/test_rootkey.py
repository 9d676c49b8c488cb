"""Sealing secrets under the root key: binding, rotation, errors that say what to fix."""

from __future__ import annotations

import base64
import os
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keycore import errors
from keycore.crypto.rootkey import RootKeyring, generate_root_key_text, key_id, parse_root_key

PURPOSE = "kms-config-secrets"


@pytest.fixture
def old_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def new_key() -> bytes:
    return os.urandom(32)


def test_seal_and_unseal_round_trip(new_key):
    keyring = RootKeyring(new_key)
    blob = keyring.seal(b"aws secret", purpose=PURPOSE, context="cfg-1")
    assert keyring.unseal(blob, purpose=PURPOSE, context="cfg-1") == b"aws secret"
    assert b"aws secret" not in blob
    assert blob[:2] == b"\x5e\x01"
    assert blob[2:10].hex() == keyring.current_id == key_id(new_key)


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=2000), purpose=st.text(min_size=1, max_size=60), context=st.text(max_size=60))
def test_anything_round_trips(plaintext, purpose, context):
    keyring = RootKeyring(bytes(range(32)))
    blob = keyring.seal(plaintext, purpose=purpose, context=context)
    assert keyring.unseal(blob, purpose=purpose, context=context) == plaintext


def test_key_ids_are_short_stable_and_do_not_show_the_key(new_key):
    assert key_id(new_key) == key_id(new_key)
    assert len(key_id(new_key)) == 16
    assert new_key.hex()[:16] not in key_id(new_key)
    assert key_id(bytes(32)) != key_id(b"\x01" + bytes(31))


def test_seals_are_fresh_each_time(new_key):
    keyring = RootKeyring(new_key)
    assert keyring.seal(b"x", purpose=PURPOSE, context="c") != keyring.seal(b"x", purpose=PURPOSE, context="c")


def test_a_blob_cannot_move_to_another_row_or_use(new_key):
    keyring = RootKeyring(new_key)
    blob = keyring.seal(b"pin", purpose=PURPOSE, context="cfg-1")
    with pytest.raises(errors.AuthenticationFailed):
        keyring.unseal(blob, purpose=PURPOSE, context="cfg-2")
    with pytest.raises(errors.AuthenticationFailed):
        keyring.unseal(blob, purpose="totp-seed", context="cfg-1")


def test_purpose_and_context_cannot_be_shifted_into_each_other(new_key):
    keyring = RootKeyring(new_key)
    blob = keyring.seal(b"pin", purpose="ab", context="c")
    with pytest.raises(errors.AuthenticationFailed):
        keyring.unseal(blob, purpose="a", context="bc")


def test_every_flipped_byte_is_caught(new_key):
    keyring = RootKeyring(new_key)
    blob = keyring.seal(b"secret", purpose=PURPOSE, context="c")
    for index in range(len(blob)):
        bad = blob[:index] + bytes((blob[index] ^ 1,)) + blob[index + 1 :]
        if index < 2:
            expected = errors.MalformedData
        elif index < 10:
            expected = errors.KmsMisconfigured  # the key id no longer names a configured key
        else:
            expected = errors.AuthenticationFailed
        with pytest.raises(expected):
            keyring.unseal(bad, purpose=PURPOSE, context="c")


@pytest.mark.parametrize("garbage", [b"", b"\x5e", b"\x5e\x01" + bytes(35), b"\x5e\x02" + bytes(60), b"hello", "text"])
def test_garbage_is_malformed(new_key, garbage):
    keyring = RootKeyring(new_key)
    with pytest.raises(errors.MalformedData):
        keyring.unseal(garbage, purpose=PURPOSE, context="c")
    with pytest.raises(errors.MalformedData):
        keyring.needs_reseal(garbage)


def test_rotation_keeps_old_blobs_readable_and_reseals_them(old_key, new_key):
    before = RootKeyring(old_key)
    blob = before.seal(b"credentials", purpose=PURPOSE, context="cfg-9")

    after = RootKeyring(new_key, [old_key])
    assert after.current_id == key_id(new_key)
    assert after.key_ids == [key_id(new_key), key_id(old_key)]
    assert after.unseal(blob, purpose=PURPOSE, context="cfg-9") == b"credentials"
    assert after.needs_reseal(blob)

    resealed = after.reseal(blob, purpose=PURPOSE, context="cfg-9")
    assert not after.needs_reseal(resealed)
    assert after.reseal(resealed, purpose=PURPOSE, context="cfg-9") == resealed
    assert RootKeyring(new_key).unseal(resealed, purpose=PURPOSE, context="cfg-9") == b"credentials"


def test_reseal_authenticates_before_moving(old_key, new_key):
    blob = RootKeyring(old_key).seal(b"x", purpose=PURPOSE, context="cfg-1")
    with pytest.raises(errors.AuthenticationFailed):
        RootKeyring(new_key, [old_key]).reseal(blob, purpose=PURPOSE, context="cfg-2")


def test_an_unknown_root_key_is_named_with_what_to_do(old_key, new_key):
    blob = RootKeyring(old_key).seal(b"x", purpose=PURPOSE, context="c")
    with pytest.raises(errors.KmsMisconfigured) as caught:
        RootKeyring(new_key).unseal(blob, purpose=PURPOSE, context="c")
    message = caught.value.detail
    assert f"sealed under root key {key_id(old_key)}, which is not configured" in message
    assert "KEYCORE_ROOT_KEY_PREVIOUS" in message
    assert caught.value.context["root_key_id"] == key_id(old_key)


def test_the_current_key_listed_as_previous_too_is_harmless(new_key):
    keyring = RootKeyring(new_key, [new_key])
    assert keyring.key_ids == [key_id(new_key)]


@pytest.mark.parametrize("bad", [bytes(31), bytes(33), "k" * 32])
def test_root_keys_must_be_32_bytes(bad):
    with pytest.raises(errors.InvalidInput):
        RootKeyring(bad)
    with pytest.raises(errors.InvalidInput):
        RootKeyring(bytes(32), [bad])


def test_keyring_never_shows_or_pickles_keys(new_key):
    keyring = RootKeyring(new_key)
    assert new_key.hex() not in repr(keyring)
    assert keyring.current_id in repr(keyring)
    with pytest.raises(TypeError):
        pickle.dumps(keyring)


@pytest.mark.parametrize(
    ("purpose", "context"), [("", "c"), ("p" * 256, "c"), ("\ud800", "c"), ("p", "\udfff"), (1, "c")]
)
def test_unusable_purposes_and_contexts_are_refused(new_key, purpose, context):
    with pytest.raises(errors.InvalidInput):
        RootKeyring(new_key).seal(b"x", purpose=purpose, context=context)


# -- root keys as text ------------------------------------------------------------------------


def test_generated_root_key_text_parses_to_32_random_bytes():
    texts = {generate_root_key_text() for _ in range(20)}
    assert len(texts) == 20
    assert all(len(parse_root_key(t)) == 32 for t in texts)


@pytest.mark.parametrize(
    "encode",
    [
        base64.b64encode,
        base64.urlsafe_b64encode,
        lambda k: base64.urlsafe_b64encode(k).rstrip(b"="),
        lambda k: b"  " + base64.b64encode(k) + b"\n",
    ],
)
def test_root_keys_parse_from_standard_or_urlsafe_base64(encode):
    key = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFE, 0xFF])  # base64 with + and / (or - and _)
    assert parse_root_key(encode(key).decode()) == key


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("not base64 at all!", "not base64"),
        (base64.b64encode(bytes(16)).decode(), "16 bytes"),
        (base64.b64encode(bytes(64)).decode(), "64 bytes"),
        (bytes(32).hex(), "48 bytes"),
    ],
)
def test_bad_root_key_text_says_why_without_echoing_it(text, reason):
    with pytest.raises(errors.InvalidInput) as caught:
        parse_root_key(text)
    assert reason in caught.value.detail
    assert not text or text not in caught.value.detail


def test_keyring_from_setting_text(old_key, new_key):
    other = os.urandom(32)
    previous = f"{base64.b64encode(old_key).decode()}, {base64.urlsafe_b64encode(other).decode()}\n"
    keyring = RootKeyring.from_text(base64.b64encode(new_key).decode(), previous)
    assert keyring.key_ids == [key_id(new_key), key_id(old_key), key_id(other)]
    assert RootKeyring.from_text(base64.b64encode(new_key).decode()).key_ids == [key_id(new_key)]
