"""AWS KMS: tenant keys wrapped by Encrypt/Decrypt under a customer managed key.

The KEK never leaves AWS KMS: :meth:`AwsKmsProvider.wrap` sends the tenant key to
``Encrypt`` and keeps the ciphertext blob, :meth:`AwsKmsProvider.unwrap` sends it
back to ``Decrypt``. Both pass ``EncryptionContext`` = the tenant and key version
(:meth:`WrapContext.encryption_context`) plus any extra pairs the configuration
sets, so AWS binds every blob to its tenant, logs the tenant in CloudTrail, and
lets the key policy allow KeyCore only for the one tenant. ``Decrypt`` also passes
``KeyId``, so a blob made under any other key is refused instead of being
decrypted with whatever key it names.

Wrapped layout, 2 bytes + the AWS ciphertext blob::

    offset  size  field
         0     1  kind        0xA5
         1     1  version     0x01
         2     n  blob        CiphertextBlob returned by kms:Encrypt

Credentials: an access key (optionally with a session token), or none (the
default AWS chain of the KeyCore process: environment, instance or task role);
either may first assume a role in the tenant's account. The ``ExternalId`` of
that AssumeRole is KeyCore's, never the tenant's choice: ``keycore-<tenant uid>``
(:func:`external_id_for`), shown in the setup help for the role's trust policy.
A tenant who could choose it could name another tenant's role and have KeyCore
assume it (the confused deputy the external ID exists to prevent). Assumed-role
credentials are refreshed five minutes before they expire.

What AWS says in an error (it names principals: KeyCore's role, the vendor's
account) goes to the vendor-side log only; tenants see the error code and what
to fix. One boto3 client per provider instance, shared by threads (boto3 clients
are thread-safe); botocore does not retry (``total_max_attempts=1``) because
:mod:`keycore.providers.retry` does, with jitter, for transient errors only.

Using an alias: ``Decrypt`` names the alias, so pointing the alias at another
key makes existing blobs unreadable through this configuration. Rotate with AWS
automatic key rotation (same key, new material) or with a new configuration and
a rekey job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from keycore import egress, errors
from keycore.providers.base import HealthResult, KeyProvider, SettingField, WrapContext
from keycore.providers.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry

T = TypeVar("T")
log = logging.getLogger(__name__)

AWS_WRAP_KIND = 0xA5
AWS_WRAP_V1 = 1
HEADER = bytes((AWS_WRAP_KIND, AWS_WRAP_V1))

#: assumed-role credentials are renewed when they have less than this left
CREDENTIAL_REFRESH_MARGIN = dt.timedelta(minutes=5)
ASSUMED_ROLE_SECONDS = 3600
ROLE_SESSION_NAME = "keycore"
#: encryption-context key prefixes that configurations may not set
RESERVED_CONTEXT_PREFIXES = ("keycore:", "aws:", "aws-crypto-")

_PARTITION = r"aws(?:-cn|-us-gov|-iso|-iso-b|-iso-e|-iso-f|-eusc)?"
_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}"
_KEY_RESOURCE = r"key/(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})"
_ALIAS_RESOURCE = r"alias/[A-Za-z0-9/_-]{1,250}"
KMS_ARN_RE = re.compile(
    rf"^arn:(?P<partition>{_PARTITION}):kms:(?P<region>{_REGION}):(?P<account>\d{{12}}):"
    rf"(?P<resource>{_KEY_RESOURCE}|{_ALIAS_RESOURCE})$"
)
ALIAS_RE = re.compile(rf"^{_ALIAS_RESOURCE}$")
REGION_RE = re.compile(rf"^{_REGION}$")
ROLE_ARN_RE = re.compile(rf"^arn:{_PARTITION}:iam::\d{{12}}:role/[\w+=,.@/-]{{1,512}}$")
EXTERNAL_ID_PREFIX = "keycore-"
ACCESS_KEY_ID_RE = re.compile(r"^[A-Z0-9]{16,128}$")
_LOOPBACK_NAMES = {"localhost"}

_DISABLED = {"DisabledException", "KMSInvalidStateException"}
_THROTTLED = {"ThrottlingException", "Throttling", "LimitExceededException", "RequestLimitExceeded"}
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredTokenException",
    "ExpiredToken",
}
_UNAVAILABLE = {"KMSInternalException", "InternalFailure", "ServiceUnavailable", "KeyUnavailableException"}
_TIMEOUTS = {"DependencyTimeoutException", "RequestTimeout", "RequestTimeoutException"}
_WRONG_KEY_KIND = {"InvalidKeyUsageException", "UnsupportedOperationException"}


class AwsKmsProvider(KeyProvider):
    """Wraps tenant keys with a symmetric customer managed key in AWS KMS."""

    name = "aws"
    label = "AWS KMS"
    fields = (
        SettingField(
            "key_id",
            "Key ARN or alias",
            help="arn:aws:kms:<region>:<account>:key/<id>, an alias ARN, or alias/<name> in the account of the "
            "credentials below. A symmetric customer managed key.",
        ),
        SettingField("region", "Region", required=False, help="For example eu-west-1. Taken from the ARN when empty."),
        SettingField(
            "role_arn",
            "Role to assume",
            required=False,
            help="arn:aws:iam::<account>:role/<name>: KeyCore assumes it before calling KMS. Leave empty to call "
            "KMS with the credentials below directly.",
        ),
        SettingField(
            "endpoint_url",
            "Endpoint URL",
            required=False,
            help="Only for a VPC or FIPS endpoint: https://… Leave empty for the regional endpoint.",
        ),
        SettingField(
            "sts_endpoint_url",
            "STS endpoint URL",
            required=False,
            help="Only with a role and a private STS endpoint. Leave empty for the regional endpoint.",
        ),
        SettingField(
            "encryption_context",
            "Extra encryption context",
            required=False,
            kind="textarea",
            help="Optional key=value lines added to every request (keycore:tenant is always sent).",
        ),
        SettingField(
            "access_key_id",
            "Access key ID",
            required=False,
            secret=True,
            help="Leave empty to use the credentials KeyCore runs with (its IAM role).",
        ),
        SettingField("secret_access_key", "Secret access key", required=False, secret=True),
        SettingField("session_token", "Session token", required=False, secret=True),
    )

    #: how one request is retried; tests and jobs may swap it per instance
    retry_policy: RetryPolicy = DEFAULT_POLICY

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(settings, secrets, **kwargs)
        self.key_id = str(self.settings.get("key_id", "")).strip()
        match = KMS_ARN_RE.match(self.key_id)
        self.region = str(self.settings.get("region") or (match and match["region"]) or "").strip()
        self.extra_context = parse_encryption_context(self.settings.get("encryption_context"))
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_expires: dt.datetime | None = None
        #: the tenant whose external ID the client's role was assumed with
        self._client_tenant: str | None = None

    # -- validation and help -----------------------------------------------------

    @classmethod
    def clean(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Checks the ARN/alias and region, role, endpoints, context pairs and the credential combination."""
        try:
            clean_settings, clean_secrets = super().clean(settings, secrets)
            problems: dict[str, list[str]] = {}
        except errors.InvalidInput as exc:
            problems = {name: list(messages) for name, messages in exc.field_errors.items()}
            clean_settings = {k: v.strip() if isinstance(v, str) else v for k, v in settings.items()}
            clean_secrets = {k: v.strip() for k, v in secrets.items() if isinstance(v, str)}

        def add(name: str, message: str) -> None:
            problems.setdefault(name, []).append(message)

        key_id = str(clean_settings.get("key_id") or "")
        region = str(clean_settings.get("region") or "")
        arn = KMS_ARN_RE.match(key_id)
        if key_id and "key_id" not in problems:
            if arn is None and not ALIAS_RE.match(key_id):
                add(
                    "key_id",
                    "Enter a key ARN (arn:aws:kms:<region>:<account>:key/<id>), an alias ARN or alias/<name>.",
                )
            elif key_id.split(":")[-1].startswith("alias/aws/"):
                add("key_id", "AWS managed keys (alias/aws/…) cannot be shared; use a customer managed key.")
        if region and not REGION_RE.match(region):
            add("region", f"{region!r} is not an AWS region name such as eu-west-1.")
        elif arn and region and region != arn["region"]:
            add("region", f"The key ARN is in {arn['region']}; leave the region empty or set it to {arn['region']}.")
        elif arn and not region:
            clean_settings["region"] = arn["region"]
        elif not arn and not region and "key_id" not in problems:
            add("region", "Region is required when the key is given as an alias name.")

        role_arn = str(clean_settings.get("role_arn") or "")
        if role_arn and not ROLE_ARN_RE.match(role_arn):
            add("role_arn", "Enter an IAM role ARN: arn:aws:iam::<account>:role/<name>.")
        # an external ID typed in is dropped: KeyCore sends its own per tenant (external_id_for)
        clean_settings.pop("external_id", None)

        for name in ("endpoint_url", "sts_endpoint_url"):
            url = str(clean_settings.get(name) or "")
            if url:
                message = endpoint_problem(url)
                if message:
                    add(name, message)
        if clean_settings.get("sts_endpoint_url") and not role_arn:
            add("sts_endpoint_url", "An STS endpoint is only used when assuming a role.")

        try:
            context = parse_encryption_context(clean_settings.get("encryption_context"))
        except ValueError as exc:
            add("encryption_context", str(exc))
        else:
            if context:
                clean_settings["encryption_context"] = context
            else:
                clean_settings.pop("encryption_context", None)

        access_key_id = clean_secrets.get("access_key_id", "")
        secret_key = clean_secrets.get("secret_access_key", "")
        if access_key_id and not ACCESS_KEY_ID_RE.match(access_key_id):
            add("access_key_id", "An access key ID is 16 or more capital letters and digits (AKIA…, ASIA…).")
        if bool(access_key_id) != bool(secret_key):
            add(
                "secret_access_key" if access_key_id else "access_key_id",
                "Give both the access key ID and the secret access key, or neither.",
            )
        if clean_secrets.get("session_token") and not access_key_id:
            add("session_token", "A session token goes with an access key ID and secret access key.")

        if problems:
            raise errors.InvalidInput("The AWS KMS configuration has errors.", field_errors=problems)
        return clean_settings, clean_secrets

    @classmethod
    def setup_help(cls, *, tenant_external_id: str = "", vendor_principal: str = "", tenant_uid: str = "") -> str:
        """The key-policy statements to paste, with the tenant's encryption-context condition."""
        principal = vendor_principal or "<KeyCore's AWS principal, e.g. arn:aws:iam::111122223333:role/keycore>"
        tenant = tenant_uid or "<this tenant's KeyCore uid>"
        statements = [
            {
                "Sid": "KeyCoreWrapTenantKeys",
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": ["kms:Encrypt", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:EncryptionContext:keycore:tenant": tenant}},
            },
            {
                "Sid": "KeyCoreCheckKey",
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": "kms:DescribeKey",
                "Resource": "*",
            },
        ]
        external_id = external_id_for(tenant_uid) if tenant_uid else "<keycore-this tenant's KeyCore uid>"
        trust = {
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
        }
        for_whom = f" for {tenant_external_id}" if tenant_external_id else ""
        return (
            f"AWS KMS setup{for_whom}\n\n"
            "1. Use a symmetric customer managed key (key spec SYMMETRIC_DEFAULT, key usage ENCRYPT_DECRYPT). "
            "AWS managed keys (alias/aws/…) cannot be shared.\n"
            "2. Add these statements to the key policy. KeyCore sends the encryption context "
            f'{{"keycore:tenant": "{tenant}", "keycore:tenant-key-version": "<n>"}} with every Encrypt and Decrypt, '
            "so the condition limits KeyCore to this tenant's keys. DescribeKey carries no encryption context, "
            "so it needs its own statement without the condition.\n\n"
            f"{json.dumps(statements, indent=2)}\n\n"
            "3. Optional: to let KeyCore act through a role in your account instead, grant the statements above to "
            "that role, enter its ARN here, and allow KeyCore to assume it in the role's trust policy. KeyCore "
            f"always sends the external ID {external_id}: it is generated for this tenant and cannot be chosen, so "
            "no other tenant can make KeyCore assume your role.\n\n"
            f"{json.dumps(trust, indent=2)}\n\n"
            "To revoke KeyCore's access, disable the key, schedule its deletion or remove these statements: "
            "KeyCore can no longer unwrap this tenant's keys once its in-memory copies expire."
        )

    @classmethod
    def egress(cls, settings: Mapping[str, Any]) -> list[str]:
        """Custom endpoints only; AWS's own regional endpoints are public."""
        hosts = []
        for name in ("endpoint_url", "sts_endpoint_url"):
            url = str(settings.get(name) or "").strip()
            if url:
                hosts.append(urlsplit(url).hostname or url)
        return hosts

    def describe(self) -> str:
        where = f"{self.key_id} ({self.region})" if self.region and self.region not in self.key_id else self.key_id
        role = self.settings.get("role_arn")
        return f"{where} as {role}" if role else where

    # -- key operations ----------------------------------------------------------

    def wrap(self, key: bytes, context: WrapContext) -> bytes:
        if not isinstance(key, bytes | bytearray) or not key:
            raise errors.InvalidInput("Only non-empty bytes can be wrapped.")
        response = self._call(
            "kms:Encrypt",
            lambda client: client.encrypt(
                KeyId=self.key_id,
                Plaintext=bytes(key),
                EncryptionContext=self._encryption_context(context),
                EncryptionAlgorithm="SYMMETRIC_DEFAULT",
            ),
            context,
        )
        return HEADER + response["CiphertextBlob"]

    def unwrap(self, wrapped: bytes, context: WrapContext) -> bytes:
        if len(wrapped) <= len(HEADER) or wrapped[:1] != HEADER[:1]:
            raise errors.MalformedData("This is not a tenant key wrapped by AWS KMS.")
        if wrapped[1] != AWS_WRAP_V1:
            raise errors.MalformedData(f"Unknown AWS-wrapped tenant key version {wrapped[1]}.")
        response = self._call(
            "kms:Decrypt",
            lambda client: client.decrypt(
                KeyId=self.key_id,
                CiphertextBlob=bytes(wrapped[len(HEADER) :]),
                EncryptionContext=self._encryption_context(context),
                EncryptionAlgorithm="SYMMETRIC_DEFAULT",
            ),
            context,
        )
        return response["Plaintext"]

    def check(self, context: WrapContext) -> HealthResult:
        """DescribeKey (state, usage) first for a precise reason, then the wrap/unwrap probe."""
        started = time.perf_counter()
        try:
            metadata = self._call("kms:DescribeKey", lambda client: client.describe_key(KeyId=self.key_id), context)
            self._require_usable(metadata["KeyMetadata"])
        except errors.KeyCoreError as exc:
            return HealthResult(False, exc.detail, (time.perf_counter() - started) * 1000, exc.code)
        result = super().check(context)
        return dataclasses.replace(result, latency_ms=(time.perf_counter() - started) * 1000)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    # -- internals ---------------------------------------------------------------

    def _encryption_context(self, context: WrapContext) -> dict[str, str]:
        return {**self.extra_context, **context.encryption_context()}

    def _require_usable(self, metadata: Mapping[str, Any]) -> None:
        arn = metadata.get("Arn", self.key_id)
        state = metadata.get("KeyState", "Enabled")
        if state != "Enabled":
            raise errors.KmsKeyDisabled(f"The key {arn} is {state} in AWS KMS; enable it to use this configuration.")
        usage = metadata.get("KeyUsage", "ENCRYPT_DECRYPT")
        spec = metadata.get("KeySpec") or metadata.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
        if usage != "ENCRYPT_DECRYPT" or spec != "SYMMETRIC_DEFAULT":
            raise errors.KmsMisconfigured(
                f"The key {arn} is a {spec} key for {usage}; KeyCore needs a symmetric key "
                "(SYMMETRIC_DEFAULT) for ENCRYPT_DECRYPT."
            )

    @property
    def client(self) -> Any:
        """The boto3 KMS client as last built (for a role: for the tenant of the last call)."""
        return self._client_for(None)

    def _client_for(self, tenant_uid: str | None) -> Any:
        """The boto3 KMS client; rebuilt when assumed-role credentials are about to expire.

        With a role, the client belongs to the tenant whose external ID assumed it: a call
        for another tenant (which KeyCore never makes with one configuration) gets its own.
        """
        with self._lock:
            now = dt.datetime.now(dt.UTC)
            role = bool(self.settings.get("role_arn"))
            tenant = tenant_uid or self._client_tenant
            if (
                self._client is None
                or (role and tenant != self._client_tenant)
                or (self._client_expires is not None and self._client_expires - now < CREDENTIAL_REFRESH_MARGIN)
            ):
                if self._client is not None:
                    self._client.close()
                self._client = None
                self._client, self._client_expires = self._build_client(tenant)
                self._client_tenant = tenant
            return self._client

    def _botocore_config(self) -> Config:
        return Config(
            region_name=self.region or None,
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=32,
            user_agent_extra="keycore",
            # under an egress policy, no proxy from the environment: it would resolve the name after the check
            **({"proxies": {}} if self.egress is not None else {}),
        )

    def _pinned(self, client: Any) -> Any:
        """Every connection of ``client`` to an address of one resolution the egress policy checked."""
        if self.egress is not None:
            egress.pin_botocore_client(client, self.egress)
        return client

    def _build_client(self, tenant_uid: str | None) -> tuple[Any, dt.datetime | None]:
        session = boto3.session.Session(
            aws_access_key_id=self.secrets.get("access_key_id") or None,
            aws_secret_access_key=self.secrets.get("secret_access_key") or None,
            aws_session_token=self.secrets.get("session_token") or None,
            region_name=self.region or None,
        )
        expires = None
        role_arn = self.settings.get("role_arn")
        if role_arn:
            credentials = self._assume_role(session, role_arn, tenant_uid)
            expires = credentials["Expiration"]
            session = boto3.session.Session(
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
                region_name=self.region or None,
            )
        client = session.client(
            "kms", endpoint_url=self.settings.get("endpoint_url") or None, config=self._botocore_config()
        )
        return self._pinned(client), expires

    def _assume_role(self, session: boto3.session.Session, role_arn: str, tenant_uid: str | None) -> dict[str, Any]:
        if not tenant_uid:
            raise errors.KmsMisconfigured("KeyCore assumes a tenant's role only for that tenant (its external ID).")
        sts = self._pinned(
            session.client(
                "sts", endpoint_url=self.settings.get("sts_endpoint_url") or None, config=self._botocore_config()
            )
        )
        request: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": ROLE_SESSION_NAME,
            "DurationSeconds": ASSUMED_ROLE_SECONDS,
            "ExternalId": external_id_for(tenant_uid),
        }
        try:
            return sts.assume_role(**request)["Credentials"]
        except ClientError as exc:
            code = _error_code(exc)
            if code in {"AccessDenied", "AccessDeniedException"}:
                self._log_aws_error(exc, "sts:AssumeRole")
                raise errors.KmsAccessDenied(
                    f"KeyCore could not assume the role {role_arn} ({code}). The role's trust policy must allow "
                    f"sts:AssumeRole for KeyCore's principal with the external ID {request['ExternalId']} "
                    "(see the setup help)."
                ) from None
            raise self._translate(exc, "sts:AssumeRole", None) from None
        except BotoCoreError as exc:
            raise self._translate(exc, "sts:AssumeRole", None) from None
        finally:
            sts.close()

    def _call(self, action: str, request: Callable[[Any], T], context: WrapContext | None = None) -> T:
        def attempt() -> T:
            try:
                return request(self._client_for(context.tenant_uid if context is not None else None))
            except (ClientError, BotoCoreError) as exc:
                raise self._translate(exc, action, context) from None

        return call_with_retry(attempt, policy=self.retry_policy, description=f"{action} on {self.key_id}")

    def _translate(self, exc: Exception, action: str, context: WrapContext | None) -> errors.KeyCoreError:
        """One AWS or botocore error → the typed KeyCore error that says what to fix."""
        key = self.key_id
        if isinstance(exc, ClientError):
            # AWS's message names principals (KeyCore's role, the vendor's account): the vendor's log keeps it,
            # the tenant sees the code and the fix
            code = _error_code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            self._log_aws_error(exc, action)
            denied = errors.KmsAccessDenied(
                f"Access denied for {action} on {key} ({code}). The key policy must allow {action} for "
                "KeyCore's principal with this tenant's encryption context (see the setup help)."
            )
            if code in {"AccessDeniedException", "AccessDenied"}:
                return denied
            if code == "NotFoundException":
                return errors.KmsKeyNotFound(
                    f"AWS KMS has no key {key} in {self.region or 'this region'}: check the key ARN or alias "
                    "and the region."
                )
            if code == "DisabledException":
                return errors.KmsKeyDisabled(f"The key {key} is disabled in AWS KMS; enable it to use it again.")
            if code in _DISABLED:
                return errors.KmsKeyDisabled(
                    f"The key {key} cannot be used in its current state in AWS KMS ({code}: pending deletion, "
                    "pending import or unavailable). Check its state in AWS KMS and enable it."
                )
            if code == "InvalidCiphertextException":
                return errors.AuthenticationFailed(
                    _not_authentic(context, "it was altered, or belongs to another tenant, version or key")
                )
            if code == "IncorrectKeyException":
                return errors.AuthenticationFailed(_not_authentic(context, f"it was not wrapped by {key}"))
            if code in _THROTTLED:
                return errors.KmsThrottled(f"AWS KMS throttled {action} on {key} ({code}); retry later.")
            if code in _BAD_CREDENTIALS:
                return errors.KmsAccessDenied(
                    f"AWS rejected the credentials of this configuration ({code}): check the access key ID, the "
                    "secret access key and the session token."
                )
            if code in _WRONG_KEY_KIND:
                return errors.KmsMisconfigured(
                    f"The key {key} cannot be used for {action} ({code}): KeyCore needs a symmetric "
                    "ENCRYPT_DECRYPT key (key spec SYMMETRIC_DEFAULT)."
                )
            if code in _TIMEOUTS:
                return errors.KmsTimeout(f"AWS KMS timed out on {action} ({code}).")
            if code in _UNAVAILABLE or status >= 500:
                return errors.KmsUnreachable(f"AWS KMS failed on {action} ({code}); retry later.")
            if status == 403:  # an access denial in another spelling (IAM's XML error, a proxy's 403)
                return denied
            if code in {"ValidationException", "InvalidArnException", "InvalidKeyId"}:
                return errors.KmsMisconfigured(
                    f"AWS KMS rejected the key identifier {key} ({code}): enter a key ARN, an alias ARN or "
                    "alias/<name> of a key in this region."
                )
            return errors.ProviderError(
                f"AWS KMS refused {action} on {key} ({code}). Check the key, its policy and the credentials of "
                "this configuration; the vendor's logs have AWS's full answer."
            )
        if isinstance(exc, ReadTimeoutError):
            return errors.KmsTimeout(f"AWS KMS did not answer {action} within {self.timeout:g}s.")
        service, endpoint = (
            ("AWS STS", self._endpoint("sts")) if action.startswith("sts:") else ("AWS KMS", self._endpoint())
        )
        if isinstance(exc, ConnectTimeoutError):
            return errors.KmsUnreachable(f"Could not connect to {service} within {self.timeout:g}s ({endpoint}).")
        if isinstance(exc, SSLError):
            return errors.KmsMisconfigured(f"TLS failed with {service} at {endpoint}: {exc}")
        if isinstance(exc, EndpointConnectionError | BotoConnectionError):
            return errors.KmsUnreachable(f"Could not connect to {service} at {endpoint}.")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return errors.KmsMisconfigured(
                "No AWS credentials: enter an access key, or run KeyCore with an IAM role that may call KMS."
            )
        if isinstance(exc, ParamValidationError):
            return errors.KmsMisconfigured(f"AWS rejected the request parameters for {action}: {exc}")
        if isinstance(exc, HTTPClientError) and isinstance(exc.kwargs.get("error"), errors.EgressDenied):
            return exc.kwargs["error"]  # refused by the egress policy before connecting
        if isinstance(exc, HTTPClientError):  # the connection broke mid-request
            return errors.KmsUnreachable(f"AWS KMS request {action} failed: {type(exc).__name__}.")
        log.warning("AWS client error on %s for %s: %r", action, key, exc)
        return errors.KmsMisconfigured(
            f"The AWS client could not make the request {action} ({type(exc).__name__}); the vendor's logs have "
            "the details."
        )

    def _log_aws_error(self, exc: ClientError, action: str) -> None:
        """AWS's own words, for the vendor's operators only (they may name principals and accounts)."""
        log.warning(
            "AWS %s on %s answered %s: %s", action, self.key_id, _error_code(exc), exc.response.get("Error", {})
        )

    def _endpoint(self, service: str = "kms") -> str:
        configured = self.settings.get("sts_endpoint_url" if service == "sts" else "endpoint_url")
        return configured or f"the {self.region or 'default'} regional endpoint"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def external_id_for(tenant_uid: str) -> str:
    """The ExternalId KeyCore sends when it assumes a tenant's role: generated per tenant, never chosen by one."""
    return EXTERNAL_ID_PREFIX + tenant_uid


def _not_authentic(context: WrapContext | None, why: str) -> str:
    if context is None:
        return f"AWS KMS refused the wrapped tenant key: {why}."
    return (
        f"AWS KMS refused the wrapped tenant key for tenant {context.tenant_uid} version {context.key_version}: {why}."
    )


def parse_encryption_context(value: Any) -> dict[str, str]:
    """Extra encryption context from a mapping or ``key=value`` lines; raises ``ValueError`` on bad pairs."""
    if value in (None, ""):
        return {}
    if isinstance(value, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for number, line in enumerate(value.splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, val = line.partition("=")
            if not sep:
                raise ValueError(f"Line {number}: write key=value.")
            pairs.append((name.strip(), val.strip()))
    else:
        raise ValueError("Write one key=value pair per line.")
    context: dict[str, str] = {}
    for name, val in pairs:
        if not name or not val:
            raise ValueError(f"{name or '(empty)'}: keys and values must not be empty.")
        if name.lower().startswith(RESERVED_CONTEXT_PREFIXES):
            raise ValueError(f"{name}: keys starting with keycore:, aws: or aws-crypto- are reserved.")
        context[name] = val
    return context


def endpoint_problem(url: str) -> str:
    """Why ``url`` is not acceptable as a KMS/STS endpoint, or "" if it is.

    https only; plain http is accepted for loopback addresses, where local test
    servers and emulators listen.
    """
    if not url.isprintable() or " " in url:
        return "Enter an https:// URL (no spaces or control characters)."
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises for a port that is not a number from 0 to 65535)
    except ValueError:  # "http://[::1" (an unclosed IPv6 bracket), "https://[zz]/", a bad port
        return "Enter an https:// URL: this one cannot be parsed."
    if parts.scheme not in {"https", "http"} or not host:
        return "Enter an https:// URL."
    if parts.username or parts.password or parts.query or parts.fragment:
        return "The URL must not contain credentials, a query or a fragment."
    if parts.scheme == "http" and not _is_loopback(host):
        return "Use https://; plain http is only accepted for a local test endpoint."
    return ""


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
