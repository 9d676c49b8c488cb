"""Secrets at rest: sealed with the operator's root key, bound to the row they belong to."""

from __future__ import annotations

import base64
import json
from functools import cache

from django.conf import settings

from keycore.crypto.rootkey import RootKeyring, parse_root_key

CONFIG_SECRETS = "kms-config-secrets"
#: a shared vendor key's credentials: another purpose, so a blob cannot be moved between the two kinds of row
VENDOR_KEY_SECRETS = "vendor-key-secrets"


@cache
def root_keyring() -> RootKeyring:
    current = parse_root_key(settings.KEYCORE_ROOT_KEY)
    previous = [parse_root_key(text) for text in settings.KEYCORE_ROOT_KEY_PREVIOUS]
    return RootKeyring(current, previous)


def sealing_purpose(row) -> str:
    """What a row's sealed secrets are sealed for: a tenant's configuration or a shared vendor key."""
    meta = getattr(row, "_meta", None)  # bulk seeding seals for plain namespaces standing in for configurations
    return VENDOR_KEY_SECRETS if meta is not None and meta.model_name == "vendorkey" else CONFIG_SECRETS


def seal_secrets(config, secrets: dict[str, str]) -> None:
    """Seal ``secrets`` into ``config.sealed_secrets`` (not saved); remember which names are set.

    ``config`` is a KmsConfig or a VendorKey; the blob is bound to the row's ``uid`` and kind.
    """
    blob = json.dumps(secrets, sort_keys=True).encode()
    config.sealed_secrets = root_keyring().seal(blob, purpose=sealing_purpose(config), context=str(config.uid))
    config.secret_fields_set = sorted(secrets)


def unseal_secrets(config) -> dict[str, str]:
    if not config.sealed_secrets:
        return {}
    blob = root_keyring().unseal(bytes(config.sealed_secrets), purpose=sealing_purpose(config), context=str(config.uid))
    return json.loads(blob)


# --- MFA secrets (allauth's TOTP secrets and recovery-code seeds) ---------------------------------

MFA_PURPOSE = "mfa-secret"
#: what marks a sealed MFA secret inside allauth's JSON
MFA_MARKER = "kcsealed:"


def seal_mfa_secret(text: str) -> str:
    """An MFA secret as allauth stores it: the marker and the sealed blob in base64."""
    sealed = root_keyring().seal(text.encode(), purpose=MFA_PURPOSE, context="allauth")
    return MFA_MARKER + base64.b64encode(sealed).decode()


def unseal_mfa_secret(stored: str) -> str:
    if not stored.startswith(MFA_MARKER):
        raise ValueError("An MFA secret is not sealed.")
    blob = base64.b64decode(stored[len(MFA_MARKER) :])
    return root_keyring().unseal(blob, purpose=MFA_PURPOSE, context="allauth").decode()
