"""AWS KMS provider against moto's KMS server (HTTP), and botocore's Stubber for error codes moto never sends."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.stub import Stubber

from keycore import errors
from keycore.providers.aws import HEADER, AwsKmsProvider
from keycore.providers.registry import get_provider_class
from keycore.providers.retry import NO_RETRY, RetryPolicy
from tests.conftest import require
from tests.providers.conftest import make_context
from tests.providers.servers import AWS_REGION, MotoServerProcess, ServiceUnavailable, start_moto_server

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
KEY_ARN_SHAPE = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def key_arn(moto_server):
    return moto_server.create_key()


@pytest.fixture
def provider(moto_server, key_arn):
    provider = AwsKmsProvider(*moto_server.provider_settings(key_arn), timeout=3)
    yield provider
    provider.close()


def stubbed(provider: AwsKmsProvider) -> Stubber:
    """Stub the provider's real botocore client; no retries, so each stubbed error is seen once."""
    provider.retry_policy = NO_RETRY
    stubber = Stubber(provider.client)
    stubber.activate()
    return stubber


# -- the registry ------------------------------------------------------------------


def test_the_registry_names_it_aws():
    assert get_provider_class("aws") is AwsKmsProvider
    assert AwsKmsProvider.tenant_may_create and AwsKmsProvider.vendor_may_create


def test_credentials_are_secret_fields_and_the_key_is_not():
    secret = {f.name for f in AwsKmsProvider.fields if f.secret}
    assert secret == {"access_key_id", "secret_access_key", "session_token"}


# -- wrap and unwrap ---------------------------------------------------------------


def test_it_round_trips_a_tenant_key(provider, context):
    key = os.urandom(32)
    wrapped = provider.wrap(key, context)
    assert wrapped.startswith(HEADER)
    assert key not in wrapped
    assert provider.unwrap(wrapped, context) == key


def test_each_wrap_is_fresh(provider, context):
    key = os.urandom(32)
    assert provider.wrap(key, context) != provider.wrap(key, context)


def test_it_binds_the_tenant_as_encryption_context_in_kms(moto_server, provider, key_arn, context):
    key = os.urandom(32)
    blob = provider.wrap(key, context)[len(HEADER) :]
    kms = moto_server.client()
    plain = kms.decrypt(KeyId=key_arn, CiphertextBlob=blob, EncryptionContext=context.encryption_context())
    assert plain["Plaintext"] == key
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(KeyId=key_arn, CiphertextBlob=blob)


def test_it_adds_the_configured_extra_context(moto_server, key_arn, context):
    settings, secrets = moto_server.provider_settings(key_arn, encryption_context="app=billing\nenv = prod")
    settings, secrets = AwsKmsProvider.clean(settings, secrets)
    provider = AwsKmsProvider(settings, secrets)
    key = os.urandom(32)
    wrapped = provider.wrap(key, context)
    assert provider.unwrap(wrapped, context) == key
    kms = moto_server.client()
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(KeyId=key_arn, CiphertextBlob=wrapped[2:], EncryptionContext=context.encryption_context())
    full = {"app": "billing", "env": "prod", **context.encryption_context()}
    assert kms.decrypt(KeyId=key_arn, CiphertextBlob=wrapped[2:], EncryptionContext=full)["Plaintext"] == key


@pytest.mark.parametrize("other", [{"tenant_uid": "f" * 32}, {"key_version": 2}], ids=["other tenant", "other version"])
def test_a_wrong_context_is_refused(provider, other):
    context = make_context("a" * 32, 1)
    wrapped = provider.wrap(os.urandom(32), context)
    wrong = make_context(other.get("tenant_uid", "a" * 32), other.get("key_version", 1))
    with pytest.raises(errors.AuthenticationFailed, match="altered, or belongs to another tenant"):
        provider.unwrap(wrapped, wrong)


def test_a_tampered_blob_is_refused(provider, context):
    wrapped = bytearray(provider.wrap(os.urandom(32), context))
    wrapped[len(wrapped) // 2] ^= 0x01
    with pytest.raises(errors.AuthenticationFailed):
        provider.unwrap(bytes(wrapped), context)


@pytest.mark.parametrize("blob", [b"", b"\xa5", b"\x1e\x01" + b"x" * 60, b"\xa5\x02" + b"x" * 60])
def test_what_is_not_an_aws_wrapped_key_is_malformed(provider, context, blob):
    with pytest.raises(errors.MalformedData):
        provider.unwrap(blob, context)


def test_a_blob_of_another_key_is_refused(moto_server, provider, context):
    other = AwsKmsProvider(*moto_server.provider_settings(moto_server.create_key()))
    wrapped = other.wrap(os.urandom(32), context)
    # Decrypt names this configuration's key: moto answers AccessDenied, AWS IncorrectKeyException
    with pytest.raises((errors.KmsAccessDenied, errors.AuthenticationFailed)):
        provider.unwrap(wrapped, context)


def test_decrypt_names_the_configured_key(provider, key_arn, context):
    wrapped = provider.wrap(os.urandom(32), context)
    with stubbed(provider) as stubber:
        stubber.add_response(
            "decrypt",
            {"Plaintext": b"k" * 32, "KeyId": key_arn},
            expected_params={
                "KeyId": key_arn,
                "CiphertextBlob": wrapped[len(HEADER) :],
                "EncryptionContext": context.encryption_context(),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            },
        )
        assert provider.unwrap(wrapped, context) == b"k" * 32


def test_it_works_with_an_alias_and_a_region(moto_server, key_arn, context):
    moto_server.client().create_alias(AliasName="alias/keycore-tenant", TargetKeyId=key_arn)
    settings, secrets = AwsKmsProvider.clean(*moto_server.provider_settings("alias/keycore-tenant"))
    provider = AwsKmsProvider(settings, secrets)
    key = os.urandom(32)
    assert provider.unwrap(provider.wrap(key, context), context) == key
    assert provider.check(context).ok


@pytest.fixture
def assume_role_requests(monkeypatch) -> list[dict]:
    """The parameters of every AssumeRole KeyCore sends (observed on the real request to moto, not stubbed)."""
    sent: list[dict] = []
    real_client = boto3.session.Session.client

    def client(self, service, *args, **kwargs):
        made = real_client(self, service, *args, **kwargs)
        if service == "sts":
            made.meta.events.register(
                "provide-client-params.sts.AssumeRole", lambda params, **_: sent.append(dict(params))
            )
        return made

    monkeypatch.setattr(boto3.session.Session, "client", client)
    return sent


def test_it_assumes_the_configured_role(moto_server, key_arn, context, assume_role_requests):
    settings, secrets = moto_server.provider_settings(
        key_arn, role_arn="arn:aws:iam::123456789012:role/keycore-tenant", sts_endpoint_url=moto_server.url
    )
    provider = AwsKmsProvider(*AwsKmsProvider.clean(settings, secrets))
    key = os.urandom(32)
    assert provider.unwrap(provider.wrap(key, context), context) == key
    credentials = provider.client._request_signer._credentials
    assert credentials.access_key.startswith("ASIA")  # temporary credentials from STS
    assert credentials.access_key != secrets["access_key_id"]
    assert [r["ExternalId"] for r in assume_role_requests] == [f"keycore-{context.tenant_uid}"]


def test_the_external_id_is_keycores_per_tenant_never_the_tenants_choice(
    moto_server, key_arn, context, assume_role_requests
):
    """Confused deputy: a tenant who could choose the external ID could name another tenant's role."""
    settings, secrets = moto_server.provider_settings(
        key_arn,
        role_arn="arn:aws:iam::123456789012:role/another-tenants-role",
        external_id="the-other-tenants-external-id",
        sts_endpoint_url=moto_server.url,
    )
    clean_settings, clean_secrets = AwsKmsProvider.clean(settings, secrets)
    assert "external_id" not in clean_settings
    assert "external_id" not in {f.name for f in AwsKmsProvider.fields}
    provider = AwsKmsProvider({**clean_settings, "external_id": "the-other-tenants-external-id"}, clean_secrets)
    provider.wrap(os.urandom(32), context)
    assert [r["ExternalId"] for r in assume_role_requests] == [f"keycore-{context.tenant_uid}"]
    help_text = AwsKmsProvider.setup_help(tenant_uid=context.tenant_uid)
    assert f'"sts:ExternalId": "keycore-{context.tenant_uid}"' in help_text


def test_assumed_role_credentials_are_renewed_before_they_expire(moto_server, key_arn, context):
    settings, secrets = moto_server.provider_settings(
        key_arn, role_arn="arn:aws:iam::123456789012:role/keycore-tenant", sts_endpoint_url=moto_server.url
    )
    provider = AwsKmsProvider(settings, secrets)
    provider.wrap(os.urandom(32), context)
    first = provider.client
    assert provider.client is first
    provider._client_expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    assert provider.client is not first


def test_a_role_it_may_not_assume_is_access_denied(moto_server, key_arn, context):
    settings, secrets = moto_server.provider_settings(key_arn, role_arn="arn:aws:iam::123456789012:role/keycore-tenant")
    provider = AwsKmsProvider(settings, secrets)
    session = boto3.session.Session(
        aws_access_key_id="AKIAKEYCORETESTING01", aws_secret_access_key="x", region_name=AWS_REGION
    )
    sts = session.client("sts")
    stubber = Stubber(sts)
    stubber.add_client_error(
        "assume_role",
        service_error_code="AccessDenied",
        service_message="User: arn:aws:iam::111122223333:role/keycore is not authorized to perform: sts:AssumeRole",
        http_status_code=403,
    )
    stubber.activate()

    class OneClientSession:
        def client(self, *args, **kwargs):
            return sts

    with pytest.raises(
        errors.KmsAccessDenied, match=r"could not assume the role arn:aws:iam::123456789012:role/"
    ) as denied:
        provider._assume_role(OneClientSession(), settings["role_arn"], context.tenant_uid)
    assert "111122223333" not in denied.value.detail, "AWS's message (KeyCore's own principal) stays in the log"
    assert f"keycore-{context.tenant_uid}" in denied.value.detail


def test_an_unreachable_sts_endpoint_is_named(moto_server, key_arn, context):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        sts_url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: refused
        settings, secrets = moto_server.provider_settings(
            key_arn, role_arn="arn:aws:iam::123456789012:role/keycore-tenant", sts_endpoint_url=sts_url
        )
        provider = AwsKmsProvider(settings, secrets, timeout=1)
        provider.retry_policy = NO_RETRY
        with pytest.raises(errors.KmsUnreachable, match=f"Could not connect to AWS STS at {sts_url}"):
            provider.wrap(os.urandom(32), context)


# -- check (test connection) ---------------------------------------------------


def test_check_passes_for_a_usable_key(provider, key_arn, context):
    result = provider.check(context)
    assert result.ok, result.detail
    assert key_arn in result.detail
    assert result.latency_ms > 0


def test_check_reports_a_key_that_does_not_exist(moto_server, context):
    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    result = AwsKmsProvider(*moto_server.provider_settings(missing)).check(context)
    assert not result.ok
    assert result.error_code == "kms-key-not-found"
    assert missing in result.detail


def test_check_reports_a_disabled_key(moto_server, key_arn, context):
    moto_server.client().disable_key(KeyId=key_arn.rsplit("/", 1)[1])
    result = AwsKmsProvider(*moto_server.provider_settings(key_arn)).check(context)
    assert not result.ok
    assert result.error_code == "kms-key-disabled"
    assert f"The key {key_arn} is Disabled" in result.detail


def test_check_reports_a_key_pending_deletion(moto_server, key_arn, context):
    moto_server.client().schedule_key_deletion(KeyId=key_arn.rsplit("/", 1)[1], PendingWindowInDays=7)
    result = AwsKmsProvider(*moto_server.provider_settings(key_arn)).check(context)
    assert (result.ok, result.error_code) == (False, "kms-key-disabled")
    assert "PendingDeletion" in result.detail


def test_check_reports_an_asymmetric_key(moto_server, context):
    arn = moto_server.create_key(KeyUsage="ENCRYPT_DECRYPT", KeySpec="RSA_2048")
    result = AwsKmsProvider(*moto_server.provider_settings(arn)).check(context)
    assert (result.ok, result.error_code) == (False, "kms-misconfigured")
    assert "RSA_2048" in result.detail and "SYMMETRIC_DEFAULT" in result.detail


def test_check_names_the_action_access_was_denied_for(provider, key_arn, context):
    with stubbed(provider) as stubber:
        stubber.add_client_error(
            "describe_key",
            service_error_code="AccessDeniedException",
            service_message="Not allowed.",
            http_status_code=400,
        )
        result = provider.check(context)
    assert not result.ok
    assert result.error_code == "kms-access-denied"
    assert result.detail.startswith(f"Access denied for kms:DescribeKey on {key_arn}")


def test_check_reports_access_denied_for_decrypt(provider, key_arn, context):
    with stubbed(provider) as stubber:
        stubber.add_response(
            "describe_key",
            {
                "KeyMetadata": {
                    "KeyId": key_arn,
                    "Arn": key_arn,
                    "KeyState": "Enabled",
                    "KeyUsage": "ENCRYPT_DECRYPT",
                    "KeySpec": "SYMMETRIC_DEFAULT",
                }
            },
        )
        stubber.add_response("encrypt", {"CiphertextBlob": b"blob", "KeyId": key_arn})
        stubber.add_client_error("decrypt", service_error_code="AccessDeniedException", http_status_code=400)
        result = provider.check(context)
    assert (result.ok, result.error_code) == (False, "kms-access-denied")
    assert result.detail.startswith(f"Access denied for kms:Decrypt on {key_arn}")


# -- error mapping (codes moto does not produce) -------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected", "fragment"),
    [
        ("AccessDeniedException", 400, errors.KmsAccessDenied, "Access denied for kms:{action} on {arn}"),
        ("DisabledException", 400, errors.KmsKeyDisabled, "is disabled in AWS KMS"),
        ("KMSInvalidStateException", 400, errors.KmsKeyDisabled, "pending deletion"),
        ("NotFoundException", 400, errors.KmsKeyNotFound, "AWS KMS has no key {arn}"),
        ("ThrottlingException", 400, errors.KmsThrottled, "throttled"),
        ("LimitExceededException", 400, errors.KmsThrottled, "throttled"),
        ("UnrecognizedClientException", 400, errors.KmsAccessDenied, "rejected the credentials"),
        ("ExpiredTokenException", 400, errors.KmsAccessDenied, "rejected the credentials"),
        ("InvalidKeyUsageException", 400, errors.KmsMisconfigured, "symmetric ENCRYPT_DECRYPT"),
        ("KMSInternalException", 500, errors.KmsUnreachable, "retry later"),
        ("DependencyTimeoutException", 503, errors.KmsTimeout, "timed out"),
        ("SomethingNew", 400, errors.ProviderError, "(SomethingNew)"),
    ],
)
@pytest.mark.parametrize("action", ["Encrypt", "Decrypt"])
def test_aws_error_codes_map_to_typed_errors(provider, key_arn, context, code, status, expected, fragment, action):
    def call():
        if action == "Encrypt":
            return provider.wrap(os.urandom(32), context)
        return provider.unwrap(HEADER + b"ciphertext", context)

    with stubbed(provider) as stubber:
        stubber.add_client_error(action.lower(), service_error_code=code, service_message="x", http_status_code=status)
        with pytest.raises(expected) as raised:
            call()
    assert type(raised.value) is expected
    assert fragment.format(action=action, arn=key_arn) in raised.value.detail


@pytest.mark.parametrize("code", ["InvalidCiphertextException", "IncorrectKeyException"])
def test_a_refused_ciphertext_is_an_authentication_failure(provider, context, code):
    with stubbed(provider) as stubber:
        stubber.add_client_error("decrypt", service_error_code=code, http_status_code=400)
        with pytest.raises(errors.AuthenticationFailed, match=context.tenant_uid):
            provider.unwrap(HEADER + b"ciphertext", context)


def test_throttling_is_retried_then_succeeds(provider, key_arn, context):
    with stubbed(provider) as stubber:
        provider.retry_policy = FAST_RETRY
        stubber.add_client_error("encrypt", service_error_code="ThrottlingException", http_status_code=400)
        stubber.add_client_error("encrypt", service_error_code="ThrottlingException", http_status_code=400)
        stubber.add_response("encrypt", {"CiphertextBlob": b"blob", "KeyId": key_arn})
        assert provider.wrap(os.urandom(32), context) == HEADER + b"blob"
        stubber.assert_no_pending_responses()


def test_access_denied_is_not_retried(provider, key_arn, context):
    with stubbed(provider) as stubber:
        provider.retry_policy = FAST_RETRY
        stubber.add_client_error("encrypt", service_error_code="AccessDeniedException", http_status_code=400)
        stubber.add_response("encrypt", {"CiphertextBlob": b"blob", "KeyId": key_arn})
        with pytest.raises(errors.KmsAccessDenied):
            provider.wrap(os.urandom(32), context)
        # the success response is still queued: nobody asked again
        with pytest.raises(AssertionError):
            stubber.assert_no_pending_responses()


# -- network failures ------------------------------------------------------------


def test_a_stopped_server_is_unreachable_and_a_restart_heals(context):
    with start_moto_server() as server:
        arn = server.create_key()
        provider = AwsKmsProvider(*server.provider_settings(arn), timeout=1)
        provider.retry_policy = FAST_RETRY
        key = os.urandom(32)
        wrapped = provider.wrap(key, context)
        server.stop()
        with pytest.raises(errors.KmsUnreachable, match=f"Could not connect to AWS KMS at {server.url}"):
            provider.unwrap(wrapped, context)
        result = provider.check(context)
        assert (result.ok, result.error_code) == (False, "kms-unreachable")
        server.start()  # same port, same keys
        assert provider.unwrap(wrapped, context) == key


def test_a_server_that_never_answers_times_out(context):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections in the kernel, never reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        provider = AwsKmsProvider(
            {"key_id": KEY_ARN_SHAPE, "region": "eu-west-1", "endpoint_url": url},
            {"access_key_id": "AKIAKEYCORETESTING01", "secret_access_key": "x"},
            timeout=0.3,
        )
        provider.retry_policy = NO_RETRY
        with pytest.raises(errors.KmsTimeout, match=r"did not answer kms:Encrypt within 0\.3s"):
            provider.wrap(os.urandom(32), context)


def test_missing_credentials_are_a_misconfiguration(monkeypatch, tmp_path, moto_server, key_arn, context):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    provider = AwsKmsProvider({"key_id": key_arn, "endpoint_url": moto_server.url}, {})
    with pytest.raises(errors.KmsMisconfigured, match="No AWS credentials"):
        provider.wrap(os.urandom(32), context)


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


def field_errors(settings, secrets=None):
    with pytest.raises(errors.InvalidInput) as raised:
        AwsKmsProvider.clean(settings, secrets or {})
    return raised.value.field_errors


def test_clean_accepts_an_arn_and_takes_the_region_from_it():
    settings, secrets = AwsKmsProvider.clean(
        {"key_id": f"  {KEY_ARN_SHAPE} ", "encryption_context": "app=billing"},
        {"access_key_id": "AKIAKEYCORETESTING01", "secret_access_key": "s3cret"},
    )
    assert settings["key_id"] == KEY_ARN_SHAPE
    assert settings["region"] == "eu-west-1"
    assert settings["encryption_context"] == {"app": "billing"}
    assert secrets == {"access_key_id": "AKIAKEYCORETESTING01", "secret_access_key": "s3cret"}


def test_clean_accepts_alias_arns_and_multi_region_keys():
    for key_id in (
        "arn:aws:kms:eu-west-1:111122223333:alias/tenant-key",
        "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    ):
        assert AwsKmsProvider.clean({"key_id": key_id}, {})[0]["key_id"] == key_id


@pytest.mark.parametrize(
    ("settings", "secrets", "field", "message"),
    [
        ({}, {}, "key_id", "required"),
        ({"key_id": "1234abcd-12ab-34cd-56ef-1234567890ab"}, {}, "key_id", "Enter a key ARN"),
        ({"key_id": "arn:aws:s3:::bucket"}, {}, "key_id", "Enter a key ARN"),
        ({"key_id": "alias/aws/s3", "region": "eu-west-1"}, {}, "key_id", "AWS managed keys"),
        ({"key_id": KEY_ARN_SHAPE, "region": "Ireland"}, {}, "region", "not an AWS region"),
        ({"key_id": KEY_ARN_SHAPE, "region": "us-east-1"}, {}, "region", "The key ARN is in eu-west-1"),
        ({"key_id": "alias/tenant"}, {}, "region", "Region is required"),
        ({"key_id": KEY_ARN_SHAPE, "role_arn": "arn:aws:iam::1:user/x"}, {}, "role_arn", "IAM role ARN"),
        ({"key_id": KEY_ARN_SHAPE, "endpoint_url": "http://kms.example.com"}, {}, "endpoint_url", "Use https://"),
        ({"key_id": KEY_ARN_SHAPE, "endpoint_url": "ftp://kms.example.com"}, {}, "endpoint_url", "https:// URL"),
        ({"key_id": KEY_ARN_SHAPE, "endpoint_url": "https://u:p@kms.example.com"}, {}, "endpoint_url", "credentials"),
        ({"key_id": KEY_ARN_SHAPE, "encryption_context": "justtext"}, {}, "encryption_context", "key=value"),
        ({"key_id": KEY_ARN_SHAPE, "encryption_context": "keycore:tenant=x"}, {}, "encryption_context", "reserved"),
        ({"key_id": KEY_ARN_SHAPE}, {"access_key_id": "AKIAKEYCORETESTING01"}, "secret_access_key", "both"),
        ({"key_id": KEY_ARN_SHAPE}, {"secret_access_key": "s"}, "access_key_id", "both"),
        ({"key_id": KEY_ARN_SHAPE}, {"access_key_id": "akia-lower", "secret_access_key": "s"}, "access_key_id", "16"),
        ({"key_id": KEY_ARN_SHAPE}, {"session_token": "t"}, "session_token", "goes with"),
    ],
)
def test_clean_reports_field_errors(settings, secrets, field, message):
    problems = field_errors(settings, secrets)
    assert field in problems, problems
    assert any(message in m for m in problems[field]), problems[field]


def test_clean_reports_every_problem_at_once():
    problems = field_errors({"region": "nowhere", "role_arn": "nope"}, {"session_token": "t"})
    assert {"key_id", "region", "role_arn", "session_token"} <= set(problems)


def test_plain_http_is_accepted_for_a_local_endpoint():
    settings, _ = AwsKmsProvider.clean({"key_id": KEY_ARN_SHAPE, "endpoint_url": "http://127.0.0.1:5000"}, {})
    assert settings["endpoint_url"] == "http://127.0.0.1:5000"


def test_setup_help_gives_the_key_policy_with_the_tenant_condition():
    text = AwsKmsProvider.setup_help(
        tenant_external_id="acme", vendor_principal="arn:aws:iam::999988887777:role/keycore", tenant_uid="ab" * 16
    )
    policy = json.loads(text[text.index("[") : text.index("]\n") + 1])
    wrap, describe = policy
    assert wrap["Principal"] == {"AWS": "arn:aws:iam::999988887777:role/keycore"}
    assert wrap["Action"] == ["kms:Encrypt", "kms:Decrypt"]
    assert wrap["Condition"] == {"StringEquals": {"kms:EncryptionContext:keycore:tenant": "ab" * 16}}
    assert describe["Action"] == "kms:DescribeKey" and "Condition" not in describe
    assert "sts:AssumeRole" in text and "acme" in text


def test_describe_names_the_key_and_region_but_no_secret(moto_server, key_arn):
    settings, secrets = moto_server.provider_settings(key_arn)
    text = AwsKmsProvider(settings, secrets).describe()
    assert key_arn in text
    assert secrets["secret_access_key"] not in text and secrets["access_key_id"] not in text
    assert AwsKmsProvider({"key_id": "alias/t", "region": "eu-west-1"}, {}).describe() == "alias/t (eu-west-1)"


# -- what AWS says about principals stays with the vendor ----------------------------------------------


@pytest.fixture
def iam_enforcing_moto():
    """moto enforcing IAM after three unauthenticated set-up calls: a user without any policy, and a key."""
    server = MotoServerProcess(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        server.start()
    except ServiceUnavailable as exc:
        require(False, f"moto server process: {exc}")
    try:
        iam = server.client("iam")
        iam.create_user(UserName="keycore-vendor-prod")
        credentials = iam.create_access_key(UserName="keycore-vendor-prod")["AccessKey"]
        arn = server.client().create_key()["KeyMetadata"]["Arn"]
        settings = {"key_id": arn, "region": AWS_REGION, "endpoint_url": server.url}
        secrets = {"access_key_id": credentials["AccessKeyId"], "secret_access_key": credentials["SecretAccessKey"]}
        yield settings, secrets
    finally:
        server.stop()


@pytest.mark.django_db
def test_aws_error_text_naming_principals_stays_in_the_vendors_log(iam_enforcing_moto, tenant, actor, caplog):
    """AWS's AccessDenied names the caller ("User: arn:aws:iam::…:user/keycore-vendor-prod is not authorized"):
    the vendor's principal is not the tenant's business. Tenants see the code and the fix; the log has the text."""
    from keycore.models import KmsConfig
    from keycore.services import keys

    settings, secrets = iam_enforcing_moto
    principal = "user/keycore-vendor-prod"
    provider = AwsKmsProvider(settings, secrets, timeout=5)
    provider.retry_policy = NO_RETRY
    result = provider.check(make_context())
    assert not result.ok and result.error_code == "kms-access-denied"
    assert principal not in result.detail and "arn:aws:iam" not in result.detail
    assert result.detail.startswith("Access denied for kms:DescribeKey") and "key policy must allow" in result.detail
    assert principal in caplog.text, "the vendor's log keeps AWS's own words"

    # through the services: a tenant testing the configuration, and the health detail the portals show
    with pytest.raises(errors.InvalidInput) as refused:
        keys.kms_config_create(
            tenant=tenant, owner="tenant", data=keys.ConfigInput("aws", "Own", settings, secrets), actor=actor
        )
    assert principal not in str(refused.value.detail) + str(refused.value.field_errors)
    config = keys.kms_config_create(
        tenant=tenant,
        owner="vendor",
        data=keys.ConfigInput("aws", "Vendor AWS", settings, secrets),
        actor=actor,
        skip_check=True,
    )
    keys.kms_config_check(config=config)
    detail = KmsConfig.objects.get(pk=config.pk).health_detail
    assert detail.startswith("Access denied") and principal not in detail
