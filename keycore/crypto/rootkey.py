"""Sealing secrets at rest under the operator's root key (``KEYCORE_ROOT_KEY``).

KMS credentials and local KEKs are stored *sealed*: AES-256-GCM under the
current root key, with a header naming the root key by fingerprint and the
associated data binding the blob to a *purpose* (what kind of secret) and a
*context* (which row), so a sealed blob copied to another row or use fails.
Layout: "Sealed secret v1" in :mod:`keycore.crypto.formats`.

Rotation: configure the new key as current and the old one as previous. Blobs
sealed under a previous key still unseal; :meth:`RootKeyring.needs_reseal` finds
them and :meth:`RootKeyring.reseal` moves them to the current key. When nothing
needs a reseal any more, the old key can be dropped.

Run ``python -m keycore.crypto.rootkey`` to print a new root key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keycore import errors
from keycore.crypto.formats import (
    KEY_BYTES,
    KEYED_V1_AAD_BYTES,
    NONCE_BYTES,
    ROOT_KEY_ID_DOMAIN,
    SEALED_KIND,
    decode_key_text,
    encode_key_text,
    key_fingerprint,
    pack_keyed_header,
    unpack_keyed,
)

MAX_PURPOSE_BYTES = 255


def key_id(key: bytes) -> str:
    """Short public fingerprint of a root key (16 hex digits); what headers and messages show."""
    return key_fingerprint(key, ROOT_KEY_ID_DOMAIN).hex()


def parse_root_key(text: str) -> bytes:
    """A root key from its text form: base64 (standard or URL-safe) of exactly 32 bytes."""
    try:
        return decode_key_text(text)
    except ValueError as exc:
        raise errors.InvalidInput(
            f"A root key must be base64 of {KEY_BYTES} random bytes, but {exc}. "
            "Generate one with: python -m keycore.crypto.rootkey"
        ) from None


def generate_root_key_text() -> str:
    """A new random root key, as text for ``KEYCORE_ROOT_KEY``."""
    return encode_key_text(os.urandom(KEY_BYTES))


def _sealing_aad(header: bytes, purpose: str, context: str) -> bytes:
    if not isinstance(purpose, str) or not isinstance(context, str):
        raise errors.InvalidInput("Purpose and context of a sealed secret are strings.")
    try:
        purpose_bytes, context_bytes = purpose.encode(), context.encode()
    except UnicodeEncodeError:
        raise errors.InvalidInput("Purpose and context of a sealed secret must be valid Unicode text.") from None
    if not 0 < len(purpose_bytes) <= MAX_PURPOSE_BYTES:
        raise errors.InvalidInput(f"A sealing purpose is 1 to {MAX_PURPOSE_BYTES} bytes.")
    return header + bytes((len(purpose_bytes),)) + purpose_bytes + context_bytes


class RootKeyring:
    """The current root key and the previous ones still accepted for unsealing."""

    __slots__ = ("_by_id", "_current", "_current_id", "_keys")

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        keys = [current, *previous]
        for key in keys:
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise errors.InvalidInput(f"Root keys are {KEY_BYTES} bytes.")
        self._current_id = key_fingerprint(current, ROOT_KEY_ID_DOMAIN)
        self._by_id: dict[bytes, AESGCM] = {}
        self._keys: dict[bytes, bytes] = {}
        for key in keys:
            self._by_id.setdefault(key_fingerprint(key, ROOT_KEY_ID_DOMAIN), AESGCM(key))
            self._keys.setdefault(key_fingerprint(key, ROOT_KEY_ID_DOMAIN), bytes(key))
        self._current = self._by_id[self._current_id]

    @classmethod
    def from_text(cls, current: str, previous: str = "") -> RootKeyring:
        """From setting values: ``previous`` lists keys separated by commas or whitespace."""
        return cls(parse_root_key(current), [parse_root_key(t) for t in re.split(r"[\s,]+", previous) if t])

    @property
    def current_id(self) -> str:
        return self._current_id.hex()

    @property
    def key_ids(self) -> list[str]:
        """Ids of every configured key, current first."""
        return [i.hex() for i in self._by_id]

    def derive_keys(self, info: bytes) -> dict[str, bytes]:
        """A 32-byte key per root key (HKDF-SHA256 with ``info``), by root key id, current first.

        For other purposes than sealing (event-chain signatures): a root key is never used for two.
        """
        return {
            key_hex: HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)
            for key_hex, key in ((i.hex(), k) for i, k in self._keys.items())
        }

    def __repr__(self) -> str:
        return f"<RootKeyring current={self.current_id} keys={len(self._by_id)}>"

    def __reduce__(self):
        raise TypeError("RootKeyring holds key material and cannot be pickled.")

    def seal(self, plaintext: bytes, *, purpose: str, context: str) -> bytes:
        """Encrypt ``plaintext`` under the current root key, bound to ``purpose`` and ``context``."""
        if not isinstance(plaintext, bytes | bytearray | memoryview):
            raise errors.InvalidInput("Only bytes can be sealed.")
        nonce = os.urandom(NONCE_BYTES)
        header = pack_keyed_header(SEALED_KIND, self._current_id, nonce)
        aad = _sealing_aad(header[:KEYED_V1_AAD_BYTES], purpose, context)
        return header + self._current.encrypt(nonce, plaintext, aad)

    def unseal(self, blob: bytes, *, purpose: str, context: str) -> bytes:
        """Decrypt a sealed blob with whichever configured root key sealed it."""
        parts = unpack_keyed(blob, SEALED_KIND)
        aead = self._by_id.get(parts.key_id)
        if aead is None:
            raise errors.KmsMisconfigured(
                f"This secret is sealed under root key {parts.key_id.hex()}, which is not configured; "
                "add it to KEYCORE_ROOT_KEY_PREVIOUS.",
                root_key_id=parts.key_id.hex(),
            )
        try:
            return aead.decrypt(parts.nonce, parts.ciphertext, _sealing_aad(parts.aad_prefix, purpose, context))
        except InvalidTag:
            raise errors.AuthenticationFailed(
                f"The sealed secret does not authenticate for purpose {purpose!r} and context {context!r}: "
                "it was altered or belongs to another record."
            ) from None

    def needs_reseal(self, blob: bytes) -> bool:
        """Whether ``blob`` is sealed under a key other than the current one."""
        return unpack_keyed(blob, SEALED_KIND).key_id != self._current_id

    def reseal(self, blob: bytes, *, purpose: str, context: str) -> bytes:
        """``blob`` sealed under the current root key.

        The blob is always authenticated first; one already under the current key is
        returned unchanged, so a re-seal pass only rewrites what it has to.
        """
        plaintext = self.unseal(blob, purpose=purpose, context=context)
        if not self.needs_reseal(blob):
            return bytes(blob)
        return self.seal(plaintext, purpose=purpose, context=context)


if __name__ == "__main__":
    print(generate_root_key_text())
