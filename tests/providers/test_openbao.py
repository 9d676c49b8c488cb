"""OpenBao / Vault Transit provider against a real OpenBao server (TLS, Raft storage, policies, AppRole)."""

from __future__ import annotations

import base64
import http.server
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hvac import exceptions as hvac_exceptions

from keycore import errors
from keycore.egress import check_tenant_egress
from keycore.providers.openbao import (
    BINDING_AAD,
    BINDING_DERIVED,
    OpenBaoTransitProvider,
    tenant_context,
    transit_key_version,
    transit_policy,
)
from keycore.providers.registry import get_provider_class
from keycore.providers.retry import NO_RETRY, RetryPolicy
from tests.providers.conftest import make_context
from tests.providers.servers import start_openbao_server

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


def build(server, key, token="", *, timeout=3.0, **settings):
    """A provider for ``key``, through ``clean()`` like a saved configuration."""
    raw_settings, secrets = server.provider_settings(key, token, **settings)
    provider = OpenBaoTransitProvider(*OpenBaoTransitProvider.clean(raw_settings, secrets), timeout=timeout)
    provider.retry_policy = FAST_RETRY
    return provider


@pytest.fixture
def key(openbao_server):
    return openbao_server.create_key()


@pytest.fixture
def provider(openbao_server, key):
    provider = build(openbao_server, key, openbao_server.grant(key))
    yield provider
    provider.close()


def failed_check(provider, context, code):
    result = provider.check(context)
    assert not result.ok, result.detail
    assert result.error_code == code, result.detail
    return result.detail


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the registry ------------------------------------------------------------------


def test_the_registry_names_it_openbao():
    assert get_provider_class("openbao") is OpenBaoTransitProvider
    assert OpenBaoTransitProvider.tenant_may_create and OpenBaoTransitProvider.vendor_may_create


def test_the_credentials_are_the_secret_fields():
    assert {f.name for f in OpenBaoTransitProvider.fields if f.secret} == {"token", "role_id", "secret_id"}


# -- wrap and unwrap ---------------------------------------------------------------


def test_it_round_trips_a_tenant_key(provider, context):
    key = os.urandom(32)
    wrapped = provider.wrap(key, context)
    assert wrapped[:3] == bytes((0xBA, 0x01, BINDING_DERIVED))
    assert wrapped[3:].startswith(b"vault:v1:")
    assert transit_key_version(wrapped) == 1
    assert key not in wrapped
    assert provider.unwrap(wrapped, context) == key


def test_each_wrap_is_fresh(provider, context):
    key = os.urandom(32)
    assert provider.wrap(key, context) != provider.wrap(key, context)


def test_transit_binds_the_tenant_as_context_and_associated_data(openbao_server, provider, key, context):
    """What the layout says, checked by asking Transit directly as root."""
    tenant_key = os.urandom(32)
    wrapped = provider.wrap(tenant_key, context)
    transit = openbao_server.admin().secrets.transit
    right = {
        "context": b64(tenant_context(context.tenant_uid)),
        "associated_data": b64(wrapped[:3] + context.associated_data()),
    }
    answer = transit.decrypt_data(key, ciphertext=wrapped[3:].decode(), **right)
    assert base64.b64decode(answer["data"]["plaintext"]) == tenant_key
    other_tenant = {**right, "context": b64(tenant_context("b" * 32))}
    no_aad = {"context": right["context"]}
    for wrong in (other_tenant, no_aad):
        with pytest.raises(Exception, match="message authentication failed"):
            transit.decrypt_data(key, ciphertext=wrapped[3:].decode(), **wrong)


@pytest.mark.parametrize("derived", [True, False], ids=["derived key", "key without derivation"])
def test_a_wrap_for_tenant_a_does_not_unwrap_for_tenant_b_under_the_same_key(openbao_server, derived):
    key = openbao_server.create_key(derived=derived)
    provider = build(openbao_server, key, openbao_server.grant(key))
    tenant_a, tenant_b = make_context("a" * 32), make_context("b" * 32)
    wrapped = provider.wrap(os.urandom(32), tenant_a)
    assert wrapped[2] == (BINDING_DERIVED if derived else BINDING_AAD)
    with pytest.raises(errors.AuthenticationFailed, match="belongs to another tenant, version or key"):
        provider.unwrap(wrapped, tenant_b)


def test_another_version_of_the_tenant_key_is_refused(provider):
    wrapped = provider.wrap(os.urandom(32), make_context("a" * 32, 1))
    with pytest.raises(errors.AuthenticationFailed, match="version 2"):
        provider.unwrap(wrapped, make_context("a" * 32, 2))


def test_flipping_the_binding_byte_does_not_drop_the_binding(provider, context):
    wrapped = bytearray(provider.wrap(os.urandom(32), context))
    wrapped[2] = BINDING_AAD  # as if the blob claimed no derivation context
    with pytest.raises(errors.KeyCoreError) as raised:
        provider.unwrap(bytes(wrapped), context)
    assert isinstance(raised.value, errors.AuthenticationFailed | errors.KmsMisconfigured)


def test_a_tampered_ciphertext_is_refused(provider, context):
    wrapped = provider.wrap(os.urandom(32), context)
    text = wrapped[3:].decode()
    body = base64.b64decode(text.split(":", 2)[2])
    flipped = bytes([body[20] ^ 1]) if len(body) > 20 else b""
    tampered = wrapped[:3] + f"vault:v1:{b64(body[:20] + flipped + body[21:])}".encode()
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(tampered, context)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xba\x01",
        b"\xba\x01\x02",
        b"\xa5\x01\x02vault:v1:AAAA",
        b"\xba\x02\x02vault:v1:AAAA",
        b"\xba\x01\x07vault:v1:AAAA",
        b"\xba\x01\x02vault:v1:",
        b"\xba\x01\x02vault:vx:AAAA",
        b"\xba\x01\x02vault:v1:AA AA",
    ],
)
def test_what_is_not_a_transit_wrapped_key_is_malformed(provider, context, blob):
    with pytest.raises(errors.MalformedData):
        provider.unwrap(blob, context)


def test_a_blob_of_another_key_is_refused(openbao_server, provider, context):
    other_key = openbao_server.create_key()
    other = build(openbao_server, other_key, openbao_server.grant(other_key))
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(other.wrap(os.urandom(32), context), context)


def test_it_works_with_chacha20_poly1305(openbao_server, context):
    key = openbao_server.create_key(key_type="chacha20-poly1305")
    provider = build(openbao_server, key, openbao_server.grant(key))
    tenant_key = os.urandom(32)
    assert provider.unwrap(provider.wrap(tenant_key, context), context) == tenant_key


def test_it_works_on_another_mount_and_in_a_namespace(openbao_server, context):
    namespace = openbao_server.create_namespace("tenants-acme")
    admin = openbao_server.admin(namespace=namespace)
    admin.sys.enable_secrets_engine("transit", path="kms/transit")
    key = openbao_server.create_key(namespace=namespace, mount="kms/transit")
    token = openbao_server.grant(key, namespace=namespace, mount="kms/transit")
    provider = build(openbao_server, key, token, namespace=namespace, mount="kms/transit")
    tenant_key = os.urandom(32)
    assert provider.unwrap(provider.wrap(tenant_key, context), context) == tenant_key
    assert provider.describe().endswith(f"kms/transit/keys/{key} (namespace {namespace})")
    outside = build(openbao_server, key, token, mount="kms/transit")  # the same key, namespace forgotten
    detail = failed_check(outside, context, "kms-misconfigured")
    assert f"token belongs to the namespace '{namespace}', but this configuration names none" in detail


# -- AppRole ---------------------------------------------------------------------


def approle_provider(server, key, role_id, secret_id, **settings):
    raw_settings, _ = server.provider_settings(key, auth_method="approle", **settings)
    secrets = {"role_id": role_id, "secret_id": secret_id}
    provider = OpenBaoTransitProvider(*OpenBaoTransitProvider.clean(raw_settings, secrets), timeout=3)
    provider.retry_policy = FAST_RETRY
    return provider


def test_it_logs_in_with_an_approle(openbao_server, key, context):
    provider = approle_provider(openbao_server, key, *openbao_server.approle(key))
    tenant_key = os.urandom(32)
    assert provider.unwrap(provider.wrap(tenant_key, context), context) == tenant_key
    assert provider.check(context).ok


def test_a_wrong_secret_id_is_access_denied(openbao_server, key, context):
    role_id, _ = openbao_server.approle(key)
    provider = approle_provider(openbao_server, key, role_id, "00000000-0000-0000-0000-000000000000")
    detail = failed_check(provider, context, "kms-access-denied")
    assert "refused KeyCore's AppRole login at auth/approle" in detail and "secret ID" in detail


def test_an_approle_token_that_was_revoked_is_replaced_by_a_new_login(openbao_server, key, context):
    provider = approle_provider(openbao_server, key, *openbao_server.approle(key))
    tenant_key = os.urandom(32)
    wrapped = provider.wrap(tenant_key, context)
    first_token = provider._client.token
    openbao_server.admin().auth.token.revoke(first_token)
    assert provider.unwrap(wrapped, context) == tenant_key  # the secret ID still holds: log in again
    assert provider._client.token != first_token


def test_an_approle_login_is_renewed_before_its_token_expires(openbao_server, key, context):
    provider = approle_provider(openbao_server, key, *openbao_server.approle(key, token_ttl="90s"))
    provider.wrap(os.urandom(32), context)
    first_token = provider._client.token
    assert provider._relogin_at is not None  # 2/3 of 90 s from the login
    provider._relogin_at = 0.0  # as if 60 s had passed
    provider.wrap(os.urandom(32), context)
    assert provider._client.token != first_token


def test_with_the_secret_id_destroyed_and_tokens_revoked_keycore_is_shut_out(openbao_server, key, context):
    role_id, secret_id = openbao_server.approle(key)
    provider = approle_provider(openbao_server, key, role_id, secret_id)
    wrapped = provider.wrap(os.urandom(32), context)
    admin = openbao_server.admin()
    admin.auth.approle.destroy_secret_id(key, secret_id)
    admin.auth.token.revoke(provider._client.token)
    with pytest.raises(errors.KmsAccessDenied, match="refused KeyCore's AppRole login"):
        provider.unwrap(wrapped, context)


# -- tokens ----------------------------------------------------------------------


def test_a_renewable_token_past_half_its_lifetime_is_renewed(openbao_server, key, context):
    openbao_server.write_policy(key, openbao_server.keycore_policy(key))
    token = openbao_server.token(policies=[key], ttl="6s")
    time.sleep(3.6)  # less than half of its lifetime left
    provider = build(openbao_server, key, token)
    tenant_key = os.urandom(32)
    wrapped = provider.wrap(tenant_key, context)  # the first call looks the token up and renews it
    assert openbao_server.admin().auth.token.lookup(token)["data"]["ttl"] >= 5  # a full lifetime again
    assert provider.unwrap(wrapped, context) == tenant_key


def test_check_warns_about_a_token_that_expires_and_cannot_be_renewed(openbao_server, key, context):
    openbao_server.write_policy(key, openbao_server.keycore_policy(key))
    token = openbao_server.token(policies=[key], ttl="48h", renewable=False)
    result = build(openbao_server, key, token).check(context)
    assert result.ok, result.detail
    assert any(re.search(r"expires in 4[78] hours and cannot be renewed", w) for w in result.extra["warnings"])


# -- check (test connection) -------------------------------------------------------


def test_check_passes_and_names_the_key_version_and_binding(provider, key, context):
    result = provider.check(context)
    assert result.ok, result.detail
    assert f"transit/keys/{key}" in result.detail
    assert "aes256-gcm96 version 1" in result.detail and "derivation context" in result.detail
    assert result.extra["derived"] is True and result.extra["latest_version"] == 1
    assert "warnings" not in result.extra


def test_check_reports_a_wrong_token(openbao_server, key, context):
    detail = failed_check(build(openbao_server, key, "s.not-a-real-token"), context, "kms-access-denied")
    assert "no longer accepts its token, which is wrong, expired or revoked" in detail


def test_check_reports_a_token_whose_policy_does_not_cover_the_key(openbao_server, key, context):
    other_key = openbao_server.create_key()
    token = openbao_server.grant(other_key)  # a valid token, for another key
    detail = failed_check(build(openbao_server, key, token), context, "kms-access-denied")
    assert f"policies: default, {other_key}" in detail
    assert f"may not read transit/keys/{key}" in detail
    assert "Grant the policy of the setup help" in detail


def test_check_reports_a_policy_without_decrypt(openbao_server, key, context):
    openbao_server.write_policy(
        f"{key}-half",
        f'path "transit/encrypt/{key}" {{ capabilities = ["update"] }}\n'
        f'path "transit/keys/{key}" {{ capabilities = ["read"] }}\n',
    )
    token = openbao_server.token(policies=[f"{key}-half"])
    detail = failed_check(build(openbao_server, key, token), context, "kms-access-denied")
    assert f"may not update transit/decrypt/{key}" in detail


def test_check_reports_an_unknown_key(openbao_server, context):
    token = openbao_server.grant("no-such-key")
    detail = failed_check(build(openbao_server, "no-such-key", token), context, "kms-key-not-found")
    assert detail.startswith("There is no Transit key 'no-such-key'") and "check the key name" in detail


def test_check_reports_an_unknown_mount(openbao_server, key, context):
    root = openbao_server.root_token
    detail = failed_check(build(openbao_server, key, root, mount="nowhere"), context, "kms-misconfigured")
    assert "Nothing is mounted at nowhere/" in detail


@pytest.mark.parametrize("key_type", ["rsa-2048", "ed25519", "aes128-gcm96"])
def test_check_reports_a_key_type_without_associated_data_or_256_bits(openbao_server, context, key_type):
    key = openbao_server.create_key(key_type=key_type, derived=False)
    detail = failed_check(build(openbao_server, key, openbao_server.grant(key)), context, "kms-misconfigured")
    assert f"is of type {key_type}" in detail and "aes256-gcm96" in detail


def test_check_warns_about_what_weakens_the_tenants_control(openbao_server, context):
    key = openbao_server.create_key(derived=False, exportable=True)
    result = build(openbao_server, key, openbao_server.root_token).check(context)
    assert result.ok, result.detail
    warnings = " ".join(result.extra["warnings"])
    assert "is exportable" in warnings
    assert "is not derived" in warnings
    assert "may create keys" in warnings  # root may: a deleted key would come back as a new one


def test_a_missing_key_is_never_created_by_a_token_that_could(openbao_server, context):
    provider = build(openbao_server, "never-created", openbao_server.root_token)
    with pytest.raises(errors.KmsKeyNotFound):
        provider.wrap(os.urandom(32), context)
    with pytest.raises(hvac_exceptions.InvalidPath):
        openbao_server.admin().secrets.transit.read_key("never-created")


def test_check_reports_an_untrusted_server_certificate(openbao_server, key, context):
    provider = build(openbao_server, key, openbao_server.grant(key), ca_bundle=openbao_server.pki.untrusted_ca_pem)
    detail = failed_check(provider, context, "kms-misconfigured")
    assert detail.startswith("Server certificate not trusted") and "CA bundle" in detail


def test_check_reports_a_server_certificate_for_another_name(openbao_server, key, context):
    provider = build(openbao_server, key, openbao_server.grant(key), address=f"https://localhost:{openbao_server.port}")
    detail = failed_check(provider, context, "kms-misconfigured")
    assert "does not name 'localhost'" in detail


def test_check_reports_plain_http_to_a_tls_port(openbao_server, key, context):
    provider = build(openbao_server, key, openbao_server.grant(key), address=f"http://127.0.0.1:{openbao_server.port}")
    assert "speaks https" in failed_check(provider, context, "kms-misconfigured")


# -- what the tenant does in OpenBao, enforced there --------------------------------


def test_a_revoked_token_stops_unwrapping(openbao_server, key, context):
    token = openbao_server.grant(key)
    provider = build(openbao_server, key, token)
    wrapped = provider.wrap(os.urandom(32), context)
    openbao_server.admin().auth.token.revoke(token)
    with pytest.raises(errors.KmsAccessDenied, match="wrong, expired or revoked"):
        provider.unwrap(wrapped, context)


def test_a_removed_policy_stops_unwrapping(openbao_server, key, context):
    provider = build(openbao_server, key, openbao_server.grant(key))
    wrapped = provider.wrap(os.urandom(32), context)
    openbao_server.admin().sys.delete_policy(key)
    with pytest.raises(errors.KmsAccessDenied, match=f"may not update transit/decrypt/{key}"):
        provider.unwrap(wrapped, context)


def test_a_deleted_key_is_not_found(openbao_server, provider, key, context):
    wrapped = provider.wrap(os.urandom(32), context)
    transit = openbao_server.admin().secrets.transit
    transit.update_key_configuration(key, deletion_allowed=True)
    transit.delete_key(key)
    with pytest.raises(errors.KmsKeyNotFound, match="it was deleted"):
        provider.unwrap(wrapped, context)
    assert "check the key name" in failed_check(provider, context, "kms-key-not-found")


def test_a_soft_deleted_key_is_disabled_until_restored(openbao_server, provider, key, context):
    tenant_key = os.urandom(32)
    wrapped = provider.wrap(tenant_key, context)
    admin = openbao_server.admin()
    admin.adapter.delete(f"/v1/transit/keys/{key}/soft-delete")
    with pytest.raises(errors.KmsKeyDisabled, match="soft-deleted"):
        provider.unwrap(wrapped, context)
    assert "soft-deleted" in failed_check(provider, context, "kms-key-disabled")
    admin.adapter.post(f"/v1/transit/keys/{key}/soft-delete-restore")
    assert provider.unwrap(wrapped, context) == tenant_key


def test_permanent_errors_are_not_retried(openbao_server, key, context, monkeypatch):
    provider = build(openbao_server, key, "s.not-a-real-token")
    calls = []
    original = provider._connected
    monkeypatch.setattr(provider, "_connected", lambda: calls.append(1) or original())
    with pytest.raises(errors.KmsAccessDenied):
        provider.unwrap(b"\xba\x01\x02vault:v1:AAAA", context)
    assert calls == [1]


# -- key versions: Transit's own rotation --------------------------------------------


def test_transit_rotation_keeps_old_wraps_and_new_wraps_use_the_new_version(openbao_server, provider, key, context):
    old_key, new_key = os.urandom(32), os.urandom(32)
    old = provider.wrap(old_key, context)
    transit = openbao_server.admin().secrets.transit
    transit.rotate_key(key)
    new = provider.wrap(new_key, context)
    assert (transit_key_version(old), transit_key_version(new)) == (1, 2)
    assert provider.unwrap(old, context) == old_key
    assert provider.unwrap(new, context) == new_key
    result = provider.check(context)
    assert "version 2" in result.detail and result.extra["latest_version"] == 2


def test_a_version_below_min_decryption_version_is_refused_with_both_versions(openbao_server, provider, key, context):
    old = provider.wrap(os.urandom(32), context)
    transit = openbao_server.admin().secrets.transit
    transit.rotate_key(key)
    transit.update_key_configuration(key, min_decryption_version=2)
    with pytest.raises(errors.KmsKeyDisabled, match="wrapped under version 1 of the Transit key") as raised:
        provider.unwrap(old, context)
    assert "min_decryption_version" in raised.value.detail
    transit.update_key_configuration(key, min_decryption_version=1)
    provider.unwrap(old, context)


# -- network failures ------------------------------------------------------------


def test_a_stopped_server_is_unreachable_a_sealed_one_too_and_both_heal(tmp_path, context):
    with start_openbao_server(tmp_path) as server:
        key = server.create_key()
        provider = build(server, key, server.grant(key), timeout=2)
        tenant_key = os.urandom(32)
        wrapped = provider.wrap(tenant_key, context)  # keeps a connection open
        port = server.port
        server.stop()
        with pytest.raises(errors.KmsUnreachable, match=f"Connection refused by OpenBao at https://127.0.0.1:{port}"):
            provider.unwrap(wrapped, context)
        assert failed_check(provider, context, "kms-unreachable")
        server.start()
        assert server.port == port
        assert provider.unwrap(wrapped, context) == tenant_key  # same port, key and token; a new connection
        server.seal()
        with pytest.raises(errors.KmsUnreachable, match="is sealed or not active"):
            provider.unwrap(wrapped, context)
        server.unseal()
        server._wait_active(10)
        assert provider.unwrap(wrapped, context) == tenant_key


def test_a_server_that_never_answers_times_out(context):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections in the kernel, never answers
        provider = OpenBaoTransitProvider(
            {"address": f"http://127.0.0.1:{silent.getsockname()[1]}", "key_name": "k", "mount": "transit"},
            {"token": "t"},
            timeout=0.3,
        )
        provider.retry_policy = NO_RETRY
        with pytest.raises(errors.KmsTimeout, match=r"did not answer read within 0\.3s"):
            provider.wrap(os.urandom(32), context)


def test_redirects_are_not_followed(openbao_server, key, context):
    """A server that sends KeyCore elsewhere (a standby, or an attacker) is reported, not followed."""
    target = f"{openbao_server.url}/v1/transit/keys/{key}"

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(307)
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        provider = build(
            openbao_server, key, openbao_server.grant(key), address=f"http://127.0.0.1:{server.server_port}"
        )
        detail = failed_check(provider, context, "kms-misconfigured")
        assert f"redirected read to {target}" in detail and "does not follow redirects" in detail
    finally:
        server.shutdown()
        server.server_close()


def test_the_process_environment_is_not_used(openbao_server, key, context, monkeypatch, tmp_path):
    """A root token, a proxy or a CA bundle in KeyCore's environment must not reach a tenant's configuration."""
    good = build(openbao_server, key, openbao_server.grant(key))
    no_rights = build(openbao_server, key, openbao_server.token(policies=["default"]))
    monkeypatch.setenv("VAULT_TOKEN", openbao_server.root_token)
    monkeypatch.setenv("BAO_TOKEN", openbao_server.root_token)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login x password y\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert good.check(context).ok  # no proxy, the configured CA bundle
    failed_check(no_rights, context, "kms-access-denied")  # not the root token from VAULT_TOKEN


# -- threads -------------------------------------------------------------------------


def test_one_provider_serves_many_threads(provider):
    barrier = threading.Barrier(8)

    def worker(n: int) -> int:
        barrier.wait()
        context = make_context(f"{n:032x}")
        for _ in range(20):
            key = os.urandom(32)
            assert provider.unwrap(provider.wrap(key, context), context) == key
        return n

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(worker, range(8))) == list(range(8))


# -- the setup help's policy, applied to the real server ------------------------------


def test_the_setup_help_policy_lets_keycore_work_for_its_tenant_and_no_other(openbao_server):
    tenant_a, tenant_b = "a" * 32, "b" * 32
    key = openbao_server.create_key()
    text = OpenBaoTransitProvider.setup_help(tenant_external_id="acme", tenant_uid=tenant_a, key_name=key)
    policy = text[text.index(f'path "transit/encrypt/{key}"') : text.index("   bao policy write")].strip()
    assert policy == transit_policy(mount="transit", key_name=key, tenant_uid=tenant_a).strip()
    openbao_server.write_policy(f"help-{key}", policy)
    token = openbao_server.token(policies=[f"help-{key}"])
    provider = build(openbao_server, key, token)
    own = make_context(tenant_a)
    assert provider.check(own).ok
    tenant_key = os.urandom(32)
    assert provider.unwrap(provider.wrap(tenant_key, own), own) == tenant_key
    detail = failed_check(provider, make_context(tenant_b), "kms-access-denied")
    assert "restricts the request's parameters" in detail
    # even a blob of tenant B wrapped by someone allowed cannot be unwrapped through tenant A's token
    other = make_context(tenant_b)
    wrapped_for_b = build(openbao_server, key, openbao_server.grant(key)).wrap(os.urandom(32), other)
    with pytest.raises(errors.KmsAccessDenied):
        provider.unwrap(wrapped_for_b, other)


def test_setup_help_fills_in_mount_key_and_tenant():
    text = OpenBaoTransitProvider.setup_help(tenant_external_id="acme", tenant_uid="ab" * 16)
    context = b64(tenant_context("ab" * 16))
    for needed in (
        "bao write -f transit/keys/keycore-acme type=aes256-gcm96 derived=true",
        'path "transit/encrypt/keycore-acme"',
        'path "transit/decrypt/keycore-acme"',
        'path "transit/keys/keycore-acme"',
        f'"context" = ["{context}"]',
        "bao policy write keycore-acme keycore-acme.hcl",
        "auth/approle/role/keycore-acme",
        "min_decryption_version",
        "destroy its secret ID",
    ):
        assert needed in text, needed
    custom = OpenBaoTransitProvider.setup_help(tenant_uid="ab" * 16, mount="kms/transit", key_name="tenant-kek")
    assert 'path "kms/transit/decrypt/tenant-kek"' in custom


# -- clean, egress, describe ---------------------------------------------------------


def field_errors(settings, secrets=None):
    with pytest.raises(errors.InvalidInput) as raised:
        OpenBaoTransitProvider.clean(settings, secrets or {})
    return raised.value.field_errors


VALID = {"address": "https://bao.example.com:8200/", "key_name": "tenant-kek"}


def test_clean_normalises_and_fills_defaults():
    settings, secrets = OpenBaoTransitProvider.clean(
        {**VALID, "mount": "/kms/transit/", "namespace": "tenants/acme/"}, {"token": " s.abc "}
    )
    assert settings == {
        "address": "https://bao.example.com:8200",
        "mount": "kms/transit",
        "key_name": "tenant-kek",
        "namespace": "tenants/acme",
        "auth_method": "token",
    }
    assert secrets == {"token": "s.abc"}


def test_clean_accepts_an_approle():
    settings, secrets = OpenBaoTransitProvider.clean(
        {**VALID, "auth_method": "approle"}, {"role_id": "r-1", "secret_id": "s-1"}
    )
    assert settings["approle_mount"] == "approle" and secrets == {"role_id": "r-1", "secret_id": "s-1"}


@pytest.mark.parametrize(
    ("settings", "secrets", "field", "message"),
    [
        ({}, {"token": "t"}, "address", "required"),
        ({**VALID, "address": "http://bao.example.com:8200"}, {"token": "t"}, "address", "Use https://"),
        ({**VALID, "address": "bao.example.com"}, {"token": "t"}, "address", "https:// URL"),
        ({**VALID, "address": "https://u:p@bao.example.com"}, {"token": "t"}, "address", "credentials"),
        ({**VALID, "key_name": "-bad"}, {"token": "t"}, "key_name", "Transit key name"),
        ({**VALID, "key_name": "a/b"}, {"token": "t"}, "key_name", "Transit key name"),
        ({**VALID, "mount": "tran sit"}, {"token": "t"}, "mount", "path segments"),
        ({**VALID, "mount": "a/../b"}, {"token": "t"}, "mount", "path segments"),
        ({**VALID, "namespace": "ns?x"}, {"token": "t"}, "namespace", "path segments"),
        ({**VALID, "auth_method": "ldap"}, {"token": "t"}, "auth_method", "choose one of"),
        ({**VALID, "ca_bundle": "nope"}, {"token": "t"}, "ca_bundle", "PEM certificates"),
        (VALID, {}, "token", "token is required"),
        (VALID, {"token": "two words"}, "token", "no spaces"),
        (VALID, {"token": "t", "secret_id": "s"}, "secret_id", "Only used with AppRole"),
        ({**VALID, "auth_method": "approle"}, {"role_id": "r"}, "secret_id", "required for AppRole"),
        ({**VALID, "auth_method": "approle"}, {"role_id": "r", "secret_id": "s", "token": "t"}, "token", "token auth"),
    ],
)
def test_clean_reports_field_errors(settings, secrets, field, message):
    problems = field_errors(settings, secrets)
    assert field in problems, problems
    assert any(message in m for m in problems[field]), problems[field]


def test_plain_http_is_accepted_for_a_local_server():
    settings, _ = OpenBaoTransitProvider.clean({**VALID, "address": "http://127.0.0.1:8200"}, {"token": "t"})
    assert settings["address"] == "http://127.0.0.1:8200"


@pytest.mark.django_db
def test_a_tenant_cannot_point_keycore_at_a_private_openbao(settings):
    settings.KEYCORE_TENANT_KMS_ALLOWED_NETWORKS = []
    assert OpenBaoTransitProvider.egress({"address": "https://10.1.2.3:8200"}) == ["10.1.2.3"]
    with pytest.raises(errors.InvalidInput, match="not a public address"):
        check_tenant_egress(OpenBaoTransitProvider, {"address": "https://10.1.2.3:8200"})
    check_tenant_egress(OpenBaoTransitProvider, {"address": "https://8.8.8.8:8200"})


def test_describe_names_address_and_key_but_no_secret(openbao_server, key):
    token = openbao_server.grant(key)
    provider = build(openbao_server, key, token)
    assert provider.describe() == f"{openbao_server.url} transit/keys/{key}"
    assert token not in provider.describe()
