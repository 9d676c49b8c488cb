"""PKCS#11 provider against SoftHSM2 tokens initialised for this test session."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from keycore import errors
from keycore.providers import pkcs11 as pkcs11_provider
from keycore.providers.pkcs11 import HEADER, Pkcs11Provider
from keycore.providers.registry import get_provider_class
from tests.providers.conftest import make_context
from tests.providers.servers import init_softhsm_token


def new_label(prefix: str = "kek") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def build(token, key_label, **settings):
    provider = Pkcs11Provider(*Pkcs11Provider.clean(*token.provider_settings(key_label, **settings)))
    provider.retry_policy = pkcs11_provider.RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
    return provider


@pytest.fixture
def key_label(softhsm_token):
    label = new_label()
    softhsm_token.create_aes_key(label)
    return label


@pytest.fixture
def provider(softhsm_token, key_label):
    return build(softhsm_token, key_label)


def failed_check(provider, context, code):
    result = provider.check(context)
    assert not result.ok, result.detail
    assert result.error_code == code, result.detail
    return result.detail


# -- the registry ------------------------------------------------------------------


def test_the_registry_names_it_pkcs11():
    assert get_provider_class("pkcs11") is Pkcs11Provider


def test_only_the_pin_is_secret():
    assert {f.name for f in Pkcs11Provider.fields if f.secret} == {"pin"}


# -- wrap and unwrap ---------------------------------------------------------------


def test_it_round_trips_a_tenant_key(provider, context):
    key = os.urandom(32)
    wrapped = provider.wrap(key, context)
    assert wrapped[:2] == HEADER == b"\x11\x01"
    assert len(wrapped) == 2 + 12 + 32 + 16
    assert key not in wrapped
    assert provider.unwrap(wrapped, context) == key


def test_each_wrap_uses_a_fresh_iv(provider, context):
    key = os.urandom(32)
    first, second = provider.wrap(key, context), provider.wrap(key, context)
    assert first[2:14] != second[2:14]


@pytest.mark.parametrize("other", [{"tenant_uid": "f" * 32}, {"key_version": 2}], ids=["other tenant", "other version"])
def test_a_wrong_context_is_refused(provider, other):
    context = make_context("a" * 32, 1)
    wrapped = provider.wrap(os.urandom(32), context)
    wrong = make_context(other.get("tenant_uid", "a" * 32), other.get("key_version", 1))
    with pytest.raises(errors.AuthenticationFailed, match="belongs to another tenant, version or key"):
        provider.unwrap(wrapped, wrong)


@pytest.mark.parametrize("position", [2, 20, -1], ids=["iv", "ciphertext", "tag"])
def test_a_tampered_blob_is_refused(provider, context, position):
    wrapped = bytearray(provider.wrap(os.urandom(32), context))
    wrapped[position] ^= 0x01
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(bytes(wrapped), context)


@pytest.mark.parametrize(
    "blob", [b"", b"\x11", b"\x11\x01" + b"x" * 28, b"\x11\x02" + b"x" * 60, b"\x4b\x01" + b"x" * 60]
)
def test_what_is_not_a_pkcs11_wrapped_key_is_malformed(provider, context, blob):
    with pytest.raises(errors.MalformedData):
        provider.unwrap(blob, context)


def test_a_blob_of_another_key_is_refused(softhsm_token, provider, context):
    other_label = new_label()
    softhsm_token.create_aes_key(other_label)
    wrapped = build(softhsm_token, other_label).wrap(os.urandom(32), context)
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(wrapped, context)


def test_two_spellings_of_the_module_path_share_one_module(softhsm_token, key_label, context, tmp_path):
    link = tmp_path / "libsofthsm2-link.so"
    link.symlink_to(softhsm_token.module)
    via_link = build(softhsm_token, key_label, module_path=str(link))
    direct = build(softhsm_token, key_label)
    key = os.urandom(32)
    # a second C_Initialize of the same library would fail: both go through one lib and one lock
    assert direct.unwrap(via_link.wrap(key, context), context) == key
    assert pkcs11_provider._module(str(link)) is pkcs11_provider._module(softhsm_token.module)


# -- check (test connection) -------------------------------------------------------


def test_check_passes_for_a_usable_key(provider, key_label, context):
    result = provider.check(context)
    assert result.ok, result.detail
    assert f"token 'keycore-test' key '{key_label}'" in result.detail
    assert "warnings" not in result.extra


def test_check_reports_a_wrong_pin(softhsm_token, key_label, context):
    provider = build(softhsm_token, key_label)
    provider._pin = "0000"
    provider._pin_digest = b"another pin"
    detail = failed_check(provider, context, "kms-access-denied")
    assert detail.startswith("PIN incorrect for token 'keycore-test'")


def test_a_rejected_pin_is_not_tried_again(softhsm_token, key_label, context):
    provider = Pkcs11Provider(*softhsm_token.provider_settings(key_label), timeout=1)
    provider._pin, provider._pin_digest = "0000", b"another pin"
    with pytest.raises(errors.KmsAccessDenied, match="PIN incorrect"):
        provider.wrap(os.urandom(32), context)
    provider.module_path = "/nonexistent/module.so"  # would fail differently if the token were asked again
    with pytest.raises(errors.KmsAccessDenied, match="not tried again"):
        provider.wrap(os.urandom(32), context)


def test_a_wrong_pin_does_not_lock_out_a_right_one(softhsm_token, key_label, context):
    good = build(softhsm_token, key_label)
    bad = Pkcs11Provider(*softhsm_token.provider_settings(key_label))
    bad._pin, bad._pin_digest = "0000", b"another pin"
    key = os.urandom(32)
    wrapped = good.wrap(key, context)
    # the token is logged in with the right PIN, yet the wrong one is still refused...
    assert failed_check(bad, context, "kms-access-denied").startswith("PIN incorrect")
    # ...and the right one logs in again
    assert good.unwrap(wrapped, context) == key


def test_check_reports_a_missing_token(softhsm_token, key_label, context):
    detail = failed_check(build(softhsm_token, key_label, token_label="no-such-token"), context, "kms-misconfigured")
    assert detail.startswith("Token 'no-such-token' not found in the PKCS#11 module")


def test_check_reports_a_missing_key(softhsm_token, context):
    detail = failed_check(build(softhsm_token, "no-such-key"), context, "kms-key-not-found")
    assert detail.startswith("No key labelled 'no-such-key' on token 'keycore-test'")


def test_check_reports_a_key_on_another_token(softhsm_token, key_label, context):
    provider = build(softhsm_token, key_label, token_label="keycore-empty")
    assert f"No key labelled '{key_label}' on token 'keycore-empty'" in failed_check(
        provider, context, "kms-key-not-found"
    )


def test_check_reports_a_key_that_is_not_aes_256(softhsm_token, context):
    label = new_label("aes128")
    softhsm_token.create_aes_key(label, bits=128)
    detail = failed_check(build(softhsm_token, label), context, "kms-misconfigured")
    assert "is AES-128; KeyCore needs AES-256" in detail


def test_a_key_that_may_not_decrypt_is_reported(softhsm_token, context):
    label = new_label("enc-only")
    softhsm_token.create_aes_key(label, decrypt=False)
    provider = build(softhsm_token, label)
    assert "does not allow CKA_DECRYPT" in failed_check(provider, context, "kms-misconfigured")
    wrapped = provider.wrap(os.urandom(32), context)
    with pytest.raises(errors.KmsMisconfigured, match="may not decrypt"):
        provider.unwrap(wrapped, context)


def test_check_warns_about_an_extractable_key(softhsm_token, context):
    label = new_label("extractable")
    softhsm_token.create_aes_key(label, extractable=True)
    result = build(softhsm_token, label).check(context)
    assert result.ok
    assert "CKA_EXTRACTABLE" in result.extra["warnings"][0]


def test_a_token_created_after_the_module_was_loaded_is_found(softhsm_token, provider, context, monkeypatch):
    provider.wrap(os.urandom(32), context)  # the module is loaded and initialised now
    monkeypatch.setattr(pkcs11_provider, "RESCAN_INTERVAL", 0.0)
    late = init_softhsm_token(softhsm_token.conf_path.parent, label=new_label("late"), pin=softhsm_token.pin)
    late.create_aes_key("kek")
    late_provider = build(late, "kek")
    key = os.urandom(32)
    assert late_provider.unwrap(late_provider.wrap(key, context), context) == key
    assert provider.check(context).ok  # the rescan closed its session; it logs in again


# -- revocation: the HSM object is gone --------------------------------------------


def test_a_destroyed_key_is_not_found(softhsm_token, provider, key_label, context):
    wrapped = provider.wrap(os.urandom(32), context)  # the key handle is cached now
    softhsm_token.destroy_key(key_label)
    with pytest.raises(errors.KmsKeyNotFound, match=f"No key labelled '{key_label}' on token 'keycore-test'"):
        provider.unwrap(wrapped, context)
    assert failed_check(provider, context, "kms-key-not-found")


def test_a_replaced_key_with_the_same_label_does_not_unwrap(softhsm_token, provider, key_label, context):
    wrapped = provider.wrap(os.urandom(32), context)
    softhsm_token.destroy_key(key_label)
    softhsm_token.create_aes_key(key_label)
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(wrapped, context)


def test_two_keys_with_one_label_are_a_misconfiguration(softhsm_token, context):
    label = new_label("twice")
    softhsm_token.create_aes_key(label)
    softhsm_token.create_aes_key(label)
    assert "labels must be unique" in failed_check(build(softhsm_token, label), context, "kms-misconfigured")


def test_a_hung_hsm_call_times_out_and_the_queue_moves_on(softhsm_token, key_label, context):
    provider = Pkcs11Provider(*softhsm_token.provider_settings(key_label), timeout=0.2)
    provider.retry_policy = pkcs11_provider.RetryPolicy(attempts=1)
    module = pkcs11_provider._module(softhsm_token.module)
    release = threading.Event()
    module.worker.submit(release.wait, 10)  # the module's thread is stuck in a call
    try:
        with pytest.raises(errors.KmsTimeout, match=r"did not finish encrypt on .* within 0\.2s"):
            provider.wrap(os.urandom(32), context)
    finally:
        release.set()
    key = os.urandom(32)
    assert provider.unwrap(provider.wrap(key, context), context) == key


# -- threads -------------------------------------------------------------------------


def test_one_provider_serves_many_threads(provider):
    barrier = threading.Barrier(8)

    def worker(n: int) -> int:
        barrier.wait()
        context = make_context(f"{n:032x}")
        for _ in range(50):
            key = os.urandom(32)
            assert provider.unwrap(provider.wrap(key, context), context) == key
        return n

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(worker, range(8))) == list(range(8))


def test_providers_of_one_token_share_it_across_threads(softhsm_token, provider, context):
    others = []
    for _ in range(3):
        label = new_label()
        softhsm_token.create_aes_key(label)
        others.append(build(softhsm_token, label))
    providers = [provider, *others]

    def worker(n: int) -> None:
        mine = providers[n % len(providers)]
        for _ in range(25):
            key = os.urandom(32)
            assert mine.unwrap(mine.wrap(key, context), context) == key

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))


# -- clean, help, describe -----------------------------------------------------------


def field_errors(settings, secrets):
    with pytest.raises(errors.InvalidInput) as raised:
        Pkcs11Provider.clean(settings, secrets)
    return raised.value.field_errors


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"module_path": "libsofthsm2.so"}, "module_path", "absolute path"),
        ({"module_path": "/nonexistent/libpkcs11.so"}, "module_path", "There is no file"),
        ({"token_label": "t" * 33}, "token_label", "at most 32 bytes"),
        ({"token_label": ""}, "token_label", "required"),
        ({"key_label": ""}, "key_label", "required"),
    ],
)
def test_clean_reports_field_errors(softhsm_token, change, field, message):
    settings, secrets = softhsm_token.provider_settings("kek")
    problems = field_errors({**settings, **change}, secrets)
    assert any(message in m for m in problems[field]), problems


def test_clean_requires_the_pin(softhsm_token):
    settings, _ = softhsm_token.provider_settings("kek")
    assert field_errors(settings, {}) == {"pin": ["User PIN is required."]}


def test_the_operator_allow_list_limits_modules(softhsm_token, key_label, context, monkeypatch, tmp_path):
    other = tmp_path / "libvendor.so"
    other.write_bytes(b"")
    monkeypatch.setenv("KEYCORE_PKCS11_MODULES", str(other))
    settings, secrets = softhsm_token.provider_settings(key_label)
    assert "not one of the PKCS#11 modules the operator allows" in field_errors(settings, secrets)["module_path"][0]
    # a configuration saved earlier is refused at use, too
    assert "not one of the PKCS#11 modules" in failed_check(
        Pkcs11Provider(settings, secrets), context, "kms-misconfigured"
    )
    monkeypatch.setenv("KEYCORE_PKCS11_MODULES", f"{other}{os.pathsep}{softhsm_token.module}")
    assert Pkcs11Provider.clean(settings, secrets)[0]["module_path"] == softhsm_token.module


def test_setup_help_says_what_the_key_must_be():
    text = Pkcs11Provider.setup_help(tenant_external_id="acme")
    for needed in ("AES-256", "CKA_ENCRYPT", "CKA_DECRYPT", "CKA_LABEL", "CKM_AES_GCM", "pkcs11-tool", "softhsm2-util"):
        assert needed in text


def test_describe_names_token_and_key_but_not_the_pin(provider, key_label, softhsm_token):
    assert provider.describe() == f"token 'keycore-test' key '{key_label}'"
    assert softhsm_token.pin not in provider.describe()
