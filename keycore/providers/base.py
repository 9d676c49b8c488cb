"""The provider interface every KMS plug-in implements.

A *provider* wraps and unwraps tenant keys under one key-encryption key (KEK)
that lives in a KMS: KeyCore's own local keyring, AWS KMS, a KMIP server, a
PKCS#11 HSM. One module per provider, one class per module, one entry in
:mod:`keycore.providers.registry`. Nothing outside ``keycore/providers/`` knows
a provider's name or its settings.

A provider instance is built from a configuration's non-secret ``settings``
and its decrypted ``secrets`` (credentials, PINs, private keys; decrypted by the
caller from the sealed blob, never stored in the clear). Instances are cached by
the key service and may be used from several threads at once.

Errors are the typed errors of :mod:`keycore.errors`: ``KmsUnreachable``,
``KmsTimeout`` and ``KmsThrottled`` are retryable; ``KmsAccessDenied``,
``KmsKeyNotFound``, ``KmsKeyDisabled`` and ``KmsMisconfigured`` are not. Their
messages tell an administrator what to fix ("access denied for kms:Decrypt on
arn:…", "certificate not trusted", "token 'x' not found") and never include
secrets.
"""

from __future__ import annotations

import abc
import functools
import hmac
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from keycore import errors, metrics

if TYPE_CHECKING:
    from keycore.egress import EgressPolicy

PROBE_BYTES = 32


@dataclass(frozen=True)
class WrapContext:
    """Who a tenant key belongs to; bound into every wrap where the protocol allows.

    ``tenant_uid`` is the tenant's immutable UUID (hex); ``key_version`` the tenant
    key version being wrapped (0 for health-check probes).
    """

    tenant_uid: str
    tenant_external_id: str
    config_uid: str
    key_version: int = 0

    def associated_data(self) -> bytes:
        """Canonical bytes for providers that take associated data (local AES-GCM, PKCS#11 GCM)."""
        return b"keycore/tenant-key/v1\x00" + self.tenant_uid.encode() + b"\x00" + str(self.key_version).encode()

    def encryption_context(self) -> dict[str, str]:
        """Key/value context for KMSs that log and enforce one (AWS encryption context)."""
        return {"keycore:tenant": self.tenant_uid, "keycore:tenant-key-version": str(self.key_version)}


@dataclass(frozen=True)
class SettingField:
    """One field a provider needs; drives forms, API validation and help text.

    ``secret`` fields are write-only: stored sealed with the root key, shown as
    "set" and never returned by any page or API.
    ``kind`` is one of ``text``, ``int``, ``textarea`` (PEM blocks), ``choice``, ``bool``.
    """

    name: str
    label: str
    help: str = ""
    required: bool = True
    secret: bool = False
    kind: str = "text"
    choices: tuple[tuple[str, str], ...] = ()
    default: Any = None


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str
    latency_ms: float
    error_code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_timing = threading.local()


def _timed(operation: str, method):
    """``method`` (a provider's wrap or unwrap), counted and timed by provider, operation and outcome.

    Applied once here to every subclass, so no provider instruments itself; a subclass calling its
    parent's method is counted once (the outermost call).
    """

    @functools.wraps(method)
    def timed(self, *args, **kwargs):
        if getattr(_timing, "inside", False):
            return method(self, *args, **kwargs)
        _timing.inside = True
        outcome = "error"
        started = time.perf_counter()
        try:
            result = method(self, *args, **kwargs)
            outcome = "ok"
            return result
        except errors.KeyCoreError as exc:
            outcome = exc.code
            raise
        finally:
            _timing.inside = False
            elapsed = time.perf_counter() - started
            metrics.observe_kms_call(getattr(self, "name", "unnamed"), operation, outcome, elapsed)

    timed.kms_timed = True
    return timed


class KeyProvider(abc.ABC):
    #: registry name, e.g. "aws"; stored on the configuration row
    name: ClassVar[str]
    #: human name, e.g. "AWS KMS"
    label: ClassVar[str]
    #: settings and secrets the provider takes, in form order
    fields: ClassVar[tuple[SettingField, ...]] = ()
    #: whether vendor staff may create configurations of this kind for a tenant
    vendor_may_create: ClassVar[bool] = True
    #: whether tenants may bring a configuration of this kind
    tenant_may_create: ClassVar[bool] = True
    #: whether the periodic health check should call this KMS (not for keys KeyCore holds itself)
    periodic_health_check: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # every KMS call is counted and timed here, whatever the provider (keycore.metrics)
        for operation in ("wrap", "unwrap"):
            method = cls.__dict__.get(operation)
            if method is not None and not getattr(method, "kms_timed", False):
                setattr(cls, operation, _timed(operation, method))

    def __init__(
        self,
        settings: Mapping[str, Any],
        secrets: Mapping[str, str],
        *,
        timeout: float = 5.0,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.settings = dict(settings)
        self.secrets = dict(secrets)
        self.timeout = timeout
        #: where this instance may connect (a tenant's configuration), or None (the vendor's own). A provider
        #: that talks over the network opens every connection through keycore.egress with it: see docs/providers.md
        self.egress = egress

    # -- validation -------------------------------------------------------------

    @classmethod
    def clean(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Check and normalise settings and secrets; raise ``InvalidInput`` with field errors.

        The default checks required fields and ``int`` fields and drops unknown keys.
        Providers extend it for their own formats (ARNs, PEM blocks, ports).
        """
        clean_settings: dict[str, Any] = {}
        clean_secrets: dict[str, str] = {}
        problems: dict[str, list[str]] = {}
        for f in cls.fields:
            source = secrets if f.secret else settings
            value = source.get(f.name)
            if isinstance(value, str):
                value = value.strip()
            if value in (None, ""):
                if f.default is not None:
                    value = f.default
                elif f.required:
                    problems.setdefault(f.name, []).append(f"{f.label} is required.")
                    continue
                else:
                    continue
            if f.kind == "int":
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    problems.setdefault(f.name, []).append(f"{f.label} must be a whole number.")
                    continue
            elif f.kind == "bool":
                value = value in (True, "true", "True", "1", "on", 1)
            elif f.kind == "choice" and value not in {c for c, _ in f.choices}:
                problems.setdefault(f.name, []).append(
                    f"{f.label}: choose one of {', '.join(c for c, _ in f.choices)}."
                )
                continue
            (clean_secrets if f.secret else clean_settings)[f.name] = value
        if problems:
            raise errors.InvalidInput("The configuration has errors.", field_errors=problems)
        return clean_settings, clean_secrets

    @classmethod
    def generate_secrets(cls) -> dict[str, str]:
        """Secrets KeyCore creates itself for a new configuration (the local provider's KEK)."""
        return {}

    @classmethod
    def setup_help(cls, *, tenant_external_id: str = "", vendor_principal: str = "", tenant_uid: str = "") -> str:
        """Plain text telling an administrator what the KMS must allow (policies, objects).

        ``tenant_uid`` is the tenant's KeyCore uid (hex), which KeyCore binds into every
        wrap; providers with key policies use it in their conditions.
        """
        return ""

    @classmethod
    def egress(cls, settings: Mapping[str, Any]) -> list[str]:
        """The network hosts this configuration makes KeyCore reach.

        KeyCore checks these against the operator's egress policy before it saves or
        tests a *tenant's* configuration (keycore/egress.py), so a tenant cannot point
        KeyCore at the vendor's internal network. Network providers also open every
        connection through the policy in ``self.egress``.
        """
        return []

    @classmethod
    def check_tenant_settings(cls, settings: Mapping[str, Any]) -> None:
        """Refuse, with ``InvalidInput`` naming the field, what a *tenant's* configuration may not make
        KeyCore do on its own servers beyond reaching hosts (those are :meth:`egress`): load a library,
        say. Called with the egress check, before a tenant's configuration is tested or saved."""
        return None  # most providers only reach hosts

    def describe(self) -> str:
        """A one-line, non-secret summary of where the key lives (ARN, host:port/uid, token/label)."""
        return self.label

    # -- key operations -------------------------------------------------------------

    @abc.abstractmethod
    def wrap(self, key: bytes, context: WrapContext) -> bytes:
        """Encrypt ``key`` under the KEK; the result is opaque to the caller."""

    @abc.abstractmethod
    def unwrap(self, wrapped: bytes, context: WrapContext) -> bytes:
        """Decrypt what :meth:`wrap` returned; authenticity must be checked (raise ``AuthenticationFailed``)."""

    def check(self, context: WrapContext) -> HealthResult:
        """Test connection: wrap and unwrap a random probe and compare.

        Used before a configuration may become active and by the periodic health
        check; never raises for provider errors, it reports them.
        """
        probe = os.urandom(PROBE_BYTES)
        started = time.perf_counter()
        try:
            wrapped = self.wrap(probe, context)
            back = self.unwrap(wrapped, context)
        except errors.KeyCoreError as exc:
            return HealthResult(False, exc.detail, (time.perf_counter() - started) * 1000, exc.code)
        elapsed = (time.perf_counter() - started) * 1000
        if not hmac.compare_digest(back, probe):
            return HealthResult(
                False, "The KMS returned a different key than it wrapped.", elapsed, "kms-misconfigured"
            )
        return HealthResult(True, f"Wrap and unwrap succeeded ({self.describe()}).", elapsed)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and sessions."""
