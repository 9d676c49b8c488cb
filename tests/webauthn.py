"""A software passkey for the Django tests: a real P-256 key pair that answers WebAuthn ceremonies with the
byte layouts of the specification, so allauth's fido2 server checks it exactly as it checks a browser's
answer (challenge, origin, RP ID hash, flags, signature). The browser tests use Chromium's own virtual
authenticator instead; this one lets the server's rules be tested quickly and from the attacker's side
(another origin, another RP ID, no user verification).

The options are read where a browser reads them: the JSON data block of the rendered page.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import AttestationObject, AttestedCredentialData, AuthenticatorData, CollectedClientData

FLAG_USER_PRESENT = 0x01
FLAG_USER_VERIFIED = 0x04
FLAG_ATTESTED_DATA = 0x40
AAGUID = bytes(16)


def options_in(html: str | bytes, block_id: str = "passkey-options") -> dict:
    """The WebAuthn options of a page: the JSON data block passkeys.js reads."""
    text = html.decode() if isinstance(html, bytes) else html
    found = re.search(rf'<script id="{block_id}" type="application/json">(.*?)</script>', text, re.S)
    assert found, f"no #{block_id} data block in the page"
    return json.loads(found.group(1))


class SoftPasskey:
    """One credential on one authenticator. ``origin`` is what the browser would report as the page's origin."""

    def __init__(self, origin: str = "https://testserver", rp_id: str | None = None):
        self.origin = origin
        self.rp_id = rp_id  # None: the RP ID the server asks for
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.user_handle: str | None = None
        self.sign_count = 0

    def _flags(self, user_verified: bool) -> int:
        return FLAG_USER_PRESENT | (FLAG_USER_VERIFIED if user_verified else 0)

    def _rp_hash(self, requested_rp_id: str) -> bytes:
        return hashlib.sha256((self.rp_id or requested_rp_id).encode()).digest()

    def create(self, options: dict, *, user_verified: bool = True, resident: bool = False) -> dict:
        """navigator.credentials.create(): the RegistrationResponseJSON a browser posts."""
        public_key = options["publicKey"]
        self.user_handle = public_key["user"]["id"]
        client_data = CollectedClientData.create(
            type=CollectedClientData.TYPE.CREATE, challenge=public_key["challenge"], origin=self.origin
        )
        credential = AttestedCredentialData.create(
            AAGUID, self.credential_id, ES256.from_cryptography_key(self.private_key.public_key())
        )
        auth_data = AuthenticatorData.create(
            self._rp_hash(public_key["rp"]["id"]),
            self._flags(user_verified) | FLAG_ATTESTED_DATA,
            self.sign_count,
            credential,
        )
        attestation = AttestationObject.create("none", auth_data, {})
        return {
            "type": "public-key",
            "id": websafe_encode(self.credential_id),
            "rawId": websafe_encode(self.credential_id),
            "authenticatorAttachment": "cross-platform",
            "response": {
                "clientDataJSON": websafe_encode(client_data),
                "attestationObject": websafe_encode(attestation),
                "transports": ["usb"],
            },
            "clientExtensionResults": {"credProps": {"rk": resident}},
        }

    def get(self, options: dict, *, user_verified: bool = True) -> dict:
        """navigator.credentials.get(): the AuthenticationResponseJSON a browser posts."""
        public_key = options["publicKey"]
        allowed = [websafe_decode(c["id"]) for c in public_key.get("allowCredentials") or []]
        assert not allowed or self.credential_id in allowed, "the server did not ask for this passkey"
        self.sign_count += 1
        client_data = CollectedClientData.create(
            type=CollectedClientData.TYPE.GET, challenge=public_key["challenge"], origin=self.origin
        )
        auth_data = AuthenticatorData.create(
            self._rp_hash(public_key["rpId"]), self._flags(user_verified), self.sign_count
        )
        signature = self.private_key.sign(auth_data + client_data.hash, ec.ECDSA(hashes.SHA256()))
        return {
            "type": "public-key",
            "id": websafe_encode(self.credential_id),
            "rawId": websafe_encode(self.credential_id),
            "authenticatorAttachment": "cross-platform",
            "response": {
                "clientDataJSON": websafe_encode(client_data),
                "authenticatorData": websafe_encode(auth_data),
                "signature": websafe_encode(signature),
                "userHandle": self.user_handle,
            },
            "clientExtensionResults": {},
        }
