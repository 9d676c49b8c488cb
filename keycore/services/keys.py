"""Key services: KMS configurations and tenant keys — every change to them, audited where it happens.

Rules that live here and nowhere else:

* every tenant has exactly one primary configuration (a partial unique index
  enforces "at most one"; these services never leave "none");
* a tenant key is wrapped under the primary configuration when created, and may
  carry wraps under several configurations during a transition;
* which action a configuration allows in which state, and to whom, is asked of
  :func:`keycore.key_rules.kms_config_allowed_actions` (the portals and the API ask
  the same function before they show an action); a vendor's attempt that tenant
  sovereignty refuses is recorded on the tenant's chain first (``vendor.refused``);
* every change that must empty key caches bumps the revocation epoch in the same
  transaction (:mod:`keycore.services.keyring`, which also reaches the keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone

from keycore import errors
from keycore.crypto.envelope import key_check_value, new_tenant_key
from keycore.egress import check_tenant_egress
from keycore.key_rules import (
    CHECK,
    DECRYPT_ONLY,
    DESTROY,
    DISABLE,
    MAKE_PRIMARY,
    REENABLE,
    REPLACE_SECRETS,
    RETIRE,
    REVOKE,
    kms_config_allowed_actions,
)
from keycore.models import KmsConfig, Tenant, TenantKey, TenantKeyWrap
from keycore.models.keys import UNWRAP_STATES, ConfigOwner, ConfigState, HistoryAction, TenantKeyState
from keycore.models.tenants import Health, TenantStatus
from keycore.providers.base import HealthResult, WrapContext
from keycore.providers.registry import get_provider_class
from keycore.sealing import seal_secrets, unseal_secrets
from keycore.services.audit import Actor, audit_record
from keycore.services.jobs import job_start_rewrap
from keycore.services.keyring import (
    build_provider,
    bump_epoch,
    cache_tenant_key,
    key_history_record,
    provider_for,
    wrap_context,
)
from keycore.services.kms_quota import kms_acquire
from keycore.services.sovereignty import guard, refuse, vendor_key_replacement_refusal
from keycore.services.summary import tenant_summary_sync

# --- configurations --------------------------------------------------------------------


def kms_config_test_connection(
    *,
    tenant: Tenant,
    provider: str,
    settings_: dict[str, Any],
    secrets: dict[str, str],
    uid=None,
    owner: str = ConfigOwner.TENANT,
) -> HealthResult:
    """Check a configuration before it is saved: reachable, credentials accepted, wrap and unwrap work.

    A tenant's configuration must also pass the operator's egress policy (keycore/egress.py).
    """
    cls = get_provider_class(provider)
    if owner == ConfigOwner.TENANT:
        check_tenant_egress(cls, settings_)
    clean_settings, clean_secrets = cls.clean(settings_, secrets)
    instance = build_provider(provider, owner, clean_settings, clean_secrets)
    try:
        context = WrapContext(tenant.uid.hex, tenant.external_id, (uid.hex if uid else "new"), 0)
        return instance.check(context)
    finally:
        instance.close()


@dataclass(frozen=True)
class ConfigInput:
    provider: str
    name: str
    settings: dict[str, Any]
    secrets: dict[str, str]
    rate_limit: int = 0


def kms_config_create(
    *,
    tenant: Tenant,
    owner: str,
    data: ConfigInput,
    actor: Actor,
    make_primary: bool = False,
    skip_check: bool = False,
) -> KmsConfig:
    """Add a configuration after testing it. The first one of a tenant becomes primary.

    A configuration is only saved when a wrap and unwrap through it succeed
    (``skip_check`` exists for the local provider, whose key KeyCore generates).
    """
    if owner == ConfigOwner.TENANT:
        guard(
            actor=actor,
            tenant=tenant,
            attempted="kms_config.create",
            reason=f"Only {tenant.name}'s administrators can bring its own key.",
        )
    elif make_primary:  # refused before anything is created, not after
        guard(
            actor=actor,
            tenant=tenant,
            attempted="kms_config.make_primary",
            reason=vendor_key_replacement_refusal(tenant),
        )
    cls = get_provider_class(data.provider)
    if owner == ConfigOwner.TENANT and not cls.tenant_may_create:
        raise errors.InvalidInput(
            f"{cls.label} keys are provided by the vendor.", field_errors={"provider": ["Not available."]}
        )
    if owner == ConfigOwner.VENDOR and not cls.vendor_may_create:
        raise errors.InvalidInput(f"{cls.label} keys can only be brought by the tenant.")
    if owner == ConfigOwner.TENANT:
        check_tenant_egress(cls, data.settings)
    clean_settings, clean_secrets = cls.clean(data.settings, data.secrets)
    clean_secrets = {**cls.generate_secrets(), **clean_secrets}
    name = (data.name or "").strip() or cls.label
    config = KmsConfig(
        tenant=tenant,
        owner=owner,
        provider=data.provider,
        name=name[:120],
        settings=clean_settings,
        rate_limit=max(0, int(data.rate_limit or 0)),
        created_by=actor.user if actor.user is not None and actor.user.pk else None,
        state=ConfigState.ACTIVE,
    )
    instance = build_provider(data.provider, owner, clean_settings, clean_secrets)
    description = instance.describe()
    if not skip_check:
        try:
            result = instance.check(wrap_context(config, tenant))
        finally:
            instance.close()
        if not result.ok:
            raise errors.InvalidInput(
                f"Test connection failed: {result.detail}",
                field_errors={"__all__": [result.detail]},
                code_hint=result.error_code,
            )
        config.health, config.health_detail = Health.OK, result.detail[:500]
        config.health_checked_at = config.last_success_at = timezone.now()
        config.health_latency_ms = result.latency_ms
    seal_secrets(config, clean_secrets)
    with transaction.atomic():
        Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
        has_primary = KmsConfig.objects.filter(tenant=tenant, is_primary=True).exists()
        config.is_primary = not has_primary
        config.save()
        key_history_record(tenant, config, HistoryAction.CREATED, actor, description)
        audit_record(
            actor=actor,
            action="kms_config.created",
            tenant=tenant,
            target=config,
            changes={
                "provider": [None, config.provider],
                "owner": [None, owner],
                "settings": [None, clean_settings],
                "secrets": [None, "(set)" if clean_secrets else "(none)"],
            },
        )
        if config.is_primary:
            key_history_record(tenant, config, HistoryAction.MADE_PRIMARY, actor, "first configuration of the tenant")
        tenant_summary_sync(tenant=tenant)
    if make_primary and not config.is_primary:
        kms_config_make_primary(config=config, actor=actor)
        config.refresh_from_db()
    return config


def kms_config_replace_secrets(*, config: KmsConfig, secrets: dict[str, str], actor: Actor) -> KmsConfig:
    """Replace credentials (write-only: the old ones are never shown, only overwritten) after a test."""
    _refuse_the_vendor(config, actor, REPLACE_SECRETS, "kms_config.secrets_replaced")
    if config.vendor_key_id:
        raise errors.Conflict(
            f"{config.name} uses a shared vendor key: replace the credentials of the vendor key itself."
        )
    cls = get_provider_class(config.provider)
    merged = {**unseal_secrets(config), **{k: v for k, v in secrets.items() if v}}
    clean_settings, clean_secrets = cls.clean(config.settings, merged)
    instance = build_provider(config.provider, config.owner, clean_settings, clean_secrets)
    try:
        result = instance.check(wrap_context(config, config.tenant))
    finally:
        instance.close()
    if not result.ok:
        raise errors.InvalidInput(f"Test connection failed: {result.detail}", field_errors={"__all__": [result.detail]})
    read = bytes(config.sealed_secrets or b"")
    with transaction.atomic():
        # a KEK rotation may have re-sealed the secrets since they were read: never write back stale ones
        if bytes(_locked(config).sealed_secrets or b"") != read:
            raise errors.Conflict(f"The secrets of {config.name} changed meanwhile; try again.")
        seal_secrets(config, clean_secrets)
        config.save(update_fields=["sealed_secrets", "secret_fields_set", "updated_at"])
        audit_record(
            actor=actor,
            action="kms_config.secrets_replaced",
            tenant=config.tenant,
            target=config,
            changes={"secrets": ["(set)", "(replaced)"]},
        )
        bump_epoch()
    return config


def _refuse_the_vendor(config: KmsConfig, actor: Actor, action: str, attempted: str) -> None:
    """Before the service's own transaction: a refusal by tenant sovereignty is recorded on the tenant's chain
    (committed, so the tenant sees the attempt) and raised. Every other refusal is raised under lock."""
    refusal = kms_config_allowed_actions(config, actor).refusal(action)
    if refusal is not None and refusal.sovereignty:
        raise refuse(actor=actor, tenant=config.tenant, attempted=attempted, reason=refusal.reason, target=config)


def _set_state(config: KmsConfig, state: str, actor: Actor, action: str, history: str, detail: str = "") -> KmsConfig:
    before = config.state
    config.state = state
    config.state_changed_at = timezone.now()
    config.save(update_fields=["state", "state_changed_at", "updated_at"])
    key_history_record(config.tenant, config, history, actor, detail)
    audit_record(actor=actor, action=action, tenant=config.tenant, target=config, changes={"state": [before, state]})
    tenant_summary_sync(tenant=config.tenant)
    bump_epoch()
    return config


def _locked(config: KmsConfig) -> KmsConfig:
    return KmsConfig.objects.select_for_update(of=("self",), no_key=True).select_related("tenant").get(pk=config.pk)


def kms_config_make_primary(*, config: KmsConfig, actor: Actor):
    """Make ``config`` the tenant's primary key and start the job that moves tenant keys under it.

    The previous primary becomes decrypt-only (never deleted) until the job has
    rewrapped every tenant key. When the tenant's own key becomes primary, a new
    tenant-key version is created inside this operation, wrapped only under that
    key: new data is under a version the vendor never held. The vendor may never
    put its key in place of the tenant's (keycore/services/sovereignty.py).
    Returns the started rekey job.
    """
    _refuse_the_vendor(config, actor, MAKE_PRIMARY, "kms_config.make_primary")
    with transaction.atomic():
        config = _locked(config)
        tenant = config.tenant
        old = KmsConfig.objects.select_for_update(no_key=True).filter(tenant=tenant, is_primary=True).first()
        # again under lock: the state may have changed, and the tenant may have brought its key since the check above
        kms_config_allowed_actions(config, actor).enforce(MAKE_PRIMARY)
        if old is not None:
            old.is_primary = False
            if old.state == ConfigState.ACTIVE:
                old.state = ConfigState.DECRYPT_ONLY
                old.state_changed_at = timezone.now()
            old.save(update_fields=["is_primary", "state", "state_changed_at", "updated_at"])
        config.is_primary = True
        config.state = ConfigState.ACTIVE
        config.state_changed_at = timezone.now()
        config.save(update_fields=["is_primary", "state", "state_changed_at", "updated_at"])
        key_history_record(tenant, config, HistoryAction.MADE_PRIMARY, actor, f"replacing {old.name}" if old else "")
        audit_record(
            actor=actor,
            action="kms_config.made_primary",
            tenant=tenant,
            target=config,
            changes={"primary": [old.name if old else None, config.name]},  # names: the trail is read by people
        )
        tenant_summary_sync(tenant=tenant)
        bump_epoch()
        if config.owner == ConfigOwner.TENANT:
            # a version only the tenant's KMS ever wrapped: everything encrypted from now on is under it
            tenant_key_create(tenant=tenant, actor=actor, primary=config)
        job = job_start_rewrap(tenant=tenant, source=old, target=config, actor=actor)
    return job


def kms_config_decrypt_only(*, config: KmsConfig, actor: Actor) -> KmsConfig:
    _refuse_the_vendor(config, actor, DECRYPT_ONLY, "kms_config.decrypt_only")
    with transaction.atomic():
        config = _locked(config)
        kms_config_allowed_actions(config, actor).enforce(DECRYPT_ONLY)
        return _set_state(
            config, ConfigState.DECRYPT_ONLY, actor, "kms_config.decrypt_only", HistoryAction.DECRYPT_ONLY
        )


def kms_config_disable(*, config: KmsConfig, actor: Actor) -> KmsConfig:
    _refuse_the_vendor(config, actor, DISABLE, "kms_config.disable")
    with transaction.atomic():
        config = _locked(config)
        kms_config_allowed_actions(config, actor).enforce(DISABLE)
        return _set_state(
            config,
            ConfigState.DISABLED,
            actor,
            "kms_config.disabled",
            HistoryAction.DISABLED,
            "tenant keys wrapped under it cannot be used until re-enabled",
        )


def kms_config_revoke(*, config: KmsConfig, actor: Actor) -> KmsConfig:
    """The kill switch: every tenant key wrapped under this key stops working everywhere within seconds."""
    _refuse_the_vendor(config, actor, REVOKE, "kms_config.revoke")
    with transaction.atomic():
        config = _locked(config)
        kms_config_allowed_actions(config, actor).enforce(REVOKE)
        return _set_state(
            config,
            ConfigState.REVOKED,
            actor,
            "kms_config.revoked",
            HistoryAction.REVOKED,
            "encrypt and decrypt refused for data under this key",
        )


def kms_config_reenable(*, config: KmsConfig, actor: Actor) -> KmsConfig:
    """Undo disable/revoke. The primary key comes back active; any other comes back decrypt-only."""
    _refuse_the_vendor(config, actor, REENABLE, "kms_config.reenable")
    with transaction.atomic():
        config = _locked(config)
        kms_config_allowed_actions(config, actor).enforce(REENABLE)
        state = ConfigState.ACTIVE if config.is_primary else ConfigState.DECRYPT_ONLY
        return _set_state(config, state, actor, "kms_config.reenabled", HistoryAction.REENABLED)


def kms_config_retire(*, config: KmsConfig, actor: Actor) -> KmsConfig:
    """Stop using a vendor-provided key for good: only once no tenant key depends on it alone."""
    with transaction.atomic():
        config = _locked(config)
        kms_config_allowed_actions(config, actor).enforce(RETIRE)
        sole = _keys_wrapped_only_under(config)
        if sole:
            raise errors.Conflict(
                f"{len(sole)} tenant key version(s) are wrapped only under {config.name}; "
                "wait for the rekey job to move them, then retire."
            )
        TenantKeyWrap.objects.filter(kms_config=config).delete()
        return _set_state(config, ConfigState.RETIRED, actor, "kms_config.retired", HistoryAction.RETIRED)


def kms_config_destroy(*, config: KmsConfig, actor: Actor) -> KmsConfig:
    """Crypto-shred a vendor-provided key: its sealed KEK and credentials and its wraps are deleted.

    Tenant keys left with no wrap become unrecoverable and are marked destroyed;
    so does every piece of data under them.
    """
    with transaction.atomic():
        config = _locked(config)
        kms_config_allowed_actions(config, actor).enforce(DESTROY)
        leaving = config.tenant.status in (TenantStatus.OFFBOARDING, TenantStatus.OFFBOARDED)
        orphaned = _keys_wrapped_only_under(config)
        if orphaned and not leaving:
            raise errors.Conflict(
                f"{len(orphaned)} tenant key version(s) of {config.tenant.name} are wrapped only under {config.name}: "
                "destroying it would destroy that data. Only an offboarding tenant's keys are crypto-shredded; "
                "otherwise wait for the rekey job to move them, then retire the key."
            )
        TenantKeyWrap.objects.filter(kms_config=config).delete()
        now = timezone.now()
        TenantKey.objects.filter(pk__in=orphaned).update(state=TenantKeyState.DESTROYED, destroyed_at=now)
        config.sealed_secrets = None
        config.secret_fields_set = []
        config.save(update_fields=["sealed_secrets", "secret_fields_set", "updated_at"])
        if config.is_primary:
            config.state = ConfigState.REVOKED  # a primary cannot be 'destroyed'; nothing under it can be read
            config.save(update_fields=["state", "updated_at"])
            key_history_record(
                config.tenant, config, HistoryAction.DESTROYED, actor, f"{len(orphaned)} tenant key(s) shredded"
            )
            audit_record(
                actor=actor,
                action="kms_config.destroyed",
                tenant=config.tenant,
                target=config,
                changes={"state": ["primary", "shredded"]},
            )
            tenant_summary_sync(tenant=config.tenant)
            bump_epoch()
            return config
        return _set_state(
            config,
            ConfigState.DESTROYED,
            actor,
            "kms_config.destroyed",
            HistoryAction.DESTROYED,
            f"{len(orphaned)} tenant key(s) shredded",
        )


def _keys_wrapped_only_under(config: KmsConfig) -> list[int]:
    """Ids of live tenant keys whose only usable wrap is under ``config``."""
    ids = list(
        TenantKeyWrap.objects.filter(kms_config=config)
        .exclude(tenant_key__state=TenantKeyState.DESTROYED)
        .values_list("tenant_key_id", flat=True)
    )
    if not ids:
        return []
    covered = set(
        TenantKeyWrap.objects.filter(tenant_key_id__in=ids, kms_config__state__in=UNWRAP_STATES)
        .exclude(kms_config=config)
        .values_list("tenant_key_id", flat=True)
    )
    return [i for i in ids if i not in covered]


def kms_config_record_health(*, config: KmsConfig, result: HealthResult) -> None:
    """Store the outcome of a health check (periodic or on demand) for the portals."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "health": Health.OK if result.ok else Health.FAILING,
        "health_detail": result.detail[:500],
        "health_checked_at": now,
        "health_latency_ms": result.latency_ms,
    }
    fields["last_success_at" if result.ok else "last_failure_at"] = now
    with transaction.atomic():
        before = (
            KmsConfig.objects.select_for_update(no_key=True)
            .filter(pk=config.pk)
            .values_list("health", flat=True)
            .first()
        )
        KmsConfig.objects.filter(pk=config.pk).update(**fields)
        tenant_summary_sync(tenant=config.tenant)
        if before is not None and before != fields["health"]:
            # a transition (not every check) is a security event the tenant sees: its KMS stopped or resumed working
            audit_record(
                actor=Actor.system("health-check"),
                action="kms_config.health_changed",
                tenant=config.tenant,
                target=config,
                changes={"health": [before, fields["health"]], "detail": [None, result.detail[:300]]},
            )


def kms_config_check(*, config: KmsConfig, actor: Actor | None = None) -> HealthResult:
    """Run a health check now (wrap and unwrap a probe through the KMS) and record it.

    A retired or destroyed configuration has nothing left to check (Conflict). ``actor``
    defaults to KeyCore's own schedule.
    """
    kms_config_allowed_actions(config, actor or Actor.system("health-check")).enforce(CHECK)
    try:
        provider = provider_for(config)
        result = provider.check(wrap_context(config, config.tenant))
    except errors.KeyCoreError as exc:
        result = HealthResult(False, exc.detail, 0.0, exc.code)
    kms_config_record_health(config=config, result=result)
    return result


# --- tenant keys -------------------------------------------------------------------------


def tenant_key_create(*, tenant: Tenant, actor: Actor, primary: KmsConfig | None = None) -> TenantKey:
    """A new tenant-key version, wrapped under the primary configuration; new data uses it."""
    with transaction.atomic():
        Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
        primary = primary or KmsConfig.objects.get(tenant=tenant, is_primary=True)
        if primary.state != ConfigState.ACTIVE:
            raise errors.KeyUnavailable(f"The primary key {primary.name} is {primary.get_state_display().lower()}.")
        version = (TenantKey.objects.filter(tenant=tenant).aggregate(v=Max("version"))["v"] or 0) + 1
        raw = new_tenant_key()
        wrapped = provider_for(primary).wrap(raw, wrap_context(primary, tenant, version))
        key = TenantKey.objects.create(
            tenant=tenant,
            version=version,
            check_value=key_check_value(raw),
            vendor_held=primary.owner == ConfigOwner.VENDOR,
        )
        TenantKeyWrap.objects.create(tenant_key=key, kms_config=primary, wrapped=wrapped, verified_at=timezone.now())
        if version > 1:
            key_history_record(tenant, primary, HistoryAction.KEY_ROTATED, actor, f"tenant key v{version}")
        audit_record(
            actor=actor,
            action="tenant_key.created",
            tenant=tenant,
            target=key,
            target_repr=f"tenant key v{version}",
            changes={"version": [None, version]},
        )
        bump_epoch()
    cache_tenant_key(tenant, version, raw)
    return key


# --- scheduled tenant-key rotation ----------------------------------------------------------------


def tenants_due_for_rotation(now=None) -> list[int]:
    """Ids of active tenants whose newest tenant key is older than their ``key_rotation_days``.

    Set-based: one query per distinct rotation period (there are a handful), each
    a scan of tenants with a per-tenant index lookup of the newest version.
    """
    now = now or timezone.now()
    tenants = Tenant.objects.filter(
        status=TenantStatus.ACTIVE,
        key_rotation_days__gt=0,
        kms_configs__is_primary=True,
        kms_configs__state=ConfigState.ACTIVE,
    )
    newest = (
        TenantKey.objects.filter(tenant=OuterRef("pk"))
        .exclude(state=TenantKeyState.DESTROYED)
        .order_by("-version")
        .values("created_at")[:1]
    )
    due: list[int] = []
    for days in tenants.values_list("key_rotation_days", flat=True).distinct().order_by():
        due += list(
            tenants.filter(key_rotation_days=days)
            .annotate(newest=Subquery(newest))
            .filter(newest__lte=now - timedelta(days=days))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    return due


def tenant_key_rotate_if_due(*, tenant_id: int, now=None) -> TenantKey | None:
    """Create the tenant's next key version if it is (still) due; idempotent under re-delivery."""
    now = now or timezone.now()
    primary = KmsConfig.objects.filter(tenant_id=tenant_id, is_primary=True).first()
    if primary is None:
        return None
    kms_acquire(primary, 2)
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=tenant_id)
        if tenant.status != TenantStatus.ACTIVE or not tenant.key_rotation_days:
            return None
        newest = (
            TenantKey.objects.filter(tenant=tenant)
            .exclude(state=TenantKeyState.DESTROYED)
            .order_by("-version")
            .values_list("created_at", flat=True)
            .first()
        )
        if newest is not None and newest > now - timedelta(days=tenant.key_rotation_days):
            return None
        return tenant_key_create(tenant=tenant, actor=Actor.system("key-rotation-schedule"))
