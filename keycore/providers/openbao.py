"""OpenBao / HashiCorp Vault Transit: tenant keys wrapped by Transit ``encrypt``/``decrypt``.

The KEK is a named key of a Transit secrets engine; it never leaves OpenBao (or
Vault, which speaks the same API): :meth:`OpenBaoTransitProvider.wrap` sends the
tenant key to ``<mount>/encrypt/<key>`` and keeps the ciphertext,
:meth:`OpenBaoTransitProvider.unwrap` sends it back to ``<mount>/decrypt/<key>``.

Binding the tenant
------------------
* **Associated data, always.** Transit's AEAD key types (``aes256-gcm96``,
  ``chacha20-poly1305``, ``xchacha20-poly1305``) take ``associated_data``;
  KeyCore passes ``header ‖ WrapContext.associated_data()`` (tenant uid and
  tenant-key version), so a blob moved to another tenant or version fails to
  decrypt like a tampered one. Key types without it (RSA, signing keys,
  ``aes128-gcm96`` for its size) are refused as misconfigured.
* **A derivation context, when the key is derived** (``derived=true``, what the
  setup help creates): Transit then derives a separate key per context with
  HKDF, and KeyCore's context is the tenant alone (``keycore:tenant:<uid>``),
  so every tenant has its own derived key even when tenants share one Transit
  key, and the tenant's policy can pin the context to its own value
  (``allowed_parameters``), as an AWS key policy pins the encryption context.
  Transit ignores a context for keys without derivation, so none is sent then.

Wrapped layout, 3 bytes + the Transit ciphertext::

    offset  size  field
         0     1  kind        0xBA
         1     1  version     0x01
         2     1  binding     0x01 associated data; 0x02 derived context and associated data
         3     n  ciphertext  "vault:v<key version>:<base64>" as Transit returned it (ASCII)

Key versions: Transit rotation adds a version; new wraps use the newest one and
older wraps keep decrypting until the key's ``min_decryption_version`` passes
them, which unwrap then reports as a disabled key naming both versions. The
ciphertext names its version (:func:`transit_key_version`).

Before each wrap KeyCore reads the key (type, derivation, soft deletion):
Transit's ``encrypt`` silently *creates* a missing key when the token may
``create`` on that path, so without the read a mistyped or deleted key would be
replaced by a fresh one.

Authentication: a token (renewed with ``renew-self`` while it is renewable), or
an AppRole (role ID and secret ID; KeyCore logs in again before its token
expires, and once when a request is denied, since a tenant or OpenBao may have
revoked the token). HTTP: one ``requests`` session per provider instance, shared
by threads, through :class:`TransitTransport`, which owns KeyCore's TLS context
(the configured CA bundle only, else the public CAs; TLS 1.2+), never follows
redirects and ignores the process environment (proxies, ``REQUESTS_CA_BUNDLE``,
``VAULT_TOKEN``, netrc): a tenant's configuration reaches exactly the address
that the egress policy checked.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import certifi
import hvac
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hvac import exceptions as vault
from requests.adapters import HTTPAdapter

from keycore import errors
from keycore.egress import EgressPolicy, pinned_pool_classes
from keycore.providers.aws import endpoint_problem
from keycore.providers.base import HealthResult, KeyProvider, SettingField, WrapContext
from keycore.providers.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry

log = logging.getLogger("keycore.providers")

TRANSIT_WRAP_KIND = 0xBA
TRANSIT_WRAP_V1 = 1
BINDING_AAD = 0x01
BINDING_DERIVED = 0x02
HEADER_BYTES = 3
DEFAULT_MOUNT = "transit"
DEFAULT_APPROLE_MOUNT = "approle"
TENANT_CONTEXT_PREFIX = "keycore:tenant:"

#: Transit key types with associated data and a 256-bit key
AEAD_KEY_TYPES = ("aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305")
#: connections kept per provider (one per concurrent request, up to this)
POOL_SIZE = 32
#: how often a token's remaining lifetime is looked up (and renewed when due)
TOKEN_CHECK_INTERVAL = 300.0
#: a renewable token is renewed when less than this share of its lifetime is left
RENEW_BELOW_FRACTION = 0.5
#: check() warns about a token that cannot be renewed and expires within this
TOKEN_EXPIRY_WARNING = 7 * 24 * 3600

_PATH_RE = re.compile(r"^[\w.-]+(?:/[\w.-]+)*$", re.ASCII)
_KEY_NAME_RE = re.compile(r"^\w(?:[\w.-]*\w)?$", re.ASCII)  # Transit's own pattern for key names
_CIPHERTEXT_RE = re.compile(rb"^vault:v(\d{1,10}):[A-Za-z0-9+/]+={0,2}$")
_REDIRECTS = range(300, 400)


def tenant_context(tenant_uid: str) -> bytes:
    """The derivation context of a tenant: the same for all its key versions, so a policy can pin it."""
    return (TENANT_CONTEXT_PREFIX + tenant_uid).encode()


def transit_key_version(wrapped: bytes) -> int | None:
    """The Transit key version a wrapped tenant key was made under, or None when it is no Transit wrap."""
    match = _CIPHERTEXT_RE.match(bytes(wrapped[HEADER_BYTES:])) if len(wrapped) > HEADER_BYTES else None
    return int(match[1]) if match and wrapped[0] == TRANSIT_WRAP_KIND else None


def transit_policy(*, mount: str, key_name: str, tenant_uid: str) -> str:
    """The policy (HCL) that lets KeyCore use ``key_name`` for one tenant and nothing else.

    ``allowed_parameters`` pins the derivation context to the tenant's: with a
    derived key, a token holding this policy cannot decrypt another tenant's wraps
    even under the same key. (A listed parameter with ``[]`` may take any value;
    parameters not listed are refused.)
    """
    context = base64.b64encode(tenant_context(tenant_uid)).decode()
    return (
        f'path "{mount}/encrypt/{key_name}" {{\n'
        '  capabilities = ["update"]\n'
        "  allowed_parameters = {\n"
        '    "plaintext" = []\n'
        '    "associated_data" = []\n'
        f'    "context" = ["{context}"]\n'
        "  }\n"
        "}\n\n"
        f'path "{mount}/decrypt/{key_name}" {{\n'
        '  capabilities = ["update"]\n'
        "  allowed_parameters = {\n"
        '    "ciphertext" = []\n'
        '    "associated_data" = []\n'
        f'    "context" = ["{context}"]\n'
        "  }\n"
        "}\n\n"
        f'path "{mount}/keys/{key_name}" {{\n'
        '  capabilities = ["read"]\n'
        "}\n"
    )


@dataclasses.dataclass(frozen=True)
class TransitKey:
    """What ``GET <mount>/keys/<name>`` says about the KEK."""

    key_type: str
    derived: bool
    latest_version: int
    min_decryption_version: int
    exportable: bool
    allow_plaintext_backup: bool


class TransitTransport(HTTPAdapter):
    """The provider's HTTP transport: the one place that decides how a connection to OpenBao is made.

    It puts KeyCore's TLS context on every https pool (the CA bundle of the
    configuration or the public CAs, TLS 1.2+, host name checked), whatever
    requests would otherwise take from ``verify`` or the environment. Pinning a
    connection to an address checked against the egress policy while keeping the
    name for SNI and the Host header belongs here as well:
    :meth:`build_connection_pool_key_attributes` chooses the host a pool connects
    to and its TLS parameters. With an egress policy (a tenant's configuration), every
    connection is opened by :func:`keycore.egress.connect`: the name resolved once,
    each address checked, the connection made to that address with the name kept
    for SNI, the certificate check and the Host header.
    """

    def __init__(self, ssl_context: ssl.SSLContext, policy: EgressPolicy | None = None) -> None:
        self.ssl_context = ssl_context
        self.policy = policy
        super().__init__(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        if self.policy is not None:
            self.poolmanager.pool_classes_by_scheme = pinned_pool_classes(self.policy)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        raise errors.EgressDenied("Connections to OpenBao never go through an HTTP proxy.")

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs = {"ssl_context": self.ssl_context, "cert_reqs": "CERT_REQUIRED"}
        return host_params, pool_kwargs


class OpenBaoTransitProvider(KeyProvider):
    """Wraps tenant keys with a key of an OpenBao or HashiCorp Vault Transit secrets engine."""

    name = "openbao"
    label = "OpenBao / Vault Transit"
    fields = (
        SettingField(
            "address",
            "Address",
            help="https://bao.example.com:8200 — the address of OpenBao or Vault (its active node or a load balancer).",
        ),
        SettingField(
            "mount", "Transit mount path", default=DEFAULT_MOUNT, help="Where Transit is enabled; usually transit."
        ),
        SettingField(
            "key_name", "Key name", help="The Transit key: aes256-gcm96 or chacha20-poly1305, ideally derived."
        ),
        SettingField(
            "namespace",
            "Namespace",
            required=False,
            help="Only if the key lives in a namespace (OpenBao namespaces, Vault Enterprise), e.g. tenants/acme.",
        ),
        SettingField(
            "auth_method",
            "Authentication",
            kind="choice",
            choices=(("token", "Token"), ("approle", "AppRole")),
            default="token",
        ),
        SettingField(
            "approle_mount",
            "AppRole mount path",
            required=False,
            default=DEFAULT_APPROLE_MOUNT,
            help="Only for AppRole: where the AppRole auth method is enabled; usually approle.",
        ),
        SettingField(
            "ca_bundle",
            "CA bundle (PEM)",
            required=False,
            kind="textarea",
            help="The CA certificate(s) that issued the server's certificate. Empty: the public CAs.",
        ),
        SettingField("token", "Token", required=False, secret=True, help="For token authentication."),
        SettingField("role_id", "AppRole role ID", required=False, secret=True),
        SettingField("secret_id", "AppRole secret ID", required=False, secret=True),
    )

    #: how one request is retried; tests and jobs may swap it per instance
    retry_policy: RetryPolicy = DEFAULT_POLICY

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(settings, secrets, **kwargs)
        self.address = str(self.settings.get("address", "")).strip().rstrip("/")
        self.mount = str(self.settings.get("mount") or DEFAULT_MOUNT).strip("/ ")
        self.key_name = str(self.settings.get("key_name", "")).strip()
        self.namespace = str(self.settings.get("namespace") or "").strip("/ ")
        self.auth_method = str(self.settings.get("auth_method") or "token")
        self.approle_mount = str(self.settings.get("approle_mount") or DEFAULT_APPROLE_MOUNT).strip("/ ")
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        #: AppRole: monotonic time after which to log in again (None: the token does not expire)
        self._relogin_at: float | None = 0.0
        self._next_token_check = 0.0

    # -- validation and help -----------------------------------------------------

    @classmethod
    def clean(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Checks the address, paths and names, the CA bundle, and that the credentials fit the method."""
        try:
            clean_settings, clean_secrets = super().clean(settings, secrets)
            problems: dict[str, list[str]] = {}
        except errors.InvalidInput as exc:
            problems = {name: list(messages) for name, messages in exc.field_errors.items()}
            clean_settings = {k: v.strip() if isinstance(v, str) else v for k, v in settings.items()}
            clean_secrets = {k: v.strip() for k, v in secrets.items() if isinstance(v, str)}

        def add(name: str, message: str) -> None:
            problems.setdefault(name, []).append(message)

        address = str(clean_settings.get("address") or "").rstrip("/")
        if address and "address" not in problems:
            message = endpoint_problem(address)
            if message:
                add("address", message)
            else:
                clean_settings["address"] = address
        for name in ("mount", "namespace", "approle_mount"):
            value = str(clean_settings.get(name) or "").strip("/")
            if not value:
                continue
            if not _PATH_RE.match(value) or ".." in value.split("/"):
                add(name, "Letters, digits and . _ - in path segments separated by /.")
            else:
                clean_settings[name] = value
        key_name = str(clean_settings.get("key_name") or "")
        if key_name and (len(key_name) > 128 or not _KEY_NAME_RE.match(key_name)):
            add(
                "key_name",
                "A Transit key name is letters, digits and . _ -, starting and ending with a letter or digit.",
            )
        if clean_settings.get("ca_bundle"):
            try:
                certificates = x509.load_pem_x509_certificates(str(clean_settings["ca_bundle"]).encode())
            except ValueError:
                add("ca_bundle", "Paste one or more PEM certificates (-----BEGIN CERTIFICATE-----).")
            else:
                clean_settings["ca_bundle"] = "".join(
                    c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates
                )

        for name, value in clean_secrets.items():
            if len(value) > 4096 or not value.isprintable() or any(c.isspace() for c in value):
                add(name, "Paste the value alone: printable characters, no spaces or line breaks.")
        method = clean_settings.get("auth_method", "token")
        if method == "token":
            if not clean_secrets.get("token") and "token" not in problems:
                add("token", "A token is required for token authentication.")
            for name in ("role_id", "secret_id"):
                if clean_secrets.get(name):
                    add(name, "Only used with AppRole authentication.")
            clean_settings.pop("approle_mount", None)
        elif method == "approle":
            for name in ("role_id", "secret_id"):
                if not clean_secrets.get(name) and name not in problems:
                    add(name, "The role ID and the secret ID are required for AppRole authentication.")
            if clean_secrets.get("token"):
                add("token", "Only used with token authentication.")

        if problems:
            raise errors.InvalidInput("The OpenBao / Vault Transit configuration has errors.", field_errors=problems)
        return clean_settings, clean_secrets

    @classmethod
    def setup_help(
        cls,
        *,
        tenant_external_id: str = "",
        vendor_principal: str = "",
        tenant_uid: str = "",
        mount: str = DEFAULT_MOUNT,
        key_name: str = "",
    ) -> str:
        """Commands to create the key, the exact policy to grant (tenant context pinned), and the credentials."""
        key = key_name or _suggested_key_name(tenant_external_id)
        name = key if _KEY_NAME_RE.match(key) else "keycore"
        policy = transit_policy(mount=mount, key_name=key, tenant_uid=tenant_uid or "<this tenant's KeyCore uid>")
        for_whom = f" for {tenant_external_id}" if tenant_external_id else ""
        return (
            f"OpenBao / Vault Transit setup{for_whom}\n\n"
            "The commands are OpenBao's bao; with HashiCorp Vault type vault instead. Add -namespace=<namespace> "
            "to each if the key lives in a namespace, and enter that namespace here.\n\n"
            "1. Enable Transit (once) and create a 256-bit key with key derivation, so that this tenant gets a key "
            "derived for it alone:\n\n"
            f"   bao secrets enable -path={mount} transit\n"
            f"   bao write -f {mount}/keys/{key} type=aes256-gcm96 derived=true\n\n"
            "   chacha20-poly1305 works too. A key without derivation also works (KeyCore then binds this tenant "
            "only through associated data), but then the policy below cannot keep KeyCore to this tenant. "
            "Leave exportable and allow_plaintext_backup off.\n\n"
            f"2. Save this policy as {name}.hcl and write it. It lets KeyCore encrypt and decrypt with this key "
            "for this tenant only (the context is pinned to this tenant), and read the key's settings:\n\n"
            f"{policy}\n"
            f"   bao policy write {name} {name}.hcl\n\n"
            "3. Give KeyCore a credential with that policy and no other, either a periodic token (KeyCore renews "
            "it):\n\n"
            f"   bao token create -orphan -policy={name} -period=24h\n\n"
            "   or an AppRole (enter its role ID and a secret ID):\n\n"
            "   bao auth enable approle\n"
            f"   bao write auth/approle/role/{name} token_policies={name} token_ttl=1h token_max_ttl=4h\n"
            f"   bao read -field=role_id auth/approle/role/{name}/role-id\n"
            f"   bao write -f -field=secret_id auth/approle/role/{name}/secret-id\n\n"
            "4. Enter the address KeyCore's servers reach OpenBao at, and the CA certificate(s) that issued the "
            "server's certificate unless a public CA did. KeyCore does not follow redirects: give the active "
            "node or a load balancer.\n\n"
            f"Rotation: bao write -f {mount}/keys/{key}/rotate. New wraps use the newest version and older ones "
            "keep decrypting. Before you raise min_decryption_version, move KeyCore's wraps to the newest version: "
            "add this key again as a second configuration and make it primary (its rekey job rewraps every "
            "tenant key).\n\n"
            "To revoke KeyCore's access, revoke its token, remove the policy, or delete or soft-delete the key; "
            "with AppRole, destroy its secret ID and revoke the tokens it was issued (revoking one token only "
            "makes KeyCore log in again). KeyCore can no longer unwrap this tenant's keys once its in-memory "
            "copies expire."
        )

    @classmethod
    def egress(cls, settings: Mapping[str, Any]) -> list[str]:
        address = str(settings.get("address") or "").strip()
        host = urlsplit(address).hostname if address else None
        return [host] if host else []

    def describe(self) -> str:
        where = f"{self.address} {self.mount}/keys/{self.key_name}"
        return f"{where} (namespace {self.namespace})" if self.namespace else where

    # -- key operations ----------------------------------------------------------

    def wrap(self, key: bytes, context: WrapContext) -> bytes:
        if not isinstance(key, bytes | bytearray) or not key:
            raise errors.InvalidInput("Only non-empty bytes can be wrapped.")
        info = self._read_key()
        header = bytes((TRANSIT_WRAP_KIND, TRANSIT_WRAP_V1, BINDING_DERIVED if info.derived else BINDING_AAD))
        request: dict[str, Any] = {
            "plaintext": _b64(bytes(key)),
            "associated_data": _b64(header + context.associated_data()),
        }
        if info.derived:
            request["context"] = _b64(tenant_context(context.tenant_uid))
        answer = self._call(
            "encrypt",
            f"{self.mount}/encrypt/{self.key_name}",
            lambda client: client.secrets.transit.encrypt_data(self.key_name, mount_point=self.mount, **request),
            context,
        )
        ciphertext = str(answer.get("data", {}).get("ciphertext", "")).encode("ascii", "replace")
        if not _CIPHERTEXT_RE.match(ciphertext):
            raise errors.KmsMisconfigured(f"{self.address} answered encrypt without a Transit ciphertext.")
        return header + ciphertext

    def unwrap(self, wrapped: bytes, context: WrapContext) -> bytes:
        wrapped = bytes(wrapped)
        if len(wrapped) <= HEADER_BYTES or wrapped[0] != TRANSIT_WRAP_KIND:
            raise errors.MalformedData("This is not a tenant key wrapped by OpenBao / Vault Transit.")
        if wrapped[1] != TRANSIT_WRAP_V1:
            raise errors.MalformedData(f"Unknown Transit-wrapped tenant key version {wrapped[1]}.")
        if wrapped[2] not in (BINDING_AAD, BINDING_DERIVED):
            raise errors.MalformedData(f"Unknown tenant binding {wrapped[2]} in a Transit-wrapped tenant key.")
        ciphertext = wrapped[HEADER_BYTES:]
        if not _CIPHERTEXT_RE.match(ciphertext):
            raise errors.MalformedData("The Transit ciphertext of this wrapped tenant key is truncated or garbled.")
        request: dict[str, Any] = {
            "ciphertext": ciphertext.decode("ascii"),
            "associated_data": _b64(wrapped[:HEADER_BYTES] + context.associated_data()),
        }
        if wrapped[2] == BINDING_DERIVED:
            request["context"] = _b64(tenant_context(context.tenant_uid))
        answer = self._call(
            "decrypt",
            f"{self.mount}/decrypt/{self.key_name}",
            lambda client: client.secrets.transit.decrypt_data(self.key_name, mount_point=self.mount, **request),
            context,
            version=transit_key_version(wrapped),
        )
        try:
            return base64.b64decode(answer["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise errors.KmsMisconfigured(f"{self.address} answered decrypt without a plaintext.") from None

    def check(self, context: WrapContext) -> HealthResult:
        """The key's type, derivation and state first, for a precise reason; then the probe; then warnings."""
        started = time.perf_counter()
        try:
            info = self._read_key()
        except errors.KeyCoreError as exc:
            return HealthResult(False, exc.detail, (time.perf_counter() - started) * 1000, exc.code)
        result = super().check(context)
        elapsed = (time.perf_counter() - started) * 1000
        if not result.ok:
            return dataclasses.replace(result, latency_ms=elapsed)
        binding = (
            "tenant bound as derivation context and associated data"
            if info.derived
            else ("tenant bound as associated data; the key is not derived")
        )
        extra: dict[str, Any] = {
            "key_type": info.key_type,
            "derived": info.derived,
            "latest_version": info.latest_version,
            "min_decryption_version": info.min_decryption_version,
        }
        warnings = self._warnings(info)
        if warnings:
            extra["warnings"] = warnings
        detail = (
            f"Wrap and unwrap succeeded ({self.describe()}, {info.key_type} version {info.latest_version}, {binding})."
        )
        return HealthResult(True, detail, elapsed, extra=extra)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.adapter.close()

    # -- the key -----------------------------------------------------------------

    def _read_key(self) -> TransitKey:
        answer = self._call(
            "read",
            f"{self.mount}/keys/{self.key_name}",
            lambda client: client.secrets.transit.read_key(self.key_name, mount_point=self.mount),
        )
        data = answer.get("data") or {}
        what = f"The Transit key '{self.key_name}' ({self.describe()})"
        if data.get("soft_deleted"):
            raise errors.KmsKeyDisabled(
                f"{what} is soft-deleted; restore it ({self.mount}/keys/{self.key_name}/soft-delete-restore) to use it."
            )
        key_type = str(data.get("type", ""))
        if key_type not in AEAD_KEY_TYPES:
            raise errors.KmsMisconfigured(
                f"{what} is of type {key_type or 'unknown'}; KeyCore needs a 256-bit key with associated data: "
                f"{', '.join(AEAD_KEY_TYPES)}."
            )
        if data.get("supports_encryption") is False or data.get("supports_decryption") is False:
            raise errors.KmsMisconfigured(f"{what} does not support both encryption and decryption.")
        return TransitKey(
            key_type=key_type,
            derived=bool(data.get("derived")),
            latest_version=int(data.get("latest_version") or 0),
            min_decryption_version=int(data.get("min_decryption_version") or 0),
            exportable=bool(data.get("exportable")),
            allow_plaintext_backup=bool(data.get("allow_plaintext_backup")),
        )

    def _warnings(self, info: TransitKey) -> list[str]:
        """What works but weakens the tenant's control; best effort (the token may not look itself up)."""
        what = f"The Transit key '{self.key_name}'"
        warnings = []
        if info.exportable:
            warnings.append(f"{what} is exportable: its versions can be read out of OpenBao.")
        if info.allow_plaintext_backup:
            warnings.append(f"{what} allows plaintext backups: a backup would contain it unencrypted.")
        if not info.derived:
            warnings.append(
                f"{what} is not derived: a policy cannot keep KeyCore's token to this tenant (see the setup help)."
            )
        encrypt_path = f"{self.mount}/encrypt/{self.key_name}"
        try:
            client = self._connected()
            capabilities = _capabilities(client, encrypt_path)
            token = client.auth.token.lookup_self()["data"]
        except (errors.KeyCoreError, vault.VaultError, requests.RequestException, KeyError, TypeError):
            return warnings
        if {"create", "sudo", "root"} & set(capabilities):
            warnings.append(
                f"KeyCore's token may create keys at {encrypt_path}: grant update only, so that a deleted key "
                "cannot come back as a new one."
            )
        ttl = int(token.get("ttl") or 0)
        if ttl and not token.get("renewable") and ttl < TOKEN_EXPIRY_WARNING:
            warnings.append(f"KeyCore's token expires in {ttl // 3600} hours and cannot be renewed.")
        return warnings

    # -- requests ----------------------------------------------------------------

    def _call(
        self,
        operation: str,
        path: str,
        request: Callable[[hvac.Client], Any],
        context: WrapContext | None = None,
        *,
        version: int | None = None,
    ) -> dict[str, Any]:
        """One Transit request with retries; denied AppRole requests log in again once."""

        def send(client: hvac.Client) -> dict[str, Any]:
            try:
                return self._answer(request(client), operation)
            except vault.Forbidden:
                raise
            except vault.VaultError as exc:
                raise self._vault_error(exc, operation, context, version) from None
            except requests.RequestException as exc:
                raise self._connection_error(exc, operation) from None

        def attempt() -> dict[str, Any]:
            client = self._connected()
            try:
                return send(client)
            except vault.Forbidden:
                if self.auth_method != "approle":
                    raise self._denied(client, operation, path) from None
            with self._lock:  # the token may have expired or been revoked: log in again, once
                self._relogin_at = 0.0
            client = self._connected()
            try:
                return send(client)
            except vault.Forbidden:
                raise self._denied(client, operation, path) from None

        return call_with_retry(
            attempt, policy=self.retry_policy, description=f"Transit {operation} on {self.describe()}"
        )

    def _answer(self, answer: Any, operation: str) -> dict[str, Any]:
        if isinstance(answer, dict):
            return answer
        status = getattr(answer, "status_code", 0)
        if status in _REDIRECTS:
            raise errors.KmsMisconfigured(
                f"{self.address} redirected {operation} to {answer.headers.get('Location', 'another address')}: "
                "KeyCore does not follow redirects. Enter the address of the active node or of a load balancer."
            )
        if status == 204:
            return {}
        raise errors.ProviderError(f"{self.address} answered {operation} with HTTP {status}.")

    def _connected(self) -> hvac.Client:
        """The client, logged in (AppRole) or with its token renewed when due."""
        with self._lock:
            if self._client is None:
                self._client = self._build_client()
            now = time.monotonic()
            if self.auth_method == "approle":
                if self._relogin_at is not None and now >= self._relogin_at:
                    self._login(self._client, now)
            elif now >= self._next_token_check:
                self._next_token_check = now + TOKEN_CHECK_INTERVAL
                self._renew_if_due(self._client)
            return self._client

    def _build_client(self) -> hvac.Client:
        session = requests.Session()
        session.trust_env = False  # no proxy, CA bundle or netrc credentials from the environment
        transport = TransitTransport(self._ssl_context(), self.egress)
        session.mount("https://", transport)
        session.mount("http://", transport)
        return hvac.Client(
            url=self.address,
            token=self.secrets.get("token", "") if self.auth_method == "token" else "",  # never VAULT_TOKEN
            cert=False,  # never VAULT_CLIENT_CERT
            verify=True,  # the transport's TLS context, never VAULT_CACERT
            timeout=self.timeout,
            proxies={},
            allow_redirects=False,
            session=session,
            namespace=self.namespace or None,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        ca_bundle = str(self.settings.get("ca_bundle") or "")
        try:
            context = (
                ssl.create_default_context(cadata=ca_bundle)
                if ca_bundle
                else ssl.create_default_context(cafile=certifi.where())
            )
        except (ssl.SSLError, ValueError):
            raise errors.KmsMisconfigured("The CA bundle of this OpenBao configuration cannot be loaded.") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _login(self, client: hvac.Client, now: float) -> None:
        where = f"auth/{self.approle_mount}"
        try:
            answer = client.auth.approle.login(
                self.secrets.get("role_id", ""), self.secrets.get("secret_id", ""), mount_point=self.approle_mount
            )
        except (vault.InvalidRequest, vault.Forbidden, vault.Unauthorized) as exc:
            raise errors.KmsAccessDenied(
                f"OpenBao at {self.address} refused KeyCore's AppRole login at {where} ({_vault_message(exc)}): "
                "check the role ID and the secret ID; the secret ID may have expired, been used up or destroyed."
            ) from None
        except vault.InvalidPath:
            raise errors.KmsMisconfigured(
                f"No AppRole auth method is enabled at {where} on {self.address}: check the AppRole mount path"
                + (f" and the namespace {self.namespace}." if self.namespace else ".")
            ) from None
        except vault.VaultError as exc:
            raise self._vault_error(exc, "AppRole login", None, None) from None
        except requests.RequestException as exc:
            raise self._connection_error(exc, "AppRole login") from None
        lease = int((answer.get("auth") or {}).get("lease_duration") or 0)
        self._relogin_at = now + lease * 2 / 3 if lease else None

    def _renew_if_due(self, client: hvac.Client) -> None:
        """Renew a renewable token past half its lifetime; a token that cannot look itself up is left alone."""
        try:
            token = client.auth.token.lookup_self()["data"]
            ttl, full = int(token.get("ttl") or 0), int(token.get("creation_ttl") or 0)
            if token.get("renewable") and ttl and ttl <= full * RENEW_BELOW_FRACTION:
                client.auth.token.renew_self()
                log.info("renewed the OpenBao token of %s", self.describe())
        except (vault.VaultError, requests.RequestException, KeyError, TypeError, ValueError) as exc:
            log.debug("token lookup for %s failed: %s", self.describe(), type(exc).__name__)

    # -- errors ------------------------------------------------------------------

    def _denied(self, client: hvac.Client, operation: str, path: str) -> errors.KeyCoreError:
        """403 means a bad token or a missing grant: ask OpenBao which, so the message says what to fix."""
        needed = "read" if operation == "read" else "update"
        where = f"{path} on {self.address}" + (f" (namespace {self.namespace})" if self.namespace else "")
        try:
            token = client.auth.token.lookup_self()["data"]
        except vault.Forbidden:
            credential = "the token of its AppRole login" if self.auth_method == "approle" else "its token"
            return errors.KmsAccessDenied(
                f"OpenBao denied {operation} on {where}: it no longer accepts {credential}, which is wrong, expired "
                "or revoked. Enter a valid credential (see the setup help)."
            )
        except (vault.VaultError, requests.RequestException, KeyError, TypeError):
            token = None
        try:
            capabilities = _capabilities(client, path)
        except (vault.VaultError, requests.RequestException, KeyError, TypeError):
            capabilities = None
        token_namespace = str(token.get("namespace_path") or "").strip("/") if token else self.namespace
        if capabilities is None and token_namespace != self.namespace:
            return errors.KmsMisconfigured(
                f"OpenBao denied {operation} on {where}: KeyCore's token belongs to the namespace "
                f"'{token_namespace or '(root)'}', but this configuration names "
                f"{repr(self.namespace) if self.namespace else 'none'}. Enter the namespace of the key and the token."
            )
        policies = ", ".join(token.get("policies") or []) if token else ""
        holder = f"KeyCore's token (policies: {policies or 'none'})" if token else "KeyCore's token"
        if capabilities is not None and needed not in capabilities and "root" not in capabilities:
            return errors.KmsAccessDenied(
                f"Access denied for {operation} on {where}: {holder} may not {needed} {path}. Grant the policy "
                "of the setup help (its key name, mount and namespace must match this configuration)."
            )
        if capabilities is not None:
            return errors.KmsAccessDenied(
                f"Access denied for {operation} on {where} although {holder} may {needed} it: a policy restricts "
                "the request's parameters (allowed_parameters), for example to another tenant's context. Grant the "
                "policy of the setup help for this tenant."
            )
        return errors.KmsAccessDenied(
            f"Access denied for {operation} on {where}: the token is wrong, expired or revoked, or its policies do "
            "not allow this (see the setup help)."
        )

    def _vault_error(
        self, exc: vault.VaultError, operation: str, context: WrapContext | None, version: int | None
    ) -> errors.KeyCoreError:
        """One OpenBao answer → the typed KeyCore error that says what to fix."""
        message = _vault_message(exc)
        lowered = message.lower()
        what = f"the Transit key '{self.key_name}' ({self.describe()})"
        if isinstance(exc, vault.InvalidPath):
            if "no handler for route" in lowered:
                return errors.KmsMisconfigured(
                    f"Nothing is mounted at {self.mount}/ on {self.address}"
                    + (f" in the namespace {self.namespace}" if self.namespace else "")
                    + ": check the Transit mount path and the namespace."
                )
            return errors.KmsKeyNotFound(
                f"There is no Transit key '{self.key_name}' ({self.describe()}): check the key name, the mount path "
                "and the namespace, or the key was deleted."
            )
        if isinstance(exc, vault.InvalidRequest):
            if "encryption key not found" in lowered:
                return errors.KmsKeyNotFound(
                    f"There is no Transit key '{self.key_name}' ({self.describe()}): it was deleted, or the key name "
                    "is wrong."
                )
            if "soft-deleted" in lowered:
                return errors.KmsKeyDisabled(f"Refused: {what} is soft-deleted; restore it to use it again.")
            if "too old" in lowered:
                wrapped_under = f"version {version}" if version else "a version"
                return errors.KmsKeyDisabled(
                    f"This tenant key was wrapped under {wrapped_under} of {what}, which the key no longer decrypts "
                    "(min_decryption_version is above it). Lower min_decryption_version to use it."
                )
            if "message authentication failed" in lowered or "invalid ciphertext" in lowered:
                return errors.AuthenticationFailed(_not_authentic(context))
            if "missing 'context'" in lowered:
                return errors.KmsMisconfigured(
                    f"The Transit key '{self.key_name}' is derived, but this tenant key was wrapped without a "
                    "derivation context: the key was replaced by another of the same name."
                )
            if "http request to an https server" in lowered:
                return errors.KmsMisconfigured(f"{self.address} speaks https: change the address to https://.")
            if "not supported for key type" in lowered or "non-aead" in lowered:
                return errors.KmsMisconfigured(f"The Transit key '{self.key_name}' cannot {operation}: {message}")
            return errors.ProviderError(f"OpenBao refused {operation} with {what}: {message}")
        if isinstance(exc, vault.RateLimitExceeded):
            return errors.KmsThrottled(f"OpenBao at {self.address} rate-limited {operation}; retry later.")
        if isinstance(exc, vault.VaultDown):
            return errors.KmsUnreachable(
                f"OpenBao at {self.address} is sealed or not active ({message or 'HTTP 503'}); it answers again once "
                "it is unsealed."
            )
        if isinstance(exc, vault.VaultNotInitialized):
            return errors.KmsMisconfigured(f"OpenBao at {self.address} is not initialised.")
        if isinstance(exc, vault.InternalServerError | vault.BadGateway):
            return errors.KmsUnreachable(f"OpenBao at {self.address} failed {operation} ({message}); retry later.")
        if isinstance(exc, vault.Unauthorized):
            return errors.KmsAccessDenied(f"OpenBao at {self.address} refused {operation}: {message}")
        return errors.ProviderError(f"OpenBao at {self.address} refused {operation}: {message}")

    def _connection_error(self, exc: requests.RequestException, operation: str) -> errors.KeyCoreError:
        where = self.address
        host = urlsplit(self.address).hostname or self.address
        if isinstance(exc, requests.exceptions.SSLError):
            for cause in _causes(exc):
                if isinstance(cause, ssl.SSLCertVerificationError):
                    reason = cause.verify_message or str(cause)
                    if cause.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
                        return errors.KmsMisconfigured(
                            f"The server certificate of {where} does not name '{host}' ({reason}): use the name "
                            "the certificate carries in the address."
                        )
                    return errors.KmsMisconfigured(
                        f"Server certificate not trusted: the certificate of {where} does not verify against the "
                        f"configured CA bundle ({reason}). Paste the CA that issued the server's certificate."
                    )
                if isinstance(cause, ssl.SSLError) and cause.reason in {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"}:
                    return errors.KmsMisconfigured(f"{where} does not speak TLS: is the port right?")
            return errors.KmsMisconfigured(f"TLS with {where} failed: {exc.__class__.__name__}.")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return errors.KmsUnreachable(f"No connection to OpenBao at {where} within {self.timeout:g}s.")
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return errors.KmsTimeout(f"OpenBao at {where} did not answer {operation} within {self.timeout:g}s.")
        for cause in _causes(exc):
            if isinstance(cause, ConnectionRefusedError):
                return errors.KmsUnreachable(
                    f"Connection refused by OpenBao at {where}: is it running, and is the address right?"
                )
            if "NameResolutionError" in type(cause).__name__ or "gaierror" in type(cause).__name__:
                return errors.KmsUnreachable(f"The host name '{host}' does not resolve.")
        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.ChunkedEncodingError):
            return errors.KmsUnreachable(f"OpenBao at {where} closed the connection during {operation}.")
        return errors.KmsUnreachable(f"Could not talk to OpenBao at {where} during {operation}: {type(exc).__name__}.")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _suggested_key_name(tenant_external_id: str) -> str:
    slug = re.sub(r"[^\w.-]+", "-", tenant_external_id, flags=re.ASCII).strip("-._")
    return f"keycore-{slug}" if slug else "keycore"


def _capabilities(client: hvac.Client, path: str) -> list[str]:
    answer = client.sys.get_capabilities(paths=[path])
    return list(answer.get(path) or answer.get("capabilities") or answer["data"][path])


def _vault_message(exc: vault.VaultError) -> str:
    """OpenBao's error text without the multierror wrapping ("1 error occurred: * permission denied")."""
    parts = exc.errors or [exc.args[0] if exc.args and exc.args[0] else ""]
    text = "; ".join(str(p) for p in parts if p)
    text = re.sub(r"\d+ errors? occurred:\s*", "", text)
    return " ".join(line.strip(" *\t") for line in text.splitlines() if line.strip(" *\t")).strip()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: requests → urllib3 MaxRetryError.reason → the socket or TLS error."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        for linked in (getattr(current, "reason", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                pending.append(linked)


def _not_authentic(context: WrapContext | None) -> str:
    if context is None:
        return "The Transit-wrapped tenant key does not authenticate: it was altered or belongs to another key."
    return (
        f"The Transit-wrapped tenant key does not authenticate for tenant {context.tenant_uid} version "
        f"{context.key_version}: it was altered, or belongs to another tenant, version or key."
    )
