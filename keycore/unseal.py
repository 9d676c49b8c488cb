"""The root key wrapped by a KMS ("auto-unseal"): stored only as a KMS ciphertext, opened at process start.

Instead of ``KEYCORE_ROOT_KEY`` (the root key itself, in the environment), an
operator may give every process ``KEYCORE_ROOT_KEY_WRAPPED``: the root key
encrypted by a key in AWS KMS, OpenBao/Vault Transit, a PKCS#11 HSM or a KMIP
server, through the same provider plug-ins tenants' keys use. Each process asks
the KMS to unwrap it when it starts (:func:`load_root_key`, called by
:func:`keycore.sealing.root_keyring`) and keeps the key in memory only: it is
never written to disk, the database, Redis or a log, and no message carries it.
A database backup together with the wrapped text opens nothing without the KMS.

Which KMS, from the environment (each variable also as ``<NAME>_FILE``)::

    KEYCORE_ROOT_KEY_KMS=aws|openbao|pkcs11|kmip
    KEYCORE_ROOT_KEY_KMS_<FIELD>=…   one per provider field (docs/providers.md):
                                     KEYCORE_ROOT_KEY_KMS_KEY_ID, …_PIN_FILE, …_CLIENT_KEY_FILE

The wrapped text (``KEYCORE_ROOT_KEY_WRAPPED``), one line::

    keycore-root-key:v1:<provider>:<install id, 32 hex>:<root key id, 16 hex>:<base64url of the provider's blob>

Nothing in it is secret but the blob, which only the KMS opens. Every wrap is
bound to its purpose, the install and the root key id (:class:`RootKeyContext`:
AWS encryption context, Transit/PKCS#11/KMIP associated data), so the KMS
refuses a blob that is not this install's root key — another install's, a
tenant key wrapped under the same KMS key, or a header edited to claim another
id — and the key that comes back must have the root key id the header names.

``KEYCORE_ROOT_KEY_INSTALL_ID`` pins the install: the wrapped text is not secret and
may be kept where more people can write than can read the KMS credentials, and a
wrapped text another install made under the same KMS key (staging's, say) would
otherwise open, with a root key of its own.

Starting with a KMS that is down: the unwrap is retried a bounded number of
times (``KEYCORE_ROOT_KEY_UNWRAP_ATTEMPTS``, with doubling waits), then the
process refuses to start, naming the KMS and the reason (keycore/checks.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from keycore import errors
from keycore.crypto.formats import KEY_BYTES
from keycore.crypto.rootkey import key_id, parse_root_key
from keycore.providers.base import KeyProvider, WrapContext
from keycore.providers.registry import get_provider_class

logger = logging.getLogger(__name__)

WRAPPED_PREFIX = "keycore-root-key"
WRAPPED_VERSION = "v1"
INSTALL_ID_BYTES = 16
ROOT_KEY_PURPOSE = "keycore-root-key"
#: providers whose KEK is itself sealed by the root key cannot hold it
REFUSED_PROVIDERS = frozenset({"local"})
_WRAPPED_RE = re.compile(
    rf"^{WRAPPED_PREFIX}:(?P<version>v\d+):(?P<provider>[a-z0-9_-]{{1,40}}):(?P<install>[0-9a-f]{{32}}):"
    r"(?P<key_id>[0-9a-f]{16}):(?P<blob>[A-Za-z0-9_-]+=*)$"
)
MAX_BACKOFF_SECONDS = 30.0


def is_wrapped(text: str) -> bool:
    """Whether a root key setting holds a KMS-wrapped root key rather than the key itself."""
    return text.strip().startswith(f"{WRAPPED_PREFIX}:")


@dataclass(frozen=True)
class WrappedRootKey:
    """A root key as a KMS ciphertext and the public facts that name it."""

    provider: str
    install_id: str
    root_key_id: str
    blob: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> WrappedRootKey:
        match = _WRAPPED_RE.match(text.strip())
        if match is None:
            raise errors.InvalidInput(
                f"A wrapped root key is one line {WRAPPED_PREFIX}:{WRAPPED_VERSION}:<kms>:<install id>:<root key id>:"
                "<blob>, as `python manage.py keycore_root_key create` prints it; this is not one."
            )
        if match["version"] != WRAPPED_VERSION:
            raise errors.InvalidInput(f"Unknown wrapped root key version {match['version']}.")
        try:
            blob = base64.urlsafe_b64decode(match["blob"])
        except (binascii.Error, ValueError):
            raise errors.InvalidInput("The wrapped root key's blob is not base64.") from None
        return cls(match["provider"], match["install"], match["key_id"], blob)

    def text(self) -> str:
        blob = base64.urlsafe_b64encode(self.blob).decode()
        return f"{WRAPPED_PREFIX}:{WRAPPED_VERSION}:{self.provider}:{self.install_id}:{self.root_key_id}:{blob}"

    def context(self) -> RootKeyContext:
        return RootKeyContext(
            tenant_uid=f"root-key-{self.install_id}",
            tenant_external_id=ROOT_KEY_PURPOSE,
            config_uid=self.install_id,
            install_id=self.install_id,
            root_key_id=self.root_key_id,
        )


@dataclass(frozen=True)
class RootKeyContext(WrapContext):
    """What a root-key wrap is bound to: the purpose, the install and the root key id.

    The tenant-key context names a tenant; this one names none, and its associated
    data and encryption context start with another domain, so neither kind of wrap
    opens as the other even under one KMS key.
    """

    install_id: str = ""
    root_key_id: str = ""

    def associated_data(self) -> bytes:
        return b"keycore/root-key/v1\x00" + self.install_id.encode() + b"\x00" + self.root_key_id.encode()

    def encryption_context(self) -> dict[str, str]:
        return {
            "keycore:purpose": ROOT_KEY_PURPOSE,
            "keycore:install": self.install_id,
            "keycore:root-key-id": self.root_key_id,
        }


@dataclass(frozen=True)
class RootKeyKms:
    """The KMS that wraps the root key, as the environment configures it."""

    provider: str
    settings: Mapping[str, Any]
    secrets: Mapping[str, str] = field(repr=False)

    @property
    def provider_class(self) -> type[KeyProvider]:
        return get_provider_class(self.provider)

    def build(self) -> KeyProvider:
        # the operator's own KMS, as a vendor configuration is: no tenant egress policy applies
        return self.provider_class(self.settings, self.secrets, timeout=settings.KEYCORE_KMS_TIMEOUT, egress=None)

    def describe(self) -> str:
        """The KMS and its key, e.g. "AWS KMS arn:aws:kms:…" — never a credential."""
        provider = self.build()
        try:
            return f"{self.provider_class.label} {provider.describe()}"
        finally:
            provider.close()


def configured_kms() -> RootKeyKms | None:
    """The root key's KMS from ``KEYCORE_ROOT_KEY_KMS`` and ``KEYCORE_ROOT_KEY_KMS_<FIELD>``; None if unset."""
    name = (settings.KEYCORE_ROOT_KEY_KMS or "").strip().lower()
    if not name:
        return None
    if name in REFUSED_PROVIDERS:
        raise errors.KmsMisconfigured(
            f"KEYCORE_ROOT_KEY_KMS={name}: the local provider's keys are sealed by the root key itself; "
            "choose a KMS outside KeyCore (aws, openbao, pkcs11 or kmip)."
        )
    try:
        cls = get_provider_class(name)
    except errors.InvalidInput:
        raise errors.KmsMisconfigured(f"KEYCORE_ROOT_KEY_KMS={name} is not a KMS provider KeyCore knows.") from None
    options = dict(settings.KEYCORE_ROOT_KEY_KMS_OPTIONS)
    known = {f.name for f in cls.fields}
    unknown = sorted(set(options) - known)
    if unknown:
        raise errors.KmsMisconfigured(
            f"KEYCORE_ROOT_KEY_KMS_{unknown[0].upper()} is not a field of {cls.label}; it takes "
            + ", ".join(f"KEYCORE_ROOT_KEY_KMS_{f.name.upper()}" for f in cls.fields)
            + "."
        )
    secret_names = {f.name for f in cls.fields if f.secret}
    try:
        clean_settings, clean_secrets = cls.clean(
            {k: v for k, v in options.items() if k not in secret_names},
            {k: v for k, v in options.items() if k in secret_names},
        )
    except errors.InvalidInput as exc:
        problems = "; ".join(
            f"KEYCORE_ROOT_KEY_KMS_{name.upper()}: {' '.join(messages)}" for name, messages in exc.field_errors.items()
        )
        raise errors.KmsMisconfigured(f"The root key's KMS ({cls.label}) is misconfigured: {problems}") from None
    return RootKeyKms(name, clean_settings, clean_secrets)


def _require_kms() -> RootKeyKms:
    kms = configured_kms()
    if kms is None:
        raise errors.KmsMisconfigured(
            "A KMS-wrapped root key is configured, but KEYCORE_ROOT_KEY_KMS (the KMS that unwraps it) is not."
        )
    return kms


def new_install_id() -> str:
    return os.urandom(INSTALL_ID_BYTES).hex()


def wrap_root_key(key: bytes, *, kms: RootKeyKms, install_id: str) -> WrappedRootKey:
    """``key`` wrapped by ``kms`` for this install, checked by unwrapping it back."""
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise errors.InvalidInput(f"Root keys are {KEY_BYTES} bytes.")
    if not re.fullmatch(r"[0-9a-f]{32}", install_id):
        raise errors.InvalidInput("An install id is 32 lowercase hex digits.")
    template = WrappedRootKey(kms.provider, install_id, key_id(key), b"")
    provider = kms.build()
    try:
        wrapped = WrappedRootKey(kms.provider, install_id, template.root_key_id, provider.wrap(key, template.context()))
        # a KMS that wraps but cannot unwrap (policy allows Encrypt only) would leave an install that never starts
        back = provider.unwrap(wrapped.blob, wrapped.context())
    finally:
        provider.close()
    if not hmac.compare_digest(back, key):
        raise errors.KmsMisconfigured("The KMS returned a different key than it wrapped.")
    return wrapped


def unwrap_root_key(wrapped: WrappedRootKey, *, kms: RootKeyKms, attempts: int, backoff: float) -> bytes:
    """The root key ``wrapped`` holds; retries a KMS that is down ``attempts`` times, then raises why."""
    if wrapped.provider != kms.provider:
        raise _wrong_kms(wrapped, kms.provider)
    where = _describe_quietly(kms)
    for attempt in range(1, max(1, attempts) + 1):
        provider = kms.build()
        try:
            key = provider.unwrap(wrapped.blob, wrapped.context())
            break
        except errors.AuthenticationFailed:
            raise errors.AuthenticationFailed(
                f"{where} refused to unwrap root key {wrapped.root_key_id} for install {wrapped.install_id}: the "
                "wrapped text was altered, belongs to another install, or was made under another KMS key."
            ) from None
        except errors.KeyCoreError as exc:
            if not exc.retryable or attempt >= attempts:
                raise type(exc)(
                    f"{where} could not unwrap root key {wrapped.root_key_id}"
                    + (f" after {attempt} attempts" if attempt > 1 else "")
                    + f": {exc.detail}"
                ) from None
            wait = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
            logger.warning(
                "The KMS did not unwrap root key %s (attempt %d of %d, %s): retrying in %.1fs",
                wrapped.root_key_id,
                attempt,
                attempts,
                exc.code,
                wait,
            )
            time.sleep(wait)
        finally:
            provider.close()
    if len(key) != KEY_BYTES or not hmac.compare_digest(key_id(bytes(key)), wrapped.root_key_id):
        raise errors.AuthenticationFailed(
            f"{where} unwrapped something that is not root key {wrapped.root_key_id}: the wrapped text is not "
            "this install's root key."
        )
    return bytes(key)


def _wrong_kms(wrapped: WrappedRootKey, named: str) -> errors.KmsMisconfigured:
    return errors.KmsMisconfigured(
        f"Root key {wrapped.root_key_id} is wrapped by the {wrapped.provider} KMS, but KEYCORE_ROOT_KEY_KMS is {named}."
    )


def _describe_quietly(kms: RootKeyKms) -> str:
    try:
        return kms.describe()
    except errors.KeyCoreError:
        return kms.provider_class.label


def load_root_key(text: str) -> bytes:
    """A root key from a setting's value: the key itself (base64), or a KMS-wrapped one, unwrapped now."""
    if not is_wrapped(text):
        return parse_root_key(text)
    wrapped = WrappedRootKey.parse(text)
    named = (settings.KEYCORE_ROOT_KEY_KMS or "").strip().lower()
    if named and named != wrapped.provider:
        raise _wrong_kms(wrapped, named)
    pinned = settings.KEYCORE_ROOT_KEY_INSTALL_ID
    if pinned and not hmac.compare_digest(pinned, wrapped.install_id):
        raise errors.KmsMisconfigured(
            f"Root key {wrapped.root_key_id} is wrapped for install {wrapped.install_id}, but "
            f"KEYCORE_ROOT_KEY_INSTALL_ID is {pinned}: this wrapped text belongs to another install."
        )
    return unwrap_root_key(
        wrapped,
        kms=_require_kms(),
        attempts=settings.KEYCORE_ROOT_KEY_UNWRAP_ATTEMPTS,
        backoff=settings.KEYCORE_ROOT_KEY_UNWRAP_BACKOFF,
    )


def current_root_key_text() -> str:
    """The current root key setting: ``KEYCORE_ROOT_KEY_WRAPPED`` or ``KEYCORE_ROOT_KEY``."""
    return settings.KEYCORE_ROOT_KEY_WRAPPED or settings.KEYCORE_ROOT_KEY


@dataclass(frozen=True)
class RootKeySource:
    """Where one configured root key comes from, without unwrapping it: what status and /readyz show."""

    role: str  # "current" or "previous"
    root_key_id: str
    seal: str  # "environment" or the provider's name
    install_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "root_key_id": self.root_key_id, "seal": self.seal, "install_id": self.install_id}


def root_key_sources() -> list[RootKeySource]:
    """Every configured root key, current first: its id and what seals it. Raises on a malformed setting."""
    texts = [("current", current_root_key_text())]
    texts += [("previous", text) for text in settings.KEYCORE_ROOT_KEY_PREVIOUS]
    out = []
    for role, text in texts:
        if is_wrapped(text):
            wrapped = WrappedRootKey.parse(text)
            out.append(RootKeySource(role, wrapped.root_key_id, wrapped.provider, wrapped.install_id))
        else:
            out.append(RootKeySource(role, key_id(parse_root_key(text)), "environment"))
    return out
