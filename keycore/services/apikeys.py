"""API keys: created in the vendor portal or by a management command, shown once, stored hashed.

A key reads ``kc_<prefix>_<secret>``. Only the prefix (for lookup) and a SHA-256 of
the whole key are stored; the API's authentication compares that hash in constant time.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from keycore import errors
from keycore.models import ApiKey, Tenant
from keycore.models.api import ApiScope
from keycore.services.audit import Actor, audit_record

KEY_PREFIX = "kc"
PREFIX_BYTES = 6
SECRET_BYTES = 32


def hash_key(raw: str) -> str:
    """What is stored of a key, and what a presented key is compared with."""
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """(full key, lookup prefix). The full key is shown once and never stored."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    return f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}", prefix


def parse_prefix(raw: str) -> str | None:
    """The lookup prefix of a presented key, or None when it is not shaped like one of ours."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def api_key_mark_used(*, key: ApiKey, at: datetime) -> None:
    """Stamp ``last_used_at`` (not audited: a use of a key is not a change to it)."""
    key.last_used_at = at
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=at)


def _clean_scopes(scopes) -> list[str]:
    scopes = sorted(set(scopes or []))
    unknown = [s for s in scopes if s not in ApiScope.values]
    if unknown or not scopes:
        raise errors.InvalidInput(
            f"Choose scopes from {', '.join(ApiScope.values)}.",
            field_errors={"scopes": ["Choose at least one known scope."]},
        )
    return scopes


def api_key_create(
    *,
    name: str,
    scopes: list[str],
    actor: Actor,
    tenants: list[Tenant] | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it and the secret, which is never shown again."""
    with transaction.atomic():
        key, raw = _insert_key(name=name, scopes=scopes, actor=actor, tenants=tenants, expires_at=expires_at)
        audit_record(
            actor=actor,
            action="api_key.created",
            target=key,
            changes={
                "scopes": [None, key.scopes],
                "tenants": [None, [t.external_id for t in tenants or []]],
                "expires_at": [None, expires_at.isoformat() if expires_at else None],
            },
        )
    return key, raw


def _insert_key(
    *, name: str, scopes: list[str], actor: Actor, tenants: list[Tenant] | None, expires_at: datetime | None
) -> tuple[ApiKey, str]:
    name = (name or "").strip()
    if not name:
        raise errors.InvalidInput("Give the key a name.", field_errors={"name": ["Required."]})
    scopes = _clean_scopes(scopes)
    if tenants and scopes != [ApiScope.CRYPTO]:
        raise errors.InvalidInput(
            "Only crypto-scoped keys can be limited to some tenants.", field_errors={"tenants": ["Crypto keys only."]}
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise errors.InvalidInput("The expiry must be in the future.", field_errors={"expires_at": ["In the past."]})
    raw, prefix = generate_key()
    key = ApiKey.objects.create(
        name=name[:120],
        prefix=prefix,
        key_hash=hash_key(raw),
        scopes=scopes,
        expires_at=expires_at,
        created_by=actor.user if actor.user is not None and actor.user.pk else None,
    )
    if tenants:
        key.tenants.set(tenants)
    return key, raw


def api_key_revoke(*, key: ApiKey, actor: Actor) -> ApiKey:
    with transaction.atomic():
        key = ApiKey.objects.select_for_update(no_key=True).get(pk=key.pk)
        if key.revoked_at is not None:
            raise errors.Conflict("This API key is already revoked.")
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="api_key.revoked", target=key, changes={"revoked": [False, True]})
    return key


def api_key_rotate(*, key: ApiKey, actor: Actor) -> tuple[ApiKey, str]:
    """A new key with the same name, scopes, tenants and expiry; the old one is revoked at once.

    One audit event (``api_key.rotated`` on the new key, naming the one it replaces): a rotation
    is one action, not a creation plus a revocation.
    """
    with transaction.atomic():
        key = ApiKey.objects.select_for_update(no_key=True).get(pk=key.pk)
        if key.revoked_at is not None:
            raise errors.Conflict("A revoked key cannot be rotated; create a new one.")
        new, raw = _insert_key(
            name=key.name,
            scopes=key.scopes,
            actor=actor,
            tenants=list(key.tenants.all()) or None,
            expires_at=key.expires_at if key.expires_at and key.expires_at > timezone.now() else None,
        )
        new.rotated_from = key
        new.save(update_fields=["rotated_from"])
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            action="api_key.rotated",
            target=new,
            changes={"replaces": [None, key.prefix], "revoked": [None, str(key.uid)], "scopes": [None, new.scopes]},
        )
    return new, raw


def api_key_lookup(value: str) -> tuple[str, Any]:
    """("prefix" or "uid", value) for an API key given as shown (``kc_<prefix>…``), by its prefix, or by its id."""
    value = value.strip()
    try:
        return "uid", uuid.UUID(value)
    except ValueError:
        pass
    if value.startswith("kc_"):
        value = value[3:]
    return "prefix", value.split("_", 1)[0].rstrip("…").strip()
