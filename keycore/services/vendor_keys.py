"""Vendor keys: the vendor's own named keys ("EU AWS key", "US HSM"), each shared by many tenants.

A :class:`~keycore.models.VendorKey` holds a provider's settings and sealed
credentials once; every tenant it serves has a vendor-owned ``KmsConfig`` that
references it, so the per-tenant rules (one primary, states, history, the kill
switch, sovereignty) stay where they are. What lives here:

* creating, testing and health-checking a vendor key, replacing its credentials,
  making it the default for new tenants, retiring it once it serves nobody;
* :func:`vendor_key_config_for`, the tenant's configuration under a vendor key
  (used by tenant creation and by the move job);
* :func:`vendor_key_resolve`, how a request names a vendor key (uid or name).

Nothing here calls a tenant's own KMS or changes a tenant's own configuration.
Moving tenants onto a vendor key is a rekey job (``keycore/services/jobs/vendor_key_move.py``).
A vendor key never replaces a tenant's own key: tenants that own theirs are refused
(``vendor.refused`` on their chain) by that job's start.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from keycore import errors
from keycore.models import KmsConfig, Tenant, TenantKeyWrap, VendorKey
from keycore.models.keys import ConfigOwner, ConfigState, TenantKeyState, VendorKeyState
from keycore.models.tenants import Health
from keycore.providers.base import HealthResult, WrapContext
from keycore.providers.registry import get_provider_class
from keycore.sealing import seal_secrets, unseal_secrets
from keycore.services.audit import Actor, audit_record
from keycore.services.keyring import build_provider, bump_epoch, provider_for_vendor_key
from keycore.services.summary import tenant_summary_sync

#: the tenant named in a vendor key's probes: no tenant has this uid, so a probe wrap opens no tenant's data
PROBE_TENANT = uuid.UUID(int=0)


def _probe_context(vendor_key_uid: str = "new") -> WrapContext:
    return WrapContext(PROBE_TENANT.hex, "vendor-key-probe", vendor_key_uid, 0)


def vendor_key_test_connection(*, provider: str, settings_: dict[str, Any], secrets: dict[str, str]) -> HealthResult:
    """Check a vendor key before it is saved: reachable, credentials accepted, wrap and unwrap work."""
    cls = get_provider_class(provider)
    clean_settings, clean_secrets = cls.clean(settings_, secrets)
    clean_secrets = {**cls.generate_secrets(), **clean_secrets}
    instance = build_provider(provider, ConfigOwner.VENDOR, clean_settings, clean_secrets)
    try:
        return instance.check(_probe_context())
    finally:
        instance.close()


def vendor_key_create(
    *,
    name: str,
    provider: str,
    settings_: dict[str, Any],
    secrets: dict[str, str],
    actor: Actor,
    rate_limit: int = 0,
    make_default: bool = False,
) -> VendorKey:
    """Add a named vendor key after a wrap and unwrap through it succeeded (the local provider's KEK is made here)."""
    cls = get_provider_class(provider)
    if not cls.vendor_may_create:
        raise errors.InvalidInput(f"{cls.label} keys can only be brought by a tenant.")
    name = " ".join((name or "").split())
    if not name:
        raise errors.InvalidInput("A vendor key needs a name.", field_errors={"name": ["A name is required."]})
    clean_settings, clean_secrets = cls.clean(settings_, secrets)
    clean_secrets = {**cls.generate_secrets(), **clean_secrets}
    vendor_key = VendorKey(
        name=name[:120],
        provider=provider,
        settings=clean_settings,
        rate_limit=max(0, int(rate_limit or 0)),
        created_by=actor.user if actor.user is not None and actor.user.pk else None,
    )
    instance = build_provider(provider, ConfigOwner.VENDOR, clean_settings, clean_secrets)
    try:
        result = instance.check(_probe_context(vendor_key.uid.hex))
    finally:
        instance.close()
    if not result.ok:
        raise errors.InvalidInput(
            f"Test connection failed: {result.detail}",
            field_errors={"__all__": [result.detail]},
            code_hint=result.error_code,
        )
    now = timezone.now()
    vendor_key.health, vendor_key.health_detail = Health.OK, result.detail[:500]
    vendor_key.health_checked_at = vendor_key.last_success_at = now
    vendor_key.health_latency_ms = result.latency_ms
    seal_secrets(vendor_key, clean_secrets)
    try:
        with transaction.atomic():
            vendor_key.save()
            audit_record(
                actor=actor,
                action="vendor_key.created",
                target=vendor_key,
                changes={
                    "name": [None, vendor_key.name],
                    "provider": [None, vendor_key.provider],
                    "settings": [None, clean_settings],
                    "secrets": [None, "(set)" if clean_secrets else "(none)"],
                },
            )
            if make_default:
                _set_default(vendor_key, actor)
    except IntegrityError as exc:
        if VendorKey.objects.filter(name=vendor_key.name).exists():
            raise errors.Conflict(
                f"A vendor key named {vendor_key.name!r} exists.", field_errors={"name": ["Already in use."]}
            ) from exc
        raise
    return vendor_key


def vendor_key_resolve(reference: str) -> VendorKey:
    """The active vendor key a request names, by uid or by exact name."""
    reference = (reference or "").strip()
    found = VendorKey.objects.filter(state=VendorKeyState.ACTIVE)
    try:
        found = found.filter(Q(uid=uuid.UUID(reference)) | Q(name=reference))
    except ValueError:
        found = found.filter(name=reference)
    vendor_key = found.first()
    if vendor_key is None:
        raise errors.InvalidInput(
            f"No active vendor key {reference!r}.", field_errors={"vendor_key": ["No such active vendor key."]}
        )
    return vendor_key


def vendor_key_default() -> VendorKey | None:
    """The vendor key new tenants get, or None (then each new tenant gets a software KEK of its own)."""
    return VendorKey.objects.filter(is_default=True, state=VendorKeyState.ACTIVE).first()


def _set_default(vendor_key: VendorKey | None, actor: Actor) -> None:
    before = VendorKey.objects.select_for_update().filter(is_default=True).first()
    if before is not None and vendor_key is not None and before.pk == vendor_key.pk:
        return
    VendorKey.objects.filter(is_default=True).update(is_default=False, updated_at=timezone.now())
    if vendor_key is not None:
        VendorKey.objects.filter(pk=vendor_key.pk).update(is_default=True, updated_at=timezone.now())
        vendor_key.is_default = True
    audit_record(
        actor=actor,
        action="vendor_key.made_default",
        target=vendor_key if vendor_key is not None else before,
        changes={"default": [before.name if before else None, vendor_key.name if vendor_key else None]},
    )


def vendor_key_make_default(*, vendor_key: VendorKey | None, actor: Actor) -> VendorKey | None:
    """Make ``vendor_key`` the key of every new tenant (None: new tenants get a software KEK of their own)."""
    with transaction.atomic():
        if vendor_key is not None:
            vendor_key = VendorKey.objects.select_for_update().get(pk=vendor_key.pk)
            if vendor_key.state != VendorKeyState.ACTIVE:
                raise errors.Conflict(f"{vendor_key.name} is retired.")
        _set_default(vendor_key, actor)
    return vendor_key


def vendor_key_replace_secrets(*, vendor_key: VendorKey, secrets: dict[str, str], actor: Actor) -> VendorKey:
    """Replace a vendor key's credentials (write-only) after a test; every tenant it serves uses the new ones."""
    cls = get_provider_class(vendor_key.provider)
    merged = {**unseal_secrets(vendor_key), **{k: v for k, v in secrets.items() if v}}
    clean_settings, clean_secrets = cls.clean(vendor_key.settings, merged)
    if "kek" in unseal_secrets(vendor_key):  # KeyCore made this KEK: replacing it would orphan every wrap
        clean_secrets["kek"] = unseal_secrets(vendor_key)["kek"]
    instance = build_provider(vendor_key.provider, ConfigOwner.VENDOR, clean_settings, clean_secrets)
    try:
        result = instance.check(_probe_context(vendor_key.uid.hex))
    finally:
        instance.close()
    if not result.ok:
        raise errors.InvalidInput(f"Test connection failed: {result.detail}", field_errors={"__all__": [result.detail]})
    read = bytes(vendor_key.sealed_secrets or b"")
    with transaction.atomic():
        locked = VendorKey.objects.select_for_update().get(pk=vendor_key.pk)
        if bytes(locked.sealed_secrets or b"") != read:
            raise errors.Conflict(f"The credentials of {vendor_key.name} changed meanwhile; try again.")
        seal_secrets(locked, clean_secrets)
        locked.save(update_fields=["sealed_secrets", "secret_fields_set", "updated_at"])
        audit_record(
            actor=actor,
            action="vendor_key.secrets_replaced",
            target=locked,
            changes={"secrets": ["(set)", "(replaced)"]},
        )
        bump_epoch()
    return locked


def vendor_key_retire(*, vendor_key: VendorKey, actor: Actor) -> VendorKey:
    """Stop offering a vendor key: only once no tenant key is wrapped under it (move its tenants first)."""
    with transaction.atomic():
        vendor_key = VendorKey.objects.select_for_update().get(pk=vendor_key.pk)
        if vendor_key.state == VendorKeyState.RETIRED:
            raise errors.Conflict(f"{vendor_key.name} is already retired.")
        if vendor_key.is_default:
            raise errors.Conflict(f"{vendor_key.name} is the default for new tenants; choose another default first.")
        wrapped = (
            TenantKeyWrap.objects.filter(kms_config__vendor_key=vendor_key)
            .exclude(tenant_key__state=TenantKeyState.DESTROYED)
            .count()
        )
        if wrapped:
            raise errors.Conflict(
                f"{wrapped} tenant key version(s) are still wrapped under {vendor_key.name}: "
                "move its tenants to another vendor key first."
            )
        live = KmsConfig.objects.filter(vendor_key=vendor_key).exclude(
            state__in=[ConfigState.RETIRED, ConfigState.DESTROYED]
        )
        if live.filter(is_primary=True).exists():
            raise errors.Conflict(f"{vendor_key.name} is still a tenant's primary key: move its tenants first.")
        live.update(state=ConfigState.RETIRED, state_changed_at=timezone.now())
        vendor_key.state = VendorKeyState.RETIRED
        vendor_key.save(update_fields=["state", "updated_at"])
        audit_record(
            actor=actor,
            action="vendor_key.retired",
            target=vendor_key,
            changes={"state": [VendorKeyState.ACTIVE, VendorKeyState.RETIRED]},
        )
        bump_epoch()
    return vendor_key


def vendor_key_record_health(*, vendor_key: VendorKey, result: HealthResult) -> None:
    """Store a health check of the vendor key on it and on every configuration that uses it."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "health": Health.OK if result.ok else Health.FAILING,
        "health_detail": result.detail[:500],
        "health_checked_at": now,
        "health_latency_ms": result.latency_ms,
        "last_success_at" if result.ok else "last_failure_at": now,
    }
    with transaction.atomic():
        before = VendorKey.objects.select_for_update().filter(pk=vendor_key.pk).values_list("health", flat=True).first()
        VendorKey.objects.filter(pk=vendor_key.pk).update(**fields)
        configs = KmsConfig.objects.filter(vendor_key=vendor_key).exclude(
            state__in=[ConfigState.RETIRED, ConfigState.DESTROYED]
        )
        configs.update(**fields)
        if before != fields["health"]:
            # each served tenant's summary (KMS health, key status) and the dashboard's counts, by the one rule;
            # only on a change of health: a check that confirms what is stored moves nothing
            for served in Tenant.objects.filter(kms_configs__in=configs).distinct().only("pk").iterator():
                tenant_summary_sync(tenant=served)
        if before is not None and before != fields["health"]:
            audit_record(
                actor=Actor.system("health-check"),
                action="vendor_key.health_changed",
                target=vendor_key,
                changes={"health": [before, fields["health"]], "detail": [None, result.detail[:300]]},
            )
    for name, value in fields.items():
        setattr(vendor_key, name, value)


def vendor_key_check(*, vendor_key: VendorKey) -> HealthResult:
    """Health-check a vendor key now (wrap and unwrap a probe through its KMS) and record it."""
    try:
        result = provider_for_vendor_key(vendor_key).check(_probe_context(vendor_key.uid.hex))
    except errors.KeyCoreError as exc:
        result = HealthResult(False, exc.detail, 0.0, exc.code)
    vendor_key_record_health(vendor_key=vendor_key, result=result)
    return result


def vendor_key_config_for(*, tenant: Tenant, vendor_key: VendorKey, actor: Actor) -> KmsConfig:
    """The tenant's live configuration under ``vendor_key``, created (not primary) if it has none.

    Called inside the caller's transaction with the tenant locked. No KMS call: the
    vendor key was tested when it was created and is health-checked since.
    """
    config = (
        KmsConfig.objects.filter(tenant=tenant, vendor_key=vendor_key)
        .exclude(state__in=[ConfigState.RETIRED, ConfigState.DESTROYED])
        .first()
    )
    if config is not None:
        return config
    if vendor_key.state != VendorKeyState.ACTIVE:
        raise errors.Conflict(f"{vendor_key.name} is retired.")
    has_primary = KmsConfig.objects.filter(tenant=tenant, is_primary=True).exists()
    config = KmsConfig.objects.create(
        tenant=tenant,
        owner=ConfigOwner.VENDOR,
        provider=vendor_key.provider,
        name=vendor_key.name,
        settings=vendor_key.settings,
        vendor_key=vendor_key,
        rate_limit=vendor_key.rate_limit,
        health=vendor_key.health,
        health_detail=vendor_key.health_detail,
        health_checked_at=vendor_key.health_checked_at,
        state=ConfigState.ACTIVE,
        is_primary=not has_primary,
        created_by=actor.user if actor.user is not None and actor.user.pk else None,
    )
    audit_record(
        actor=actor,
        action="kms_config.created",
        tenant=tenant,
        target=config,
        changes={
            "provider": [None, config.provider],
            "owner": [None, ConfigOwner.VENDOR],
            "vendor_key": [None, vendor_key.name],
        },
    )
    return config
