"""KMIP 1.2+: tenant keys wrapped by Encrypt/Decrypt on a KMIP server, over mutual TLS.

KMIP is the standard protocol of enterprise key managers (Thales CipherTrust,
Fortanix, Entrust KeyControl, IBM, HashiCorp Vault Enterprise, PyKMIP). The KEK
is a symmetric AES-256 object on the server, named by its Unique Identifier; it
never leaves the server: KeyCore sends the tenant key to ``Encrypt`` and the
result to ``Decrypt``.

Why AES-CBC with an encrypted check value instead of AES-GCM
------------------------------------------------------------
Authenticated encryption through KMIP is not portable: the PyKMIP server computes
a GCM tag but PyKMIP's client drops it from the Encrypt response (KMIP 1.2 has no
tag field there), and servers differ on GCM IV and tag handling. AES-CBC with
PKCS#5 padding works on every KMIP server. CBC alone is malleable, so KeyCore
encrypts the tenant key *together with* a check value and verifies it after
Decrypt::

    plaintext = key || SHA-256(DOMAIN || header || context.associated_data() || key)[:16]

* Changing the blob changes the decrypted key (and garbles a block) or the check
  value; producing a matching check value needs the tenant key itself, which is
  the secret under the KEK, so a forgery succeeds with probability 2**-128.
* The check value covers the tenant and key version (associated data), so a blob
  moved to another tenant or version fails exactly like a tampered one.
* The IV is 16 random bytes chosen by KeyCore per wrap, never by the server.
* Bad padding (reported by the server) and a wrong check value raise the same
  ``AuthenticationFailed`` with the same message, so unwrap is no padding oracle;
  wrapped tenant keys come from KeyCore's own database anyway.

Wrapped layout, 82 bytes for a 32-byte tenant key::

    offset  size  field
         0     1  kind        0x4B
         1     1  version     0x01
         2    16  iv          random
        18     n  ciphertext  AES-256-CBC-PKCS5(KEK, iv, plaintext above), n = 64

Connections: one persistent mutual-TLS connection per provider instance, used
under a lock (KMIP is one request at a time per connection), opened lazily and
reopened once at once when the server closed it (servers drop idle
connections). TLS is KeyCore's: TLS 1.2 or newer, the server certificate checked
against the configured CA bundle *and* the host name (PyKMIP's own client checks
neither the name nor the minimum version). The client key is loaded from an
anonymous in-memory file where the OS has one, so it is never written to disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kmip import enums
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure
from kmip.services.kmip_client import KMIPProxy
from kmip.services.kmip_protocol import KMIPProtocol, RequestLengthMismatch

from keycore import egress, errors
from keycore.providers.base import HealthResult, KeyProvider, SettingField, WrapContext
from keycore.providers.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry

T = TypeVar("T")

KMIP_WRAP_KIND = 0x4B
KMIP_WRAP_V1 = 1
HEADER = bytes((KMIP_WRAP_KIND, KMIP_WRAP_V1))
IV_BYTES = 16
CHECK_BYTES = 16
BLOCK_BYTES = 16
CHECK_DOMAIN = b"keycore/kmip-wrap/v1\x00"
DEFAULT_PORT = 5696
KEK_BITS = 256

CBC_PARAMETERS = {
    "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
    "block_cipher_mode": enums.BlockCipherMode.CBC,
    "padding_method": enums.PaddingMethod.PKCS5,
}

_HOST_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
# errors meaning the connection itself failed (not the request)
_CONNECTION_ERRORS = (OSError, EOFError, RequestLengthMismatch)
# TLS alerts a server sends when it does not accept the client certificate
_CLIENT_CERT_ALERTS = {
    "TLSV1_ALERT_UNKNOWN_CA": "it was not issued by a CA the server trusts",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server rejected it",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the server rejected it",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the server does not support it",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server says it has expired",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the server says it was revoked",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires one and got none",
    "TLSV1_ALERT_ACCESS_DENIED": "the server denied access to it",
    "TLSV1_ALERT_DECRYPT_ERROR": "the server could not verify it",
}
_PROTOCOL_ALERTS = {
    "SSLV3_ALERT_HANDSHAKE_FAILURE",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "UNSUPPORTED_PROTOCOL",
    "NO_PROTOCOLS_AVAILABLE",
    "NO_SHARED_CIPHER",
    "WRONG_VERSION_NUMBER",
    "TLSV1_ALERT_INSUFFICIENT_SECURITY",
}

# PyKMIP's client warns on every construction that it found no configuration file: all
# its settings come from KeyCore, so that warning is noise.
logging.getLogger("kmip.core.config_helper").setLevel(logging.ERROR)


class _TlsConnection(KMIPProxy):
    """PyKMIP's connection with KeyCore's socket and TLS: the egress policy, the name check, TLS 1.2+."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        server_name: str,
        timeout: float,
        policy: egress.EgressPolicy | None,
        **kwargs: Any,
    ) -> None:
        self._keycore_ssl_context = ssl_context
        self._keycore_server_name = server_name
        self._keycore_timeout = timeout
        self._keycore_policy = policy
        super().__init__(**kwargs)
        # PyKMIP also reads a host-wide pykmip.conf; its username/password must never reach a tenant's server.
        self.username = None
        self.password = None

    def open(self) -> None:
        """Connect to an address of one resolution the egress policy checked; TLS names the configured server."""
        raw = egress.connect(self.host, self.port, self._keycore_policy, timeout=self._keycore_timeout)
        try:
            self.socket = self._keycore_ssl_context.wrap_socket(raw, server_hostname=self._keycore_server_name)
        except BaseException:
            raw.close()
            raise
        self.socket.settimeout(self._keycore_timeout)
        self.protocol = KMIPProtocol(self.socket)


class KmipProvider(KeyProvider):
    """Wraps tenant keys with an AES-256 key on a KMIP server (mutual TLS)."""

    name = "kmip"
    label = "KMIP key manager"
    fields = (
        SettingField("host", "Host", help="Name or IP address of the KMIP server."),
        SettingField("port", "Port", kind="int", default=DEFAULT_PORT, help="Usually 5696."),
        SettingField(
            "key_uid",
            "Key unique identifier",
            help="The Unique Identifier of an active AES-256 symmetric key with the Encrypt and Decrypt usage.",
        ),
        SettingField(
            "server_name",
            "Name in the server certificate",
            required=False,
            help="Only when the server's certificate names it differently than Host.",
        ),
        SettingField(
            "client_certificate",
            "Client certificate (PEM)",
            kind="textarea",
            help="The certificate KeyCore presents; the server must authorise it for the key.",
        ),
        SettingField("client_key", "Client private key (PEM)", kind="textarea", secret=True),
        SettingField(
            "ca_bundle",
            "CA bundle (PEM)",
            kind="textarea",
            help="The CA certificate(s) that issued the server's certificate.",
        ),
    )

    retry_policy: RetryPolicy = DEFAULT_POLICY

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(settings, secrets, **kwargs)
        self.host = str(self.settings.get("host", "")).strip()
        self.port = int(self.settings.get("port") or DEFAULT_PORT)
        self.key_uid = str(self.settings.get("key_uid", "")).strip()
        self.server_name = str(self.settings.get("server_name") or self.host).strip()
        self._lock = threading.Lock()
        self._client: ProxyKmipClient | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._client_subject = _subject_of(str(self.settings.get("client_certificate", "")))

    # -- validation and help -----------------------------------------------------

    @classmethod
    def clean(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Checks host and port, that every PEM block parses, and that key and certificate match."""
        try:
            clean_settings, clean_secrets = super().clean(settings, secrets)
            problems: dict[str, list[str]] = {}
        except errors.InvalidInput as exc:
            problems = {name: list(messages) for name, messages in exc.field_errors.items()}
            clean_settings = {k: v.strip() if isinstance(v, str) else v for k, v in settings.items()}
            clean_secrets = {k: v.strip() for k, v in secrets.items() if isinstance(v, str)}

        def add(name: str, message: str) -> None:
            problems.setdefault(name, []).append(message)

        for name in ("host", "server_name"):
            value = str(clean_settings.get(name) or "")
            if value and not _is_host(value):
                add(name, "Enter a host name or IP address only (no scheme, port or path).")
        port = clean_settings.get("port")
        if isinstance(port, int) and not 1 <= port <= 65535:
            add("port", "The port must be between 1 and 65535.")
        key_uid = str(clean_settings.get("key_uid") or "")
        if key_uid and (len(key_uid) > 256 or not key_uid.isprintable()):
            add("key_uid", "A unique identifier is at most 256 printable characters.")

        certificates: list[x509.Certificate] = []
        if clean_settings.get("client_certificate"):
            try:
                certificates = _parse_certificates(clean_settings["client_certificate"])
            except ValueError as exc:
                add("client_certificate", str(exc))
            else:
                clean_settings["client_certificate"] = _pem_text(certificates)
                leaf = certificates[0]
                if leaf.not_valid_after_utc < dt.datetime.now(dt.UTC):
                    add("client_certificate", f"The certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}.")
                if not _allows_client_auth(leaf):
                    add("client_certificate", "The certificate's extended key usage does not allow TLS client auth.")
        if clean_secrets.get("client_key"):
            try:
                private_key = serialization.load_pem_private_key(clean_secrets["client_key"].encode(), password=None)
            except TypeError:
                add("client_key", "The private key is password-protected; paste it unencrypted.")
            except ValueError:
                add("client_key", "Paste a PEM private key (-----BEGIN PRIVATE KEY-----).")
            else:
                clean_secrets["client_key"] = private_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode()
                if certificates and not _same_public_key(certificates[0], private_key):
                    add("client_key", "This private key does not belong to the client certificate.")
        if clean_settings.get("ca_bundle"):
            try:
                clean_settings["ca_bundle"] = _pem_text(_parse_certificates(clean_settings["ca_bundle"]))
            except ValueError as exc:
                add("ca_bundle", str(exc))

        if problems:
            raise errors.InvalidInput("The KMIP configuration has errors.", field_errors=problems)
        return clean_settings, clean_secrets

    @classmethod
    def setup_help(cls, *, tenant_external_id: str = "", vendor_principal: str = "", tenant_uid: str = "") -> str:
        for_whom = f" for {tenant_external_id}" if tenant_external_id else ""
        return (
            f"KMIP setup{for_whom}\n\n"
            "1. On the KMIP server, create a symmetric key: algorithm AES, length 256 bits, cryptographic usage mask "
            "Encrypt and Decrypt, and activate it (state Active). Enter its Unique Identifier here.\n"
            "2. Issue KeyCore a client certificate (extended key usage TLS Web Client Authentication, a subject "
            "common name) from a CA the server trusts, and authorise that client for the key: make it the key's "
            "owner or allow it Get, Encrypt and Decrypt in the key's operation policy or access group.\n"
            "3. Paste the client certificate and its unencrypted private key, and the CA certificate(s) that "
            "issued the server's certificate. The server certificate must name the host (or the name you enter).\n"
            "4. Allow KeyCore's servers to reach the KMIP port (5696 by default) and the protocol: KMIP 1.2 or "
            "newer over TLS 1.2 or newer.\n\n"
            "KeyCore uses AES-CBC with PKCS#5 padding and its own random IVs (Encrypt and Decrypt operations). "
            "To revoke KeyCore's access, revoke, deactivate or destroy the key, or withdraw the client "
            "certificate's permission: KeyCore can no longer unwrap this tenant's keys once its in-memory copies "
            "expire."
        )

    @classmethod
    def egress(cls, settings: Mapping[str, Any]) -> list[str]:
        host = str(settings.get("host") or "").strip()
        return [host] if host else []

    def describe(self) -> str:
        return f"{self.host}:{self.port} key {self.key_uid}"

    # -- key operations ----------------------------------------------------------

    def wrap(self, key: bytes, context: WrapContext) -> bytes:
        if not isinstance(key, bytes | bytearray) or not key:
            raise errors.InvalidInput("Only non-empty bytes can be wrapped.")
        iv = os.urandom(IV_BYTES)
        plaintext = bytes(key) + _check_value(bytes(key), context)
        ciphertext = self._call(
            "Encrypt",
            lambda client: client.encrypt(
                plaintext, uid=self.key_uid, cryptographic_parameters=CBC_PARAMETERS, iv_counter_nonce=iv
            )[0],
            context,
        )
        return HEADER + iv + ciphertext

    def unwrap(self, wrapped: bytes, context: WrapContext) -> bytes:
        if len(wrapped) < len(HEADER) or wrapped[:1] != HEADER[:1]:
            raise errors.MalformedData("This is not a tenant key wrapped by a KMIP server.")
        if wrapped[1] != KMIP_WRAP_V1:
            raise errors.MalformedData(f"Unknown KMIP-wrapped tenant key version {wrapped[1]}.")
        body = wrapped[len(HEADER) :]
        if len(body) < IV_BYTES + 2 * BLOCK_BYTES or len(body) % BLOCK_BYTES:
            raise errors.MalformedData("The KMIP-wrapped tenant key is truncated.")
        iv, ciphertext = bytes(body[:IV_BYTES]), bytes(body[IV_BYTES:])
        plaintext = self._call(
            "Decrypt",
            lambda client: client.decrypt(
                ciphertext, uid=self.key_uid, cryptographic_parameters=CBC_PARAMETERS, iv_counter_nonce=iv
            ),
            context,
        )
        key, check = plaintext[:-CHECK_BYTES], plaintext[-CHECK_BYTES:]
        if not key or not hmac.compare_digest(check, _check_value(key, context)):
            raise errors.AuthenticationFailed(_not_authentic(context))
        return key

    def check(self, context: WrapContext) -> HealthResult:
        """Reads the key's attributes first (state, AES-256, usage) for a precise reason, then the probe."""
        started = time.perf_counter()
        try:
            self._call("Get Attributes", self._require_usable)
        except errors.KeyCoreError as exc:
            return HealthResult(False, exc.detail, (time.perf_counter() - started) * 1000, exc.code)
        result = super().check(context)
        return dataclasses.replace(result, latency_ms=(time.perf_counter() - started) * 1000)

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    # -- internals ---------------------------------------------------------------

    def _require_usable(self, client: ProxyKmipClient) -> None:
        names = [
            enums.AttributeType.OBJECT_TYPE.value,
            enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM.value,
            enums.AttributeType.CRYPTOGRAPHIC_LENGTH.value,
            enums.AttributeType.CRYPTOGRAPHIC_USAGE_MASK.value,
            enums.AttributeType.STATE.value,
        ]
        _, attributes = client.get_attributes(self.key_uid, names)
        found = {a.attribute_name.value: a.attribute_value.value for a in attributes}
        what = f"The object '{self.key_uid}' on {self.host}:{self.port}"
        object_type = found.get(enums.AttributeType.OBJECT_TYPE.value)
        if object_type is not None and object_type != enums.ObjectType.SYMMETRIC_KEY:
            raise errors.KmsMisconfigured(f"{what} is a {_enum_name(object_type)}; KeyCore needs a symmetric key.")
        state = found.get(enums.AttributeType.STATE.value)
        if state is not None and state != enums.State.ACTIVE:
            raise _state_error(state, what)
        algorithm = found.get(enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM.value)
        length = found.get(enums.AttributeType.CRYPTOGRAPHIC_LENGTH.value)
        if (algorithm is not None and algorithm != enums.CryptographicAlgorithm.AES) or (
            length is not None and length != KEK_BITS
        ):
            raise errors.KmsMisconfigured(f"{what} is {_enum_name(algorithm)}-{length}; KeyCore needs an AES-256 key.")
        mask = found.get(enums.AttributeType.CRYPTOGRAPHIC_USAGE_MASK.value)
        if mask is not None:
            needed = enums.CryptographicUsageMask.ENCRYPT.value | enums.CryptographicUsageMask.DECRYPT.value
            if int(mask) & needed != needed:
                raise errors.KmsMisconfigured(f"{what} lacks the Encrypt and Decrypt bits in its usage mask.")

    def _call(self, operation: str, request: Callable[[ProxyKmipClient], T], context: WrapContext | None = None) -> T:
        def attempt() -> T:
            # One request at a time per connection; waiting for it is bounded like the request itself.
            if not self._lock.acquire(timeout=self.timeout):
                raise errors.KmsTimeout(f"The connection to {self.describe()} stayed busy for {self.timeout:g}s.")
            try:
                return self._attempt(operation, request, context)
            finally:
                self._lock.release()

        return call_with_retry(attempt, policy=self.retry_policy, description=f"KMIP {operation} on {self.describe()}")

    def _attempt(self, operation: str, request: Callable[[ProxyKmipClient], T], context: WrapContext | None) -> T:
        reused = self._client is not None
        client = self._connect()
        try:
            return request(client)
        except KmipOperationFailure as exc:
            raise self._operation_error(exc, operation, context, client) from None
        except _CONNECTION_ERRORS as exc:
            self._disconnect()
            if not reused:
                raise self._connection_error(exc, operation) from None
        # The server closed a connection we had kept (restart, idle timeout): one fresh try now.
        client = self._connect()
        try:
            return request(client)
        except KmipOperationFailure as exc:
            raise self._operation_error(exc, operation, context, client) from None
        except _CONNECTION_ERRORS as exc:
            self._disconnect()
            raise self._connection_error(exc, operation) from None

    def _connect(self) -> ProxyKmipClient:
        if self._client is not None:
            return self._client
        if self._ssl_context is None:
            self._ssl_context = self._build_ssl_context()
        client = ProxyKmipClient(hostname=self.host, port=self.port)
        client.proxy = _TlsConnection(
            ssl_context=self._ssl_context,
            server_name=self.server_name,
            timeout=self.timeout,
            policy=self.egress,
            host=self.host,
            port=self.port,
        )
        try:
            client.open()
        except _CONNECTION_ERRORS as exc:
            raise self._connection_error(exc, "connect") from None
        self._client = client
        return client

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _build_ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_verify_locations(cadata=str(self.settings.get("ca_bundle", "")))
        except (ssl.SSLError, ValueError):
            raise errors.KmsMisconfigured("The CA bundle of this KMIP configuration cannot be loaded.") from None
        try:
            _load_client_identity(
                context, str(self.settings.get("client_certificate", "")), str(self.secrets.get("client_key", ""))
            )
        except (ssl.SSLError, ValueError, OSError):
            raise errors.KmsMisconfigured(
                "The client certificate and private key of this KMIP configuration cannot be loaded "
                "(or do not belong together)."
            ) from None
        return context

    def _connection_error(self, exc: BaseException, during: str) -> errors.KeyCoreError:
        where = f"the KMIP server {self.host}:{self.port}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or str(exc)
            if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
                return errors.KmsMisconfigured(
                    f"The server certificate of {where} does not name '{self.server_name}' ({reason}): fix the host "
                    "or enter the name the certificate carries."
                )
            if exc.verify_code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
                return errors.KmsMisconfigured(f"The server certificate of {where} has expired.")
            return errors.KmsMisconfigured(
                f"Server certificate not trusted: the certificate of {where} does not verify against the configured "
                f"CA bundle ({reason}). Paste the CA that issued the server's certificate."
            )
        if isinstance(exc, ssl.SSLError):
            alert = exc.reason or ""
            if alert in _CLIENT_CERT_ALERTS:
                return errors.KmsMisconfigured(
                    f"Client certificate not trusted by {where}: {_CLIENT_CERT_ALERTS[alert]} ({alert}). "
                    f"Have the server trust the CA of {self._client_subject} or use a certificate it accepts."
                )
            if alert in _PROTOCOL_ALERTS:
                return errors.KmsMisconfigured(
                    f"TLS with {where} failed ({alert}): the server must speak KMIP over TLS 1.2 or newer on this port."
                )
            return errors.KmsUnreachable(f"TLS with {where} failed during {during} ({alert or exc}).")
        if isinstance(exc, ConnectionRefusedError):
            return errors.KmsUnreachable(f"Connection refused by {where}: is it running, and is the port right?")
        if isinstance(exc, socket.gaierror):
            return errors.KmsUnreachable(f"The host name '{self.host}' does not resolve.")
        if isinstance(exc, TimeoutError):
            if during == "connect":
                return errors.KmsUnreachable(f"No connection to {where} within {self.timeout:g}s.")
            return errors.KmsTimeout(f"{where} did not answer {during} within {self.timeout:g}s.")
        if isinstance(exc, EOFError | RequestLengthMismatch | ConnectionResetError | BrokenPipeError):
            return errors.KmsUnreachable(f"{where} closed the connection during {during}.")
        return errors.KmsUnreachable(f"Could not talk to {where} during {during}: {exc.__class__.__name__}.")

    def _operation_error(
        self, exc: KmipOperationFailure, operation: str, context: WrapContext | None, client: ProxyKmipClient
    ) -> errors.KeyCoreError:
        reason = exc.reason
        message = _sentence(exc.message)
        what = f"key '{self.key_uid}' on {self.host}:{self.port}"
        if reason == enums.ResultReason.ITEM_NOT_FOUND:
            return errors.KmsKeyNotFound(
                f"No {what}: it does not exist or was destroyed. Check the key unique identifier."
            )
        if reason == enums.ResultReason.PERMISSION_DENIED:
            return self._explain_denied(client, operation, message, what)
        if reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL:
            return errors.KmsAccessDenied(
                f"The KMIP server did not accept {self._client_subject} as a client: {message} The certificate "
                "needs the TLS Web Client Authentication extended key usage and a subject common name."
            )
        if operation == "Decrypt" and reason in {
            enums.ResultReason.CRYPTOGRAPHIC_FAILURE,
            enums.ResultReason.GENERAL_FAILURE,
            enums.ResultReason.INVALID_FIELD,
        }:
            # Bad padding after CBC decryption: same answer as a failed check value.
            return errors.AuthenticationFailed(_not_authentic(context))
        if reason in {
            enums.ResultReason.OPERATION_NOT_SUPPORTED,
            enums.ResultReason.FEATURE_NOT_SUPPORTED,
            enums.ResultReason.INVALID_FIELD,
            enums.ResultReason.CRYPTOGRAPHIC_FAILURE,
            enums.ResultReason.KEY_VALUE_NOT_PRESENT,
            enums.ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
        }:
            return errors.KmsMisconfigured(
                f"The KMIP server cannot {operation} with {what} ({_enum_name(reason)}): {message} KeyCore needs "
                "an AES-256 key and AES-CBC with PKCS#5 padding (KMIP 1.2 Encrypt/Decrypt)."
            )
        return errors.ProviderError(f"The KMIP server failed {operation} with {what} ({_enum_name(reason)}): {message}")

    def _explain_denied(self, client: ProxyKmipClient, operation: str, message: str, what: str) -> errors.KeyCoreError:
        """Permission denied can mean a revoked key or a client without rights: ask the key's state."""
        denied = errors.KmsAccessDenied(
            f"Access denied for {operation} on {what} to {self._client_subject}: {message} Make sure the key exists "
            "and this client certificate is authorised for it (owner, operation policy or group)."
        )
        try:
            _, attributes = client.get_attributes(self.key_uid, [enums.AttributeType.STATE.value])
        except KmipOperationFailure as exc:
            if exc.reason == enums.ResultReason.ITEM_NOT_FOUND:
                return errors.KmsKeyNotFound(f"No {what}: it does not exist or was destroyed.")
            return denied
        except _CONNECTION_ERRORS:
            self._disconnect()
            return denied
        for attribute in attributes:
            state = attribute.attribute_value.value
            if state != enums.State.ACTIVE:
                return _state_error(state, f"The {what}")
        return errors.KmsAccessDenied(f"The KMIP server denied {operation} on {what}: {message}")


def _state_error(state: Any, what: str) -> errors.KeyCoreError:
    if state == enums.State.PRE_ACTIVE:
        return errors.KmsKeyDisabled(f"{what} is not activated yet (Pre-Active); activate it on the KMIP server.")
    if state in {enums.State.DESTROYED, enums.State.DESTROYED_COMPROMISED}:
        return errors.KmsKeyNotFound(f"{what} was destroyed on the KMIP server.")
    if state == enums.State.COMPROMISED:
        return errors.KmsKeyDisabled(f"{what} was revoked as compromised on the KMIP server.")
    return errors.KmsKeyDisabled(f"{what} is {_enum_name(state)} (revoked) on the KMIP server; KeyCore may not use it.")


def _check_value(key: bytes, context: WrapContext) -> bytes:
    return hashlib.sha256(CHECK_DOMAIN + HEADER + context.associated_data() + key).digest()[:CHECK_BYTES]


def _not_authentic(context: WrapContext | None) -> str:
    if context is None:
        return "The KMIP-wrapped tenant key does not authenticate: it was altered or belongs to another key."
    return (
        f"The KMIP-wrapped tenant key does not authenticate for tenant {context.tenant_uid} version "
        f"{context.key_version}: it was altered, or belongs to another tenant, version or key."
    )


def _enum_name(value: Any) -> str:
    """KMIP's own spelling of an enumeration value: ``PRE_ACTIVE`` → ``Pre-Active``, ``AES`` stays."""
    name = getattr(value, "name", None)
    if name is None:
        return str(value)
    if len(name) <= 4:
        return name
    return "-".join(part.capitalize() for part in name.split("_"))


def _sentence(text: str) -> str:
    text = (text or "").strip()
    return text if not text or text.endswith((".", "!", "?")) else text + "."


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(_HOST_RE.match(value))
    return True


def _parse_certificates(pem: str) -> list[x509.Certificate]:
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("Paste one or more PEM certificates (-----BEGIN CERTIFICATE-----).")
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise ValueError("A PEM certificate block does not parse.") from None


def _pem_text(certificates: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def _allows_client_auth(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usage or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usage


def _same_public_key(certificate: x509.Certificate, private_key: Any) -> bool:
    def der(public_key: Any) -> bytes:
        return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    return der(certificate.public_key()) == der(private_key.public_key())


def _subject_of(pem: str) -> str:
    try:
        certificate = x509.load_pem_x509_certificates(pem.encode())[0]
    except (ValueError, IndexError):
        return "the client certificate"
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"the client certificate CN={names[0].value}" if names else "the client certificate"


def _load_client_identity(context: ssl.SSLContext, certificate_pem: str, key_pem: str) -> None:
    """``load_cert_chain`` only reads files: hand it an anonymous in-memory file, or a private temp file."""
    data = (certificate_pem.strip() + "\n" + key_pem.strip() + "\n").encode()
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("keycore-kmip-identity", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="keycore-kmip-") as directory:
        path = os.path.join(directory, "identity.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        context.load_cert_chain(path)
