"""KMIP provider against the PyKMIP server (mutual TLS, certificates generated per session)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kmip import enums

from keycore import errors
from keycore.providers.kmip import CHECK_DOMAIN, HEADER, KmipProvider
from keycore.providers.registry import get_provider_class
from keycore.providers.retry import RetryPolicy
from tests.providers.conftest import make_context
from tests.providers.servers import start_kmip_server

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def key_uid(kmip_server):
    return kmip_server.create_key()


def build(server, uid, identity=None, *, timeout=3.0, **settings):
    """A provider for ``uid``, through ``clean()`` like a saved configuration."""
    cleaned = KmipProvider.clean(*server.provider_settings(uid, identity, **settings))
    provider = KmipProvider(*cleaned, timeout=timeout)
    provider.retry_policy = FAST_RETRY
    return provider


@pytest.fixture
def provider(kmip_server, key_uid):
    provider = build(kmip_server, key_uid)
    yield provider
    provider.close()


def failed_check(provider, context, code):
    result = provider.check(context)
    assert not result.ok, result.detail
    assert result.error_code == code, result.detail
    return result.detail


# -- the registry ------------------------------------------------------------------


def test_the_registry_names_it_kmip():
    assert get_provider_class("kmip") is KmipProvider


def test_only_the_private_key_is_secret():
    assert {f.name for f in KmipProvider.fields if f.secret} == {"client_key"}


# -- wrap and unwrap ---------------------------------------------------------------


def test_it_round_trips_a_tenant_key(provider, context):
    key = os.urandom(32)
    wrapped = provider.wrap(key, context)
    assert wrapped.startswith(HEADER)
    assert len(wrapped) == 2 + 16 + 64
    assert key not in wrapped
    assert provider.unwrap(wrapped, context) == key


def test_each_wrap_uses_a_fresh_iv(provider, context):
    key = os.urandom(32)
    first, second = provider.wrap(key, context), provider.wrap(key, context)
    assert first[2:18] != second[2:18]
    assert first != second


def test_the_blob_is_cbc_of_the_key_and_its_check_value(kmip_server, provider, key_uid, context):
    """The documented layout, verified with the KEK fetched from the server by its owner."""
    key = os.urandom(32)
    wrapped = provider.wrap(key, context)
    with kmip_server.admin() as admin:
        kek = admin.get(key_uid).value
    iv, ciphertext = wrapped[2:18], wrapped[18:]
    decryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plaintext = unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()
    check = hashlib.sha256(CHECK_DOMAIN + HEADER + context.associated_data() + key).digest()[:16]
    assert plaintext == key + check


@pytest.mark.parametrize("other", [{"tenant_uid": "f" * 32}, {"key_version": 2}], ids=["other tenant", "other version"])
def test_a_wrong_context_is_refused(provider, other):
    context = make_context("a" * 32, 1)
    wrapped = provider.wrap(os.urandom(32), context)
    wrong = make_context(other.get("tenant_uid", "a" * 32), other.get("key_version", 1))
    with pytest.raises(errors.AuthenticationFailed, match="belongs to another tenant, version or key"):
        provider.unwrap(wrapped, wrong)


def test_tampering_is_refused_the_same_way_wherever_it_is(provider, context):
    wrapped = provider.wrap(os.urandom(32), context)
    messages = set()
    for position in (2, 20, 40, len(wrapped) - 1):  # IV, key blocks, check value, padding block
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x01
        with pytest.raises(errors.AuthenticationFailed) as raised:
            provider.unwrap(bytes(tampered), context)
        messages.add(raised.value.detail)
    assert len(messages) == 1  # bad padding and a bad check value read the same: no padding oracle


@pytest.mark.parametrize(
    "blob", [b"", b"\x4b", b"\x4b\x01" + b"x" * 20, b"\x4b\x01" + b"x" * 81, b"\x4b\x09" + b"x" * 80, b"\x11\x01" * 41]
)
def test_what_is_not_a_kmip_wrapped_key_is_malformed(provider, context, blob):
    with pytest.raises(errors.MalformedData):
        provider.unwrap(blob, context)


def test_a_blob_of_another_key_is_refused(kmip_server, provider, context):
    other = build(kmip_server, kmip_server.create_key())
    wrapped = other.wrap(os.urandom(32), context)
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(wrapped, context)


# -- check (test connection) -------------------------------------------------------


def test_check_passes_for_a_usable_key(provider, key_uid, context):
    result = provider.check(context)
    assert result.ok, result.detail
    assert f"key {key_uid}" in result.detail


def test_check_reports_an_unknown_key(kmip_server, context):
    detail = failed_check(build(kmip_server, "999999"), context, "kms-key-not-found")
    assert detail.startswith("No key '999999' on 127.0.0.1:")


def test_check_reports_a_client_not_authorised_for_the_key(kmip_server, key_uid, context):
    provider = build(kmip_server, key_uid, kmip_server.pki.other_client)
    detail = failed_check(provider, context, "kms-access-denied")
    assert f"key '{key_uid}'" in detail
    assert "CN=someone-else" in detail and "authorised" in detail


def test_check_reports_a_client_certificate_the_server_does_not_trust(kmip_server, key_uid, context):
    provider = build(kmip_server, key_uid, kmip_server.pki.untrusted_client)
    detail = failed_check(provider, context, "kms-misconfigured")
    assert detail.startswith(f"Client certificate not trusted by the KMIP server 127.0.0.1:{kmip_server.port}")
    assert "CN=keycore" in detail


def test_check_reports_a_server_certificate_the_ca_bundle_does_not_trust(kmip_server, key_uid, context):
    provider = build(kmip_server, key_uid, ca_bundle=kmip_server.pki.untrusted_ca_pem)
    detail = failed_check(provider, context, "kms-misconfigured")
    assert detail.startswith("Server certificate not trusted")
    assert "CA bundle" in detail


def test_check_reports_a_server_certificate_for_another_name(kmip_server, key_uid, context):
    provider = build(kmip_server, key_uid, server_name="kms.example.com")
    detail = failed_check(provider, context, "kms-misconfigured")
    assert "does not name 'kms.example.com'" in detail


def test_check_accepts_the_name_the_certificate_carries(kmip_server, key_uid, context):
    assert build(kmip_server, key_uid, server_name="localhost").check(context).ok


def test_check_reports_a_key_that_is_not_aes_256(kmip_server, context):
    detail = failed_check(build(kmip_server, kmip_server.create_key(length=128)), context, "kms-misconfigured")
    assert "AES-128" in detail and "AES-256" in detail


def test_check_reports_a_key_not_yet_activated(kmip_server, context):
    detail = failed_check(build(kmip_server, kmip_server.create_key(activate=False)), context, "kms-key-disabled")
    assert "Pre-Active" in detail


def test_check_reports_a_key_that_may_not_decrypt(provider):
    """PyKMIP's client always adds Encrypt and Decrypt to new keys, so the attributes are faked here."""
    attributes = {
        "Object Type": enums.ObjectType.SYMMETRIC_KEY,
        "Cryptographic Algorithm": enums.CryptographicAlgorithm.AES,
        "Cryptographic Length": 256,
        "Cryptographic Usage Mask": enums.CryptographicUsageMask.ENCRYPT.value,
        "State": enums.State.ACTIVE,
    }

    class Answer:
        def get_attributes(self, uid, names):
            return uid, [
                SimpleNamespace(attribute_name=SimpleNamespace(value=n), attribute_value=SimpleNamespace(value=v))
                for n, v in attributes.items()
            ]

    with pytest.raises(errors.KmsMisconfigured, match="lacks the Encrypt and Decrypt bits"):
        provider._require_usable(Answer())
    attributes["Cryptographic Usage Mask"] |= enums.CryptographicUsageMask.DECRYPT.value
    provider._require_usable(Answer())


# -- revocation, enforced by the server ------------------------------------------


def test_a_revoked_key_stops_unwrapping(kmip_server, provider, key_uid, context):
    wrapped = provider.wrap(os.urandom(32), context)
    kmip_server.revoke(key_uid)
    with pytest.raises(errors.KmsKeyDisabled, match=f"key '{key_uid}' .* is Deactivated"):
        provider.unwrap(wrapped, context)
    with pytest.raises(errors.KmsKeyDisabled):
        provider.wrap(os.urandom(32), context)
    assert "Deactivated" in failed_check(provider, context, "kms-key-disabled")


def test_a_key_revoked_as_compromised_says_so(kmip_server, provider, key_uid, context):
    wrapped = provider.wrap(os.urandom(32), context)
    kmip_server.revoke(key_uid, compromised=True)
    with pytest.raises(errors.KmsKeyDisabled, match="revoked as compromised"):
        provider.unwrap(wrapped, context)


def test_a_destroyed_key_is_not_found(kmip_server, provider, key_uid, context):
    wrapped = provider.wrap(os.urandom(32), context)
    kmip_server.destroy(key_uid)
    with pytest.raises(errors.KmsKeyNotFound, match="does not exist or was destroyed"):
        provider.unwrap(wrapped, context)


def test_permanent_errors_are_not_retried(kmip_server, monkeypatch, context):
    provider = build(kmip_server, "999999")
    attempts = count_attempts(monkeypatch, provider)
    with pytest.raises(errors.KmsKeyNotFound):
        provider.wrap(os.urandom(32), context)
    assert attempts == [1]


def count_attempts(monkeypatch, provider):
    attempts: list[int] = []
    original = provider._attempt

    def counted(*args, **kwargs):
        attempts.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(provider, "_attempt", counted)
    return attempts


# -- network failures ------------------------------------------------------------


def test_a_stopped_server_is_unreachable_and_a_restart_heals(tmp_path, monkeypatch, context):
    with start_kmip_server(tmp_path) as server:
        provider = build(server, server.create_key(), timeout=2)
        key = os.urandom(32)
        wrapped = provider.wrap(key, context)  # leaves a persistent connection open
        port = server.port
        server.stop()
        attempts = count_attempts(monkeypatch, provider)
        with pytest.raises(errors.KmsUnreachable, match=f"Connection refused by the KMIP server 127.0.0.1:{port}"):
            provider.unwrap(wrapped, context)
        assert len(attempts) == 3  # retried, with backoff, then gave up
        server.start()
        assert server.port == port
        assert provider.unwrap(wrapped, context) == key  # same port, same key, new connection


def test_a_connection_the_server_dropped_is_reopened_at_once(tmp_path, context):
    with start_kmip_server(tmp_path) as server:
        provider = build(server, server.create_key())
        key = os.urandom(32)
        wrapped = provider.wrap(key, context)
        server.stop()
        server.start()  # the provider still holds the dead connection
        provider.retry_policy = RetryPolicy(attempts=1)
        assert provider.unwrap(wrapped, context) == key


def test_a_server_that_never_completes_the_handshake_times_out(kmip_server, context):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings, secrets = kmip_server.provider_settings("1", port=silent.getsockname()[1])
        provider = KmipProvider(*KmipProvider.clean(settings, secrets), timeout=0.3)
        provider.retry_policy = RetryPolicy(attempts=1)
        with pytest.raises(errors.KmsUnreachable, match=r"within 0\.3s"):
            provider.wrap(os.urandom(32), context)


def test_waiting_for_a_busy_connection_is_bounded(kmip_server, key_uid, context):
    provider = build(kmip_server, key_uid, timeout=0.2)
    provider.retry_policy = RetryPolicy(attempts=1)
    with provider._lock, pytest.raises(errors.KmsTimeout, match="stayed busy"):  # another thread's request hangs
        provider.wrap(os.urandom(32), context)
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


# -- clean, help, describe -----------------------------------------------------------


def self_signed(*, expired: bool = False, usage=ExtendedKeyUsageOID.CLIENT_AUTH) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired else (now, now + dt.timedelta(1))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def field_errors(settings, secrets):
    with pytest.raises(errors.InvalidInput) as raised:
        KmipProvider.clean(settings, secrets)
    return raised.value.field_errors


@pytest.fixture
def valid(kmip_server):
    return kmip_server.provider_settings("42")


def test_clean_normalises_a_valid_configuration(valid):
    settings, secrets = valid
    cleaned, cleaned_secrets = KmipProvider.clean({**settings, "host": " 127.0.0.1 ", "port": "5696"}, secrets)
    assert cleaned["host"] == "127.0.0.1" and cleaned["port"] == 5696
    assert cleaned["client_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert cleaned_secrets["client_key"].startswith("-----BEGIN PRIVATE KEY-----")


def test_the_port_defaults_to_5696(valid):
    settings, secrets = valid
    settings.pop("port")
    assert KmipProvider.clean(settings, secrets)[0]["port"] == 5696


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"host": "https://kms.example.com"}, "host", "host name or IP address only"),
        ({"host": "kms.example.com:5696"}, "host", "host name or IP address only"),
        ({"port": 0}, "port", "between 1 and 65535"),
        ({"port": 70000}, "port", "between 1 and 65535"),
        ({"port": "kmip"}, "port", "whole number"),
        ({"key_uid": ""}, "key_uid", "required"),
        ({"client_certificate": "not a certificate"}, "client_certificate", "PEM certificates"),
        (
            {"client_certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"},
            "client_certificate",
            "does not parse",
        ),
        ({"ca_bundle": "garbage"}, "ca_bundle", "PEM certificates"),
        ({"server_name": "a b"}, "server_name", "host name"),
    ],
)
def test_clean_reports_field_errors(valid, change, field, message):
    settings, secrets = valid
    problems = field_errors({**settings, **change}, secrets)
    assert field in problems, problems
    assert any(message in m for m in problems[field]), problems[field]


def test_clean_refuses_an_expired_client_certificate(valid):
    settings, _ = valid
    certificate, key = self_signed(expired=True)
    problems = field_errors({**settings, "client_certificate": certificate}, {"client_key": key})
    assert any("expired" in m for m in problems["client_certificate"])


def test_clean_refuses_a_certificate_not_meant_for_clients(valid):
    settings, _ = valid
    certificate, key = self_signed(usage=ExtendedKeyUsageOID.SERVER_AUTH)
    problems = field_errors({**settings, "client_certificate": certificate}, {"client_key": key})
    assert any("client auth" in m for m in problems["client_certificate"])


def test_clean_refuses_a_key_of_another_certificate(kmip_server, valid):
    settings, _ = valid
    problems = field_errors(settings, {"client_key": kmip_server.pki.other_client.key_pem})
    assert problems == {"client_key": ["This private key does not belong to the client certificate."]}


def test_clean_refuses_garbage_and_encrypted_private_keys(valid):
    settings, secrets = valid
    assert "PEM private key" in field_errors(settings, {"client_key": "nope"})["client_key"][0]
    encrypted = serialization.load_pem_private_key(secrets["client_key"].encode(), None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    assert "password-protected" in field_errors(settings, {"client_key": encrypted.decode()})["client_key"][0]


def test_setup_help_says_what_the_kmip_object_must_be():
    text = KmipProvider.setup_help(tenant_external_id="acme")
    for needed in ("AES", "256", "Encrypt and Decrypt", "Active", "client certificate", "authorise", "acme"):
        assert needed in text


def test_describe_names_host_port_and_key_but_no_secret(kmip_server, provider, key_uid):
    text = provider.describe()
    assert text == f"127.0.0.1:{kmip_server.port} key {key_uid}"
    assert "PRIVATE KEY" not in text
