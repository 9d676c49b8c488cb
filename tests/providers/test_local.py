"""The local provider: KeyCore's own software KEK, the vendor-provided key."""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from keycore import errors
from keycore.crypto.envelope import TenantKeyHandle, decrypt_document, encrypt_document, new_tenant_key
from keycore.providers.base import WrapContext
from keycore.providers.local import LocalProvider


def context(tenant: str | None = None, version: int = 1) -> WrapContext:
    return WrapContext(tenant or uuid.uuid4().hex, "acme", "cfg-1", version)


@pytest.fixture
def provider() -> LocalProvider:
    return LocalProvider({}, LocalProvider.generate_secrets())


def test_it_declares_itself_as_the_vendor_provided_key():
    assert LocalProvider.name == "local"
    assert LocalProvider.label == "KeyCore (vendor-provided)"
    assert LocalProvider.fields == ()
    assert LocalProvider.tenant_may_create is False
    assert LocalProvider.vendor_may_create is True


def test_it_is_in_the_registry():
    from keycore.providers.registry import PROVIDERS

    assert PROVIDERS["local"] == "keycore.providers.local.LocalProvider"


def test_generated_secrets_hold_a_random_32_byte_kek():
    first, second = LocalProvider.generate_secrets(), LocalProvider.generate_secrets()
    assert set(first) == {"kek"}
    assert len(base64.b64decode(first["kek"])) == 32
    assert first != second


def test_wrap_and_unwrap_a_tenant_key(provider):
    key, ctx = new_tenant_key(), context()
    wrapped = provider.wrap(key, ctx)
    assert key not in wrapped
    assert len(wrapped) == 70
    assert wrapped[:2] == b"\x1e\x01"
    assert provider.unwrap(wrapped, ctx) == key


def test_an_unwrapped_key_encrypts_and_decrypts_documents(provider):
    tenant = uuid.uuid4()
    ctx = context(tenant.hex, 1)
    wrapped = provider.wrap(new_tenant_key(), ctx)
    # ... later, in another process, from the stored wrapped key:
    handle = TenantKeyHandle(tenant.bytes, 1, provider.unwrap(wrapped, ctx))
    edek, blobs = encrypt_document(handle, {"a": b"x"})
    again = TenantKeyHandle(tenant.bytes, 1, provider.unwrap(wrapped, ctx))
    assert decrypt_document(again, edek, blobs) == {"a": b"x"}


def test_wraps_are_fresh_each_time(provider):
    key, ctx = new_tenant_key(), context()
    assert provider.wrap(key, ctx) != provider.wrap(key, ctx)


def test_a_key_wrapped_for_one_tenant_does_not_unwrap_for_another(provider):
    wrapped = provider.wrap(new_tenant_key(), context("a" * 32))
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(wrapped, context("b" * 32))


def test_a_key_wrapped_for_one_version_does_not_unwrap_as_another(provider):
    tenant = uuid.uuid4().hex
    wrapped = provider.wrap(new_tenant_key(), context(tenant, 1))
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(wrapped, context(tenant, 2))


def test_the_config_uid_is_not_part_of_the_binding(provider):
    """Tenant keys move between configurations by rewrap, not by copying blobs; only tenant and version bind."""
    tenant = uuid.uuid4().hex
    wrapped = provider.wrap(b"k" * 32, WrapContext(tenant, "acme", "cfg-1", 1))
    assert provider.unwrap(wrapped, WrapContext(tenant, "acme", "cfg-2", 1)) == b"k" * 32


def test_every_flipped_byte_is_caught(provider):
    ctx = context()
    wrapped = provider.wrap(new_tenant_key(), ctx)
    for index in range(len(wrapped)):
        bad = wrapped[:index] + bytes((wrapped[index] ^ 0x01,)) + wrapped[index + 1 :]
        if index < 2:
            expected = errors.MalformedData
        elif index < 10:
            expected = errors.KmsKeyNotFound
        else:
            expected = errors.AuthenticationFailed
        with pytest.raises(expected):
            provider.unwrap(bad, ctx)


@pytest.mark.parametrize("garbage", [b"", b"\x1e\x01", b"\x1e\x01" + bytes(35), b"\x1e\x09" + bytes(68), b"junk"])
def test_garbage_is_malformed(provider, garbage):
    with pytest.raises(errors.MalformedData):
        provider.unwrap(garbage, context())


def test_a_key_wrapped_by_another_local_kek_names_both_keks(provider):
    other = LocalProvider({}, LocalProvider.generate_secrets())
    ctx = context()
    wrapped = other.wrap(new_tenant_key(), ctx)
    with pytest.raises(errors.KmsKeyNotFound) as caught:
        provider.unwrap(wrapped, ctx)
    assert other.describe().split()[-1] in caught.value.detail
    assert provider.describe().split()[-1] in caught.value.detail


def test_describe_shows_a_fingerprint_never_the_kek():
    secrets = LocalProvider.generate_secrets()
    described = LocalProvider({}, secrets).describe()
    kek = base64.b64decode(secrets["kek"])
    assert described.startswith("KeyCore local key ")
    assert len(described.split()[-1]) == 16
    assert secrets["kek"] not in described
    assert kek.hex()[:8] not in described


@pytest.mark.parametrize(
    "secrets", [{}, {"kek": ""}, {"kek": "not base64!"}, {"kek": base64.b64encode(bytes(16)).decode()}]
)
def test_a_missing_or_garbled_kek_is_a_misconfiguration(secrets):
    provider = LocalProvider({}, secrets)
    with pytest.raises(errors.KmsMisconfigured):
        provider.wrap(new_tenant_key(), context())
    with pytest.raises(errors.KmsMisconfigured):
        provider.unwrap(b"\x1e\x01" + bytes(68), context())
    assert "missing" in provider.describe()


def test_health_check_passes_with_a_good_kek_and_reports_a_bad_one(provider):
    assert provider.check(context(version=0)).ok
    broken = LocalProvider({}, {"kek": "garbage"}).check(context(version=0))
    assert not broken.ok
    assert broken.error_code == "kms-misconfigured"


def test_clean_keeps_a_generated_kek_and_refuses_a_bad_one():
    secrets = LocalProvider.generate_secrets()
    assert LocalProvider.clean({"junk": 1}, secrets) == ({}, secrets)
    assert LocalProvider.clean({}, {}) == ({}, {})
    with pytest.raises(errors.InvalidInput) as caught:
        LocalProvider.clean({}, {"kek": "short"})
    assert "kek" in caught.value.field_errors


def test_only_bytes_are_wrapped(provider):
    with pytest.raises(errors.InvalidInput):
        provider.wrap("a string", context())
    with pytest.raises(errors.InvalidInput):
        provider.wrap(b"", context())


def test_wrapping_works_for_keys_of_other_sizes(provider):
    """The provider is generic: health-check probes and future key sizes wrap too."""
    ctx = context(version=0)
    for size in (1, 16, 32, 64):
        key = os.urandom(size)
        assert provider.unwrap(provider.wrap(key, ctx), ctx) == key
