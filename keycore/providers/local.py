"""KeyCore's own software KEK: the vendor-provided key every tenant starts with.

The KEK is 32 random bytes made by :meth:`LocalProvider.generate_secrets`. It is a
secret: the caller stores it sealed under the root key and hands it to the
provider decrypted. Wrapping is AES-256-GCM with the tenant and key version as
associated data; layout "Local-provider wrapped tenant key v1" in
:mod:`keycore.crypto.formats`. The header names the KEK by fingerprint, so a
tenant key unwrapped with the wrong configuration says so instead of looking
tampered.

KEK rotation without a new configuration: the secrets hold the current KEK
(``kek``) and, while a rotation job runs, the KEKs it replaces (``previous``,
comma-separated). New wraps always use the current KEK; an unwrap picks the KEK
the wrap's header names. :meth:`LocalProvider.rotate_kek` puts a new KEK in
front, :meth:`LocalProvider.needs_rewrap` tells which wraps still use an older
one, and :meth:`LocalProvider.drop_previous` forgets older KEKs once no wrap
needs them. Rekey jobs recognise a rotatable provider by these three methods.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keycore import errors
from keycore.crypto.formats import (
    KEY_BYTES,
    KEYED_V1_AAD_BYTES,
    LOCAL_KEK_ID_DOMAIN,
    LOCAL_WRAP_KIND,
    NONCE_BYTES,
    decode_key_text,
    encode_key_text,
    key_fingerprint,
    pack_keyed_header,
    unpack_keyed,
)
from keycore.providers.base import KeyProvider, WrapContext

KEK_SECRET = "kek"  # noqa: S105 - the name of the secret, not a secret
PREVIOUS_SECRET = "previous"  # noqa: S105 - older KEKs still accepted for unwrap, comma-separated
MAX_PREVIOUS_KEKS = 16


def _split_previous(text: str) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


class LocalProvider(KeyProvider):
    name = "local"
    label = "KeyCore (vendor-provided)"
    fields = ()
    tenant_may_create = False
    # The KEK is in KeyCore's own database: there is no remote KMS whose state could change.
    periodic_health_check = False

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(settings, secrets, **kwargs)
        self._aead: AESGCM | None = None
        self._kek_id = b""
        self._problem = ""
        #: every KEK this configuration can unwrap with, by fingerprint (the current one included)
        self._by_id: dict[bytes, AESGCM] = {}
        try:
            kek = decode_key_text(self.secrets.get(KEK_SECRET, ""))
            previous = [decode_key_text(text) for text in _split_previous(self.secrets.get(PREVIOUS_SECRET, ""))]
        except ValueError as exc:
            # Reported on use, so a health check can show it instead of failing to build.
            self._problem = f"The local KEK of this configuration is missing or unusable: {exc}."
        else:
            self._aead = AESGCM(kek)
            self._kek_id = key_fingerprint(kek, LOCAL_KEK_ID_DOMAIN)
            self._by_id[self._kek_id] = self._aead
            for old in previous:
                self._by_id.setdefault(key_fingerprint(old, LOCAL_KEK_ID_DOMAIN), AESGCM(old))

    @classmethod
    def generate_secrets(cls) -> dict[str, str]:
        return {KEK_SECRET: encode_key_text(os.urandom(KEY_BYTES))}

    @classmethod
    def clean(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """No settings; keeps a generated KEK and any previous KEKs (checked) so cleaning never loses one."""
        if KEK_SECRET not in secrets:
            return {}, {}
        try:
            decode_key_text(secrets[KEK_SECRET])
            previous = _split_previous(secrets.get(PREVIOUS_SECRET, ""))
            for text in previous:
                decode_key_text(text)
        except ValueError as exc:
            raise errors.InvalidInput(
                "The local KEK is not usable.", field_errors={KEK_SECRET: [f"The KEK is invalid: {exc}."]}
            ) from None
        clean = {KEK_SECRET: secrets[KEK_SECRET].strip()}
        if previous:
            clean[PREVIOUS_SECRET] = ",".join(previous)
        return {}, clean

    @classmethod
    def setup_help(cls, *, tenant_external_id: str = "", vendor_principal: str = "") -> str:
        return "Nothing to set up: KeyCore generates the key and stores it sealed under the operator's root key."

    def describe(self) -> str:
        if self._aead is None:
            return "KeyCore local key (missing)"
        return f"KeyCore local key {self._kek_id.hex()}"

    # -- rotation ---------------------------------------------------------------------

    @classmethod
    def rotate_kek(cls, secrets: Mapping[str, str]) -> dict[str, str]:
        """Secrets with a fresh current KEK; the current and previous ones stay, for unwrap only.

        Raises ``KmsMisconfigured`` when the secrets hold no usable KEK: a rotation
        must never start from a configuration whose wraps it could not read.
        """
        try:
            decode_key_text(secrets.get(KEK_SECRET, ""))
        except ValueError as exc:
            raise errors.KmsMisconfigured(
                f"The local KEK of this configuration is missing or unusable: {exc}."
            ) from None
        older = [secrets[KEK_SECRET].strip(), *_split_previous(secrets.get(PREVIOUS_SECRET, ""))]
        if len(older) > MAX_PREVIOUS_KEKS:
            raise errors.Conflict(
                f"This configuration still holds {len(older) - 1} previous KEKs: let the running rotation finish "
                "(it drops them) before starting another."
            )
        return {**cls.generate_secrets(), PREVIOUS_SECRET: ",".join(older)}

    @classmethod
    def drop_previous(cls, secrets: Mapping[str, str], keep: Collection[str] = ()) -> dict[str, str]:
        """Secrets without the previous KEKs, except those whose fingerprints (hex) are in ``keep``."""
        if not keep:
            return {KEK_SECRET: secrets[KEK_SECRET].strip()}
        kept = [
            text
            for text in _split_previous(secrets.get(PREVIOUS_SECRET, ""))
            if key_fingerprint(decode_key_text(text), LOCAL_KEK_ID_DOMAIN).hex() in keep
        ]
        out = {KEK_SECRET: secrets[KEK_SECRET].strip()}
        if kept:
            out[PREVIOUS_SECRET] = ",".join(kept)
        return out

    @property
    def current_key_id(self) -> str:
        """Fingerprint (hex) of the KEK new wraps use."""
        return self._kek_id.hex()

    @property
    def previous_key_ids(self) -> list[str]:
        return [key_id.hex() for key_id in self._by_id if key_id != self._kek_id]

    @staticmethod
    def wrap_key_id(wrapped: bytes) -> str:
        """Fingerprint (hex) of the KEK a wrap was made with, read from its header."""
        return unpack_keyed(wrapped, LOCAL_WRAP_KIND).key_id.hex()

    def needs_rewrap(self, wrapped: bytes) -> bool:
        """Whether ``wrapped`` was made with a KEK other than the current one."""
        return unpack_keyed(wrapped, LOCAL_WRAP_KIND).key_id != self._kek_id

    # -- wrap and unwrap ---------------------------------------------------------------

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise errors.KmsMisconfigured(self._problem)
        return self._aead

    def wrap(self, key: bytes, context: WrapContext) -> bytes:
        aead = self._cipher()
        if not isinstance(key, bytes | bytearray) or not key:
            raise errors.InvalidInput("Only non-empty bytes can be wrapped.")
        nonce = os.urandom(NONCE_BYTES)
        header = pack_keyed_header(LOCAL_WRAP_KIND, self._kek_id, nonce)
        return header + aead.encrypt(nonce, bytes(key), header[:KEYED_V1_AAD_BYTES] + context.associated_data())

    def unwrap(self, wrapped: bytes, context: WrapContext) -> bytes:
        self._cipher()
        parts = unpack_keyed(wrapped, LOCAL_WRAP_KIND)
        aead = self._by_id.get(parts.key_id)
        if aead is None:
            raise errors.KmsKeyNotFound(
                f"This tenant key was wrapped by local key {parts.key_id.hex()}, "
                f"but this configuration holds local key {self._kek_id.hex()}."
            )
        try:
            return aead.decrypt(parts.nonce, parts.ciphertext, parts.aad_prefix + context.associated_data())
        except InvalidTag:
            raise errors.AuthenticationFailed(
                f"The wrapped tenant key does not authenticate for tenant {context.tenant_uid} "
                f"version {context.key_version}: it was altered or belongs to another tenant or version."
            ) from None
