"""Secrets at rest: sealed with the operator's root key, bound to the row they belong to."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
from functools import cache

from django.conf import settings

from keycore import errors
from keycore.crypto.rootkey import RootKeyring
from keycore.unseal import current_root_key_text, load_root_key

CONFIG_SECRETS = "kms-config-secrets"
#: a shared vendor key's credentials: another purpose, so a blob cannot be moved between the two kinds of row
VENDOR_KEY_SECRETS = "vendor-key-secrets"


@cache
def root_keyring() -> RootKeyring:
    """The process's root keys, unwrapped by their KMS the first time (keycore/unseal.py); memory only."""
    current = load_root_key(current_root_key_text())
    previous = [load_root_key(text) for text in settings.KEYCORE_ROOT_KEY_PREVIOUS]
    return RootKeyring(current, previous)


def sealing_purpose(row) -> str:
    """What a row's sealed secrets are sealed for: a tenant's configuration or a shared vendor key."""
    meta = getattr(row, "_meta", None)  # a bulk seeder seals for rows not built yet (any object with a uid)
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
#
# allauth asks for ``encrypt(text)`` before the authenticator row exists and ``decrypt(text)`` without
# saying whose it is, so the binding happens around the row (``keycore.signals``):
#
# * ``seal_mfa_secret`` seals under a *pending* context: a value only ever held in memory between
#   allauth's ``encrypt`` and the row's first save;
# * ``bind_mfa_secrets`` (before every save of an ``Authenticator``) re-seals pending values under the
#   row's user and kind: ``kcmfa:<user id>:<kind>:<base64 blob>``, the user id and kind being in the
#   sealing context, so a changed claim fails to unseal;
# * ``refuse_misplaced_mfa_secrets`` (when a row is loaded) compares the claim with the row's own user and
#   kind: a blob copied from user A's row into user B's answers to no code of A's.
#
# Per user and kind is per authenticator: a user has at most one TOTP and one set of recovery codes.

MFA_PURPOSE = "mfa-secret"
#: a bound MFA secret inside allauth's JSON: ``kcmfa:<user id>:<kind>:<base64 blob>``
MFA_MARKER = "kcmfa:"
#: sealed, not yet bound to a row: only in memory, between allauth's encrypt() and the row's save
MFA_PENDING_MARKER = "kcpending:"
#: KeyCore 0.x sealed every MFA secret under one context; migrated to bound values, refused when read
MFA_LEGACY_MARKER = "kcsealed:"
MFA_LEGACY_CONTEXT = "allauth"
#: what a value found in the wrong row becomes in memory
MFA_MISPLACED_MARKER = "kcmisplaced:"
_PENDING_CONTEXT = "pending"
#: where allauth keeps sealed values in an authenticator's JSON
MFA_SEALED_FIELDS = ("secret", "seed", "migrated_codes")

log = logging.getLogger(__name__)


def mfa_context(user_id: int, kind: str) -> str:
    return f"user:{int(user_id)}/authenticator:{kind}"


def seal_mfa_secret(text: str) -> str:
    """allauth's encrypt(): sealed, pending its row (bound by ``bind_mfa_secrets`` before it is stored)."""
    sealed = root_keyring().seal(text.encode(), purpose=MFA_PURPOSE, context=_PENDING_CONTEXT)
    return MFA_PENDING_MARKER + base64.b64encode(sealed).decode()


def _bound(user_id: int, kind: str, blob: bytes) -> str:
    return f"{MFA_MARKER}{int(user_id)}:{kind}:{base64.b64encode(blob).decode()}"


def parse_bound_mfa_secret(stored: str) -> tuple[int, str, bytes]:
    """(user id, kind, sealed blob) of a bound value; ValueError if it is not one."""
    if not stored.startswith(MFA_MARKER):
        raise ValueError("Not a bound MFA secret.")
    user_id, kind, blob = stored[len(MFA_MARKER) :].split(":", 2)
    return int(user_id), kind, base64.b64decode(blob)


def bind_mfa_secret(stored: str, *, user_id: int, kind: str) -> str:
    """A pending (or legacy) value re-sealed under its row's user and kind; anything else unchanged."""
    keyring = root_keyring()
    if stored.startswith(MFA_PENDING_MARKER):
        blob = base64.b64decode(stored[len(MFA_PENDING_MARKER) :])
        text = keyring.unseal(blob, purpose=MFA_PURPOSE, context=_PENDING_CONTEXT)
    elif stored.startswith(MFA_LEGACY_MARKER):
        blob = base64.b64decode(stored[len(MFA_LEGACY_MARKER) :])
        text = keyring.unseal(blob, purpose=MFA_PURPOSE, context=MFA_LEGACY_CONTEXT)
    else:
        return stored
    return _bound(user_id, kind, keyring.seal(text, purpose=MFA_PURPOSE, context=mfa_context(user_id, kind)))


def _map_sealed(data, fn):
    """``data`` (an authenticator's JSON) with ``fn`` applied to each sealed string value."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name in MFA_SEALED_FIELDS:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = fn(value)
        elif isinstance(value, list):
            out[name] = [fn(item) if isinstance(item, str) else item for item in value]
    return out


def bind_mfa_secrets(data, *, user_id: int, kind: str):
    return _map_sealed(data, lambda value: bind_mfa_secret(value, user_id=user_id, kind=kind))


def refuse_misplaced_mfa_secrets(data, *, user_id: int, kind: str):
    """``data`` with every bound value whose claim is not (``user_id``, ``kind``) made unusable."""

    def check(value: str) -> str:
        if value.startswith(MFA_MARKER):
            try:
                claimed = parse_bound_mfa_secret(value)[:2]
            except (ValueError, binascii.Error):
                claimed = None
            if claimed != (int(user_id), kind):
                log.error(
                    "An MFA secret bound to %s was found in the %s authenticator of user %s.", claimed, kind, user_id
                )
                return MFA_MISPLACED_MARKER
        return value

    return _map_sealed(data, check)


def unseal_mfa_secret(stored: str) -> str:
    """allauth's decrypt(). A value from another row (or a legacy, unbound one) opens to a secret nobody knows,
    so every code is refused (allauth has no way to refuse a read; an error here would be a 500 at sign-in)."""
    if stored.startswith(MFA_PENDING_MARKER):
        raise ValueError("An MFA secret was read before its authenticator was saved.")
    if stored.startswith(MFA_MARKER):
        try:
            user_id, kind, blob = parse_bound_mfa_secret(stored)
            return root_keyring().unseal(blob, purpose=MFA_PURPOSE, context=mfa_context(user_id, kind)).decode()
        except (ValueError, binascii.Error, errors.AuthenticationFailed):
            pass  # altered: refused below
    log.error("Refusing an MFA secret that is not bound to its authenticator (%s).", stored.split(":", 1)[0])
    return base64.b32encode(secrets.token_bytes(20)).decode()
