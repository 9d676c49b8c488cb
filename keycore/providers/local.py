"""KeyCore's own software KEK: the vendor-provided key every tenant starts with.

The KEK is 32 random bytes made by :meth:`LocalProvider.generate_secrets`. It is a
secret: the caller stores it sealed under the root key and hands it to the
provider decrypted. Wrapping is AES-256-GCM with the tenant and key version as
associated data; layout "Local-provider wrapped tenant key v1" in
:mod:`keycore.crypto.formats`. The header names the KEK by fingerprint, so a
tenant key unwrapped with the wrong configuration says so instead of looking
tampered.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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


class LocalProvider(KeyProvider):
    name = "local"
    label = "KeyCore (vendor-provided)"
    fields = ()
    tenant_may_create = False
    # The KEK is in KeyCore's own database: there is no remote KMS whose state could change.
    periodic_health_check = False

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str], *, timeout: float = 5.0) -> None:
        super().__init__(settings, secrets, timeout=timeout)
        self._aead: AESGCM | None = None
        self._kek_id = b""
        self._problem = ""
        try:
            kek = decode_key_text(self.secrets.get(KEK_SECRET, ""))
        except ValueError as exc:
            # Reported on use, so a health check can show it instead of failing to build.
            self._problem = f"The local KEK of this configuration is missing or unusable: {exc}."
        else:
            self._aead = AESGCM(kek)
            self._kek_id = key_fingerprint(kek, LOCAL_KEK_ID_DOMAIN)

    @classmethod
    def generate_secrets(cls) -> dict[str, str]:
        return {KEK_SECRET: encode_key_text(os.urandom(KEY_BYTES))}

    @classmethod
    def clean(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """No settings; keeps a generated KEK (checked) so cleaning never loses it."""
        if KEK_SECRET not in secrets:
            return {}, {}
        try:
            decode_key_text(secrets[KEK_SECRET])
        except ValueError as exc:
            raise errors.InvalidInput(
                "The local KEK is not usable.", field_errors={KEK_SECRET: [f"The KEK is invalid: {exc}."]}
            ) from None
        return {}, {KEK_SECRET: secrets[KEK_SECRET].strip()}

    @classmethod
    def setup_help(cls, *, tenant_external_id: str = "", vendor_principal: str = "", tenant_uid: str = "") -> str:
        return "Nothing to set up: KeyCore generates the key and stores it sealed under the operator's root key."

    def describe(self) -> str:
        if self._aead is None:
            return "KeyCore local key (missing)"
        return f"KeyCore local key {self._kek_id.hex()}"

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
        aead = self._cipher()
        parts = unpack_keyed(wrapped, LOCAL_WRAP_KIND)
        if parts.key_id != self._kek_id:
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
