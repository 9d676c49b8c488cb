"""Tenant services: tenants, members and invitations. Writes only; reads are in selectors."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from keycore import errors
from keycore.crypto.envelope import key_check_value, new_tenant_key
from keycore.key_status import ConfigFacts, key_status_of
from keycore.models import (
    Invitation,
    KeyHistoryEntry,
    KmsConfig,
    Membership,
    Tenant,
    TenantKey,
    TenantKeyWrap,
    User,
    VendorKey,
    VendorStaff,
)
from keycore.models.keys import ConfigOwner, ConfigState, HistoryAction, VendorKeyState
from keycore.models.tenants import Health, InvitationAudience, KeyOwnership, TenantStatus, external_id_validator
from keycore.providers.base import WrapContext
from keycore.providers.registry import get_provider_class
from keycore.roles import Cap, TenantRole, VendorRole, tenant_role_may_grant, vendor_can
from keycore.sealing import seal_secrets
from keycore.services.audit import Actor, audit_record, audit_record_rows, diff
from keycore.services.bulk_writes import field_defaults, insert_rows, insert_rows_with_ids
from keycore.services.keyring import build_provider, bump_epoch, key_history_record, provider_for_vendor_key
from keycore.services.keys import ConfigInput, kms_config_create, kms_config_destroy, tenant_key_create
from keycore.services.sovereignty import (
    TENANT_SETTINGS,
    guard,
    is_vendor,
    tenant_has_owner,
    vendor_members_refusal,
    vendor_settings_refusal,
)
from keycore.services.summary import tenant_counts_add, tenant_summary_sync
from keycore.services.vendor_keys import vendor_key_config_for, vendor_key_default

# --- tenants ---------------------------------------------------------------------------


def validate_external_id(value: str) -> str:
    value = (value or "").strip()
    try:
        external_id_validator(value)
    except ValidationError as exc:
        raise errors.InvalidInput(exc.messages[0], field_errors={"external_id": exc.messages}) from exc
    return value


def validate_name(value: str) -> str:
    value = " ".join((value or "").split())
    if not value:
        raise errors.InvalidInput("A name is required.", field_errors={"name": ["A name is required."]})
    if len(value) > 200:
        raise errors.InvalidInput("The name is too long.", field_errors={"name": ["At most 200 characters."]})
    return value


@dataclass(frozen=True)
class AdminInvite:
    email: str
    role: str = TenantRole.OWNER


def tenant_create(
    *,
    external_id: str,
    name: str,
    actor: Actor,
    admins: list[AdminInvite] | tuple = (),
    send: bool = True,
    vendor_key: VendorKey | None = None,
) -> Tenant:
    """Create a tenant with a working key from the first moment.

    In one transaction: the tenant, its vendor-provided configuration, which
    becomes primary, its first tenant key, invitations for its first admins, and
    the audit events. Invitation emails go out after commit. The configuration
    uses ``vendor_key``, else the default vendor key, else (no vendor key at all)
    a software KEK of the tenant's own.
    """
    external_id = validate_external_id(external_id)
    name = validate_name(name)
    vendor_key = vendor_key or vendor_key_default()
    _require_active(vendor_key)
    for invite in admins:
        _validate_invite(invite.email, invite.role, audience=InvitationAudience.TENANT)
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(external_id=external_id, name=name, status_changed_at=timezone.now())
            tenant_summary_sync(tenant=tenant, created=True)  # counted from its first moment (no key yet)
            audit_record(
                actor=actor,
                action="tenant.created",
                tenant=tenant,
                target=tenant,
                changes={"external_id": [None, external_id], "name": [None, name]},
            )
            if vendor_key is not None:
                config = vendor_key_config_for(tenant=tenant, vendor_key=vendor_key, actor=actor)
                key_history_record(tenant, config, HistoryAction.CREATED, actor, f"shared vendor key {vendor_key.name}")
                key_history_record(tenant, config, HistoryAction.MADE_PRIMARY, actor, "first configuration")
                tenant_summary_sync(tenant=tenant)  # its key status and counts move off "disabled" (no key yet)
            else:
                config = kms_config_create(
                    tenant=tenant,
                    owner=ConfigOwner.VENDOR,
                    data=ConfigInput(provider="local", name="Vendor-provided key", settings={}, secrets={}),
                    actor=actor,
                )
            tenant_key_create(tenant=tenant, actor=actor, primary=config)
            for invite in admins:
                invitation_create(tenant=tenant, email=invite.email, role=invite.role, actor=actor, send=send)
    except IntegrityError as exc:
        if Tenant.objects.filter(external_id=external_id).exists():
            raise errors.Conflict(
                f"A tenant with external id {external_id!r} already exists.",
                field_errors={"external_id": ["Already in use."]},
            ) from exc
        raise
    tenant.refresh_from_db()
    return tenant


@dataclass(frozen=True)
class NewTenant:
    external_id: str
    name: str
    admins: tuple[AdminInvite, ...] = ()
    #: the shared vendor key to place the tenant under; None: the default vendor key, else a KEK of its own
    vendor_key: VendorKey | None = None


def tenant_create_many(
    *, items: list[NewTenant], actor: Actor, send: bool = True
) -> list[Tenant | errors.KeyCoreError]:
    """Create many tenants at once, each exactly as :func:`tenant_create` leaves it; one result per item, in order.

    Each valid item gets what ``tenant_create`` gives it — the tenant; its vendor-provided configuration,
    primary: under the item's vendor key, else the default vendor key (no KEK of its own, no KMS call),
    else a local one with a KEK of its own sealed under the root key and tested by a wrap and unwrap;
    tenant key v1 wrapped under it, the two key-history entries, the ``tenant.created``,
    ``kms_config.created`` and ``tenant_key.created`` events on the tenant's own chain, its summary columns
    and key status, its place in the dashboard's counts, and invitations for its first admins — but
    set-based: a few statements per table for the whole batch, in one transaction, one update of the
    counts and one move of the revocation epoch instead of one per tenant. An invalid item, a retired
    vendor key, or an external id already taken (or repeated in the batch), is that item's typed error;
    the others are created.
    """
    results: list[Tenant | errors.KeyCoreError | None] = [None] * len(items)
    wanted: list[tuple[int, str, str, tuple[AdminInvite, ...], VendorKey | None]] = []
    seen: set[str] = set()
    default = vendor_key_default() if any(item.vendor_key is None for item in items) else None
    for index, item in enumerate(items):
        vendor_key = item.vendor_key or default
        try:
            external_id = validate_external_id(item.external_id)
            name = validate_name(item.name)
            _require_active(vendor_key)
            for invite in item.admins:
                _validate_invite(invite.email, invite.role, audience=InvitationAudience.TENANT)
        except errors.KeyCoreError as exc:
            results[index] = exc
            continue
        if external_id in seen:
            results[index] = _taken(external_id)
            continue
        seen.add(external_id)
        wanted.append((index, external_id, name, tuple(item.admins), vendor_key))
    taken = _taken_ids(seen)
    for index, external_id, *_rest in wanted:
        if external_id in taken:
            results[index] = _taken(external_id)
    wanted = [w for w in wanted if w[1] not in taken]
    if not wanted:
        return results
    try:
        with transaction.atomic():
            created = _create_set(wanted, actor, send)
    except IntegrityError:
        # another request took one of the ids meanwhile: each item on its own, as tenant_create decides
        created = {}
        for index, external_id, name, admins, vendor_key in wanted:
            try:
                created[index] = tenant_create(
                    external_id=external_id,
                    name=name,
                    admins=list(admins),
                    actor=actor,
                    send=send,
                    vendor_key=vendor_key,
                )
            except errors.KeyCoreError as exc:
                created[index] = exc
    for index, outcome in created.items():
        results[index] = outcome
    return results


def _require_active(vendor_key: VendorKey | None) -> None:
    """A retired vendor key places no new tenant (the refusal ``tenant_create`` gives)."""
    if vendor_key is not None and vendor_key.state != VendorKeyState.ACTIVE:
        raise errors.InvalidInput(
            f"{vendor_key.name} is retired.", field_errors={"vendor_key": ["No such active vendor key."]}
        )


def _taken_ids(external_ids: set[str]) -> set[str]:
    """Which of these external ids are in use (as of now: another request may take one before we insert)."""
    return set(Tenant.objects.filter(external_id__in=list(external_ids)).values_list("external_id", flat=True))


def _taken(external_id: str) -> errors.Conflict:
    return errors.Conflict(
        f"A tenant with external id {external_id!r} already exists.", field_errors={"external_id": ["Already in use."]}
    )


def _summary(vendor_key: VendorKey | None) -> dict[str, str]:
    """A new tenant's summary columns, by the rule ``tenant_summary_sync`` applies: its one configuration is
    primary, active, vendor-owned, and as healthy as the vendor key (a local one was just tested: ok)."""
    health = vendor_key.health if vendor_key is not None else Health.OK.value
    facts = ConfigFacts(owner=ConfigOwner.VENDOR, state=ConfigState.ACTIVE, health=health, is_primary=True)
    return {
        "key_ownership": KeyOwnership.VENDOR.value,
        "primary_provider": vendor_key.provider if vendor_key is not None else VENDOR_PROVIDER,
        "health": health,
        "key_status": key_status_of(tenant_status=TenantStatus.ACTIVE, configs=[facts]).value,
    }


def _create_set(wanted, actor: Actor, send: bool) -> dict[int, Tenant]:
    """The rows of :func:`tenant_create_many`, in the caller's transaction."""
    now = timezone.now()
    # enum members' .value costs a property lookup each time: once here, not once per tenant
    vendor, active = ConfigOwner.VENDOR.value, ConfigState.ACTIVE.value
    created_action, primary_action = HistoryAction.CREATED.value, HistoryAction.MADE_PRIMARY.value
    created_by = actor.user.pk if actor.user is not None and actor.user.pk else None
    summaries = {None: _summary(None)}
    for *_rest, vendor_key in wanted:
        if vendor_key is not None and vendor_key.pk not in summaries:
            summaries[vendor_key.pk] = _summary(vendor_key)
    tenant_defaults = field_defaults(Tenant, now)
    tenants = [
        {
            **tenant_defaults,
            "uid": uuid.uuid4(),
            "external_id": external_id,
            "name": name,
            **summaries[vendor_key.pk if vendor_key is not None else None],
            "created_at": now,
            "status_changed_at": now,
        }
        for _index, external_id, name, _admins, vendor_key in wanted
    ]
    insert_rows_with_ids(Tenant, tenants)
    config_defaults = field_defaults(KmsConfig, now)
    configs, raws, descriptions, providers = [], [], [], []
    cls = get_provider_class(VENDOR_PROVIDER)
    for tenant, (*_rest, vendor_key) in zip(tenants, wanted, strict=True):
        row = {
            **config_defaults,
            "uid": uuid.uuid4(),
            "tenant_id": tenant["id"],
            "owner": vendor,
            "created_by_id": created_by,
            "state": active,
            "is_primary": True,
            "created_at": now,
        }
        if vendor_key is not None:
            # what vendor_key_config_for writes: the shared key's settings and health, no secret of its own and
            # no KMS call (the vendor key was tested when it was made and is health-checked since)
            row.update(
                provider=vendor_key.provider,
                name=vendor_key.name,
                settings=vendor_key.settings,
                vendor_key_id=vendor_key.pk,
                rate_limit=vendor_key.rate_limit,
                health=vendor_key.health,
                health_detail=vendor_key.health_detail,
                health_checked_at=vendor_key.health_checked_at,
            )
            configs.append(row)
            providers.append(provider_for_vendor_key(vendor_key))
            descriptions.append(f"shared vendor key {vendor_key.name}")
            continue
        clean_settings, clean_secrets = cls.clean({}, {})
        clean_secrets = {**cls.generate_secrets(), **clean_secrets}
        row.update(provider=VENDOR_PROVIDER, name=VENDOR_CONFIG_NAME, settings=clean_settings)
        instance = build_provider(VENDOR_PROVIDER, vendor, clean_settings, clean_secrets)
        result = instance.check(WrapContext(tenant["uid"].hex, tenant["external_id"], row["uid"].hex, 0))
        if not result.ok:
            raise errors.InvalidInput(f"Test connection failed: {result.detail}", code_hint=result.error_code)
        row.update(
            health=Health.OK.value,
            health_detail=result.detail[:500],
            health_checked_at=now,
            last_success_at=now,
            health_latency_ms=result.latency_ms,
        )
        sealed = _Sealed(row["uid"])
        seal_secrets(sealed, clean_secrets)
        row["sealed_secrets"], row["secret_fields_set"] = sealed.sealed_secrets, sealed.secret_fields_set
        configs.append(row)
        providers.append(instance)
        descriptions.append(instance.describe())
    insert_rows_with_ids(KmsConfig, configs)
    key_defaults = field_defaults(TenantKey, now)
    keys = []
    for tenant in tenants:
        raw = new_tenant_key()
        raws.append(raw)
        keys.append(
            {
                **key_defaults,
                "tenant_id": tenant["id"],
                "version": 1,
                "check_value": key_check_value(raw),
                "vendor_held": True,
                "created_at": now,
            }
        )
    insert_rows_with_ids(TenantKey, keys)
    wrap_defaults = field_defaults(TenantKeyWrap, now)
    history_defaults = field_defaults(KeyHistoryEntry, now)
    wraps, history, events = [], [], []
    for tenant, config, key, raw, provider, description in zip(
        tenants, configs, keys, raws, providers, descriptions, strict=True
    ):
        context = WrapContext(tenant["uid"].hex, tenant["external_id"], config["uid"].hex, 1)
        wraps.append(
            {
                **wrap_defaults,
                "tenant_key_id": key["id"],
                "kms_config_id": config["id"],
                "wrapped": provider.wrap(raw, context),
                "created_at": now,
                "verified_at": now,
            }
        )
        shared = config["vendor_key_id"] is not None
        common = {
            **history_defaults,
            "tenant_id": tenant["id"],
            "kms_config_id": config["id"],
            "config_name": config["name"],
            "config_owner": vendor,
            "config_provider": config["provider"],
            "actor_label": actor.label[:200],
            "at": now,
        }
        history.append({**common, "action": created_action, "detail": description[:300]})
        first = "first configuration" if shared else "first configuration of the tenant"  # as each path words it
        history.append({**common, "action": primary_action, "detail": first})
        ext, name = tenant["external_id"], tenant["name"]
        if shared:
            config_changes = {
                "provider": [None, config["provider"]],
                "owner": [None, vendor],
                "vendor_key": [None, config["name"]],
            }
        else:
            config_changes = {
                "provider": [None, config["provider"]],
                "owner": [None, vendor],
                "settings": [None, config["settings"]],
                "secrets": [None, "(set)" if config["secret_fields_set"] else "(none)"],
            }
        events += [
            (
                tenant["id"],
                "tenant.created",
                "tenant",
                str(tenant["uid"]),
                f"{name} ({ext})",
                {"external_id": [None, ext], "name": [None, name]},
            ),
            (
                tenant["id"],
                "kms_config.created",
                "kmsconfig",
                str(config["uid"]),
                f"{config['name']} ({config['provider']}, {active})",
                config_changes,
            ),
            (
                tenant["id"],
                "tenant_key.created",
                "tenantkey",
                str(key["id"]),
                "tenant key v1",
                {"version": [None, 1]},
            ),
        ]
    insert_rows(TenantKeyWrap, wraps)
    insert_rows(KeyHistoryEntry, history)
    audit_record_rows(actor=actor, rows=events, new_chains=True)  # the tenants are this transaction's own
    tenant_counts_add(tenants)  # the dashboard's counts: one update per counted value for the whole call
    bump_epoch()
    created: dict[int, Tenant] = {}
    for (index, _external_id, _name, admins, _vendor_key), row in zip(wanted, tenants, strict=True):
        tenant = Tenant(**row)
        tenant._state.adding = False
        for invite in admins:
            invitation_create(tenant=tenant, email=invite.email, role=invite.role, actor=actor, send=send)
        created[index] = tenant
    return created


class _Sealed:
    """What ``seal_secrets`` needs of a configuration row: its uid, its kind (a tenant's configuration: the
    purpose its secrets are sealed for), and room for the sealed blob."""

    _meta = KmsConfig._meta

    def __init__(self, uid) -> None:
        self.uid = uid
        self.sealed_secrets = None
        self.secret_fields_set = None


#: the provider and name of the vendor-provided configuration every new tenant starts with
VENDOR_PROVIDER, VENDOR_CONFIG_NAME = "local", "Vendor-provided key"


def tenant_update(*, tenant: Tenant, actor: Actor, **changes) -> Tenant:
    """Change a tenant's name and settings (``external_id`` is immutable: the vendor's apps address it).

    The tenant's own settings (retention, MFA, key-cache bound, retirement, detailed events) are the vendor's
    to set only until the tenant has an owner; the rotation period only while the tenant has no key of its own.
    Switching ``key_cache_seconds`` or ``detailed_events`` moves the revocation epoch, so every process takes
    the new value within the revocation poll (its cached tenant lookups and keys are dropped).
    """
    allowed = {"name", "key_rotation_days", *TENANT_SETTINGS}
    unknown = set(changes) - allowed
    if unknown:
        raise errors.InvalidInput(f"Cannot change {', '.join(sorted(unknown))}.")
    guard(
        actor=actor,
        tenant=tenant,
        attempted="tenant.update",
        reason=vendor_settings_refusal(tenant, changes),
    )
    if "name" in changes:
        changes["name"] = validate_name(changes["name"])
    _check_range(changes, "key_rotation_days", 1, 3650, "Rotation period must be 1–3650 days.", nullable=True)
    _check_range(changes, "event_retention_days", 1, 3650, "Retention must be 1–3650 days.")
    _check_range(
        changes,
        "key_cache_seconds",
        KEY_CACHE_SECONDS_MIN,
        KEY_CACHE_SECONDS_MAX,
        f"A key may stay in memory {KEY_CACHE_SECONDS_MIN}–{KEY_CACHE_SECONDS_MAX} seconds.",
        nullable=True,
    )
    _check_range(changes, "retire_idle_days", 1, 3650, "The idle period must be 1–3650 days.", nullable=True)
    for flag in ("require_mfa", "auto_retire_versions", "detailed_events"):
        if flag in changes and not isinstance(changes[flag], bool):
            raise errors.InvalidInput(f"{flag} is true or false.", field_errors={flag: ["true or false."]})
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
        before = {k: getattr(tenant, k) for k in changes}
        for key, value in changes.items():
            setattr(tenant, key, value)
        tenant.save()
        delta = diff(before, changes)
        if delta:
            audit_record(actor=actor, action="tenant.updated", tenant=tenant, target=tenant, changes=delta)
            if {"key_cache_seconds", "detailed_events"} & set(delta):
                bump_epoch()
    return tenant


#: the bound a tenant may set on how long a KeyCore process keeps one of its unwrapped keys
KEY_CACHE_SECONDS_MIN, KEY_CACHE_SECONDS_MAX = 30, 300


def _check_range(changes: dict, name: str, low: int, high: int, message: str, *, nullable: bool = False) -> None:
    if name not in changes:
        return
    value = changes[name]
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise errors.InvalidInput(message, field_errors={name: [f"{low}–{high}."]})


_TRANSITIONS = {
    "suspend": ({TenantStatus.ACTIVE}, TenantStatus.SUSPENDED),
    "reactivate": ({TenantStatus.SUSPENDED, TenantStatus.OFFBOARDING}, TenantStatus.ACTIVE),
    "offboard": ({TenantStatus.ACTIVE, TenantStatus.SUSPENDED}, TenantStatus.OFFBOARDING),
}


def tenant_set_status(*, tenant: Tenant, transition: str, actor: Actor, reason: str = "") -> Tenant:
    """Suspend, reactivate or offboard a tenant. Crypto for a tenant that is not active is refused.

    Offboarding starts a grace period (``KEYCORE_OFFBOARD_GRACE_DAYS``) after which the
    tenant's vendor-provided keys may be crypto-shredded.
    """
    if transition not in _TRANSITIONS:
        raise errors.InvalidInput(f"Unknown action {transition!r}.")
    allowed_from, target = _TRANSITIONS[transition]
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
        if tenant.status not in allowed_from:
            raise errors.Conflict(f"{tenant.name} is {tenant.get_status_display().lower()}; cannot {transition}.")
        before = tenant.status
        tenant.status = target
        tenant.status_changed_at = timezone.now()
        tenant.shred_after = (
            timezone.now() + timedelta(days=settings.KEYCORE_OFFBOARD_GRACE_DAYS)
            if target == TenantStatus.OFFBOARDING
            else None
        )
        tenant.shred_early_requested_by = None  # a new offboarding needs a new request
        tenant.shred_early_requested_at = None
        tenant.shred_early_reason = ""
        tenant.save(
            update_fields=[
                "status",
                "status_changed_at",
                "shred_after",
                "updated_at",
                "shred_early_requested_by",
                "shred_early_requested_at",
                "shred_early_reason",
            ]
        )
        tenant_summary_sync(tenant=tenant, status_before=before)
        changes = {"status": [before, target]}
        if reason:
            changes["reason"] = [None, reason[:300]]
        audit_record(actor=actor, action=f"tenant.{transition}", tenant=tenant, target=tenant, changes=changes)
        bump_epoch()
    return tenant


def _require_shredder(actor: Actor, *, person: bool = False) -> None:
    """Crypto-shredding is for vendor administrators (``Cap.SHRED``), never operators.

    A system actor (a management command, run by whoever holds the servers) passes unless ``person``:
    dual control needs two people, so requesting and approving always name one.
    """
    if actor.user is None:
        if person:
            raise errors.PermissionDenied("Shredding early needs two vendor administrators, each signed in.")
        return
    staff = VendorStaff.objects.filter(user=actor.user, is_active=True).first()
    if staff is None or not vendor_can(staff.role, Cap.SHRED):
        raise errors.PermissionDenied("Only vendor administrators may crypto-shred a tenant's keys.")


def shred_state(tenant: Tenant, user=None) -> dict:
    """What may happen to an offboarding tenant's vendor-provided keys now, and for ``user`` (both portals' one
    source for which shred buttons to show): ``grace_over``, ``pending`` (an early shred asked, not yet
    approved), ``may_request``, ``may_approve`` (another administrator's request)."""
    now = timezone.now()
    offboarding = tenant.status == TenantStatus.OFFBOARDING
    grace_over = tenant.status == TenantStatus.OFFBOARDED or (
        offboarding and tenant.shred_after is not None and tenant.shred_after <= now
    )
    pending = offboarding and tenant.shred_early_requested_at is not None and not grace_over
    staff = VendorStaff.objects.filter(user=user, is_active=True).first() if user is not None else None
    admin = staff is not None and vendor_can(staff.role, Cap.SHRED)
    return {
        "grace_over": grace_over,
        "pending": pending,
        "may_shred": admin and grace_over,
        "may_request": admin and offboarding and not grace_over and not pending,
        "may_approve": admin and pending and tenant.shred_early_requested_by_id != getattr(user, "pk", None),
    }


def tenant_shred_early_request(*, tenant: Tenant, actor: Actor, reason: str = "") -> Tenant:
    """An administrator asks to end an offboarding tenant's grace period now; another must approve it."""
    _require_shredder(actor, person=True)
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
        state = shred_state(tenant)
        if tenant.status != TenantStatus.OFFBOARDING or state["grace_over"]:
            raise errors.Conflict("Only an offboarding tenant still in its grace period can be shredded early.")
        if state["pending"]:
            raise errors.Conflict("Shredding early has already been asked for; another administrator must approve.")
        tenant.shred_early_requested_by = actor.user
        tenant.shred_early_requested_at = timezone.now()
        tenant.shred_early_reason = (reason or "")[:300]
        tenant.save(update_fields=["shred_early_requested_by", "shred_early_requested_at", "shred_early_reason"])
        changes = {"shred_after": [tenant.shred_after.isoformat(), None]}
        if reason:
            changes["reason"] = [None, tenant.shred_early_reason]
        audit_record(actor=actor, action="tenant.shred_early_requested", tenant=tenant, target=tenant, changes=changes)
    return tenant


def tenant_shred_early_approve(*, tenant: Tenant, actor: Actor) -> Tenant:
    """A second administrator approves another's request: the grace period ends now (dual control)."""
    _require_shredder(actor, person=True)
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
        if not shred_state(tenant)["pending"]:
            raise errors.Conflict("Nobody has asked to shred this tenant's keys early.")
        if tenant.shred_early_requested_by_id == actor.user.pk:
            raise errors.PermissionDenied("You asked for this: another administrator must approve it.")
        requester = tenant.shred_early_requested_by
        before, now = tenant.shred_after, timezone.now()
        tenant.shred_after = now
        tenant.shred_early_requested_by = None
        tenant.shred_early_requested_at = None
        tenant.shred_early_reason = ""
        tenant.save(
            update_fields=["shred_after", "shred_early_requested_by", "shred_early_requested_at", "shred_early_reason"]
        )
        changes = {
            "shred_after": [before.isoformat(), now.isoformat()],
            "requested_by": [None, requester.email if requester else "(a removed account)"],
        }
        audit_record(actor=actor, action="tenant.shred_early_approved", tenant=tenant, target=tenant, changes=changes)
    return tenant


def tenant_shred(*, tenant: Tenant, actor: Actor) -> int:
    """Crypto-shred an offboarding tenant's vendor-provided keys, once its grace period is over.

    Vendor administrators only. There is no way to skip the grace period here: shortening it takes
    two administrators (``tenant_shred_early_request`` and ``tenant_shred_early_approve``).
    """
    _require_shredder(actor)
    tenant = Tenant.objects.get(pk=tenant.pk)
    if tenant.status not in (TenantStatus.OFFBOARDING, TenantStatus.OFFBOARDED):
        raise errors.Conflict("Only an offboarding tenant's keys can be shredded.")
    if not shred_state(tenant)["grace_over"]:
        raise errors.Conflict(
            f"The grace period runs until {tenant.shred_after:%Y-%m-%d %H:%M} UTC. To shred earlier, one "
            "administrator asks for it and another approves."
        )
    count = 0
    with transaction.atomic():
        configs = (
            KmsConfig.objects.for_tenant(tenant).filter(owner=ConfigOwner.VENDOR).exclude(state=ConfigState.DESTROYED)
        )
        for config in configs:
            kms_config_destroy(config=config, actor=actor)
            count += 1
        # the status as it stands now, locked (it may have moved since it was read above): the counts move from it
        before = Tenant.objects.select_for_update(no_key=True).values_list("status", flat=True).get(pk=tenant.pk)
        Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.OFFBOARDED, status_changed_at=timezone.now())
        tenant_summary_sync(tenant=tenant, status_before=before)
        audit_record(
            actor=actor,
            action="tenant.shredded",
            tenant=tenant,
            target=tenant,
            changes={"status": [before, TenantStatus.OFFBOARDED], "configs_destroyed": [None, count]},
        )
    return count


# --- invitations ----------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: the longest address SMTP can deliver to (RFC 5321's 256-octet path, less its angle brackets)
EMAIL_MAX_LENGTH = 254


def _validate_invite(email: str, role: str, *, audience: str) -> str:
    email = (email or "").strip().lower()
    if len(email) > EMAIL_MAX_LENGTH:
        raise errors.InvalidInput(
            f"An email address has at most {EMAIL_MAX_LENGTH} characters.",
            field_errors={"email": [f"At most {EMAIL_MAX_LENGTH} characters."]},
        )
    try:
        validate_email(email)
    except ValidationError as exc:
        raise errors.InvalidInput(
            f"{email or 'An empty address'} is not a valid email address.",
            field_errors={"email": ["Enter a valid email address."]},
        ) from exc
    roles = TenantRole.values if audience == InvitationAudience.TENANT else VendorRole.values
    if role not in roles:
        raise errors.InvalidInput(
            f"Unknown role {role!r}.", field_errors={"role": [f"Choose one of {', '.join(roles)}."]}
        )
    return email


def invitation_create(
    *, email: str, role: str, actor: Actor, tenant: Tenant | None = None, send: bool = True
) -> tuple[Invitation, str]:
    """Invite someone to a tenant (or, without a tenant, to the vendor's staff).

    Returns the invitation and the one-time token (only its hash is stored). A
    pending invitation for the same address is revoked and replaced.
    """
    audience = InvitationAudience.TENANT if tenant is not None else InvitationAudience.VENDOR
    email = _validate_invite(email, role, audience=audience)
    # the vendor onboards a tenant's first owner; once it has one, a vendor invitation waits for an owner's approval
    needs_approval = tenant is not None and is_vendor(actor, tenant) and tenant_has_owner(tenant)
    if tenant is not None:
        _require_may_grant(tenant, actor, role)
    if tenant is not None and Membership.objects.filter(tenant=tenant, user__email__iexact=email).exists():
        raise errors.Conflict(
            f"{email} is already a member of {tenant.name}.", field_errors={"email": ["Already a member."]}
        )
    if tenant is None and VendorStaff.objects.filter(user__email__iexact=email, is_active=True).exists():
        raise errors.Conflict(f"{email} is already on the vendor's staff.", field_errors={"email": ["Already staff."]})
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        Invitation.objects.filter(
            tenant=tenant, audience=audience, email=email, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=now)
        invitation = Invitation.objects.create(
            audience=audience,
            tenant=tenant,
            email=email,
            role=role,
            token_hash=_token_hash(token),
            created_by=actor.user if actor.user is not None and actor.user.pk else None,
            created_by_label=actor.label[:200],
            expires_at=now + timedelta(hours=settings.KEYCORE_INVITATION_TTL_HOURS),
            awaiting_approval=needs_approval,
        )
        audit_record(
            actor=actor,
            action="invitation.requested" if needs_approval else "invitation.created",
            tenant=tenant,
            target=invitation,
            target_repr=f"{email} as {role}",
            changes={"email": [None, email], "role": [None, role]},
        )
        if needs_approval:
            return invitation, ""  # no usable link exists until an owner approves
        if send:
            transaction.on_commit(lambda: _send_invitation(invitation, token))
    return invitation, token


def invitation_approve(*, invitation: Invitation, actor: Actor) -> tuple[Invitation, str]:
    """An owner lets a vendor-requested invitation go out: a fresh link is made and sent (recovery path)."""
    tenant = invitation.tenant
    if tenant is None or _granter_role(tenant, actor) != TenantRole.OWNER:
        raise errors.PermissionDenied("Only an owner of the tenant can approve an invitation the vendor asked for.")
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = Invitation.objects.select_for_update(no_key=True).get(pk=invitation.pk)
        if not invitation.awaiting_approval or invitation.revoked_at or invitation.accepted_at:
            raise errors.Conflict(f"This invitation is {invitation.state}; there is nothing to approve.")
        now = timezone.now()
        invitation.awaiting_approval = False
        invitation.approved_by = actor.user
        invitation.approved_at = now
        invitation.token_hash = _token_hash(token)
        invitation.expires_at = now + timedelta(hours=settings.KEYCORE_INVITATION_TTL_HOURS)
        invitation.save(update_fields=["awaiting_approval", "approved_by", "approved_at", "token_hash", "expires_at"])
        audit_record(
            actor=actor,
            action="invitation.approved",
            tenant=tenant,
            target=invitation,
            target_repr=f"{invitation.email} as {invitation.role}",
            changes={"requested_by": [None, invitation.created_by_label]},
        )
        transaction.on_commit(lambda: _send_invitation(invitation, token))
    return invitation, token


def invitation_resend(*, invitation: Invitation, actor: Actor) -> tuple[Invitation, str]:
    """Send a fresh link (the old link stops working) and restart the expiry clock."""
    if invitation.state in ("accepted", "revoked"):
        raise errors.Conflict(f"This invitation was {invitation.state}; create a new one.")
    if invitation.awaiting_approval:
        raise errors.Conflict("This invitation waits for an owner of the tenant to approve it; there is no link yet.")
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation.token_hash = _token_hash(token)
        invitation.expires_at = timezone.now() + timedelta(hours=settings.KEYCORE_INVITATION_TTL_HOURS)
        invitation.save(update_fields=["token_hash", "expires_at"])
        audit_record(
            actor=actor,
            action="invitation.resent",
            tenant=invitation.tenant,
            target=invitation,
            target_repr=f"{invitation.email} as {invitation.role}",
        )
        transaction.on_commit(lambda: _send_invitation(invitation, token))
    return invitation, token


def invitation_revoke(*, invitation: Invitation, actor: Actor) -> Invitation:
    if invitation.state != "pending" and invitation.state != "expired":
        raise errors.Conflict(f"This invitation was already {invitation.state}.")
    with transaction.atomic():
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            action="invitation.revoked",
            tenant=invitation.tenant,
            target=invitation,
            target_repr=f"{invitation.email} as {invitation.role}",
        )
    return invitation


def invitation_url(token: str) -> str:
    return settings.KEYCORE_BASE_URL + reverse("invitation_accept", args=[token])


def _send_invitation(invitation: Invitation, token: str) -> None:
    context = {
        "invitation": invitation,
        "url": invitation_url(token),
        "tenant": invitation.tenant,
        "ttl_hours": settings.KEYCORE_INVITATION_TTL_HOURS,
    }
    subject = (
        f"You are invited to manage {invitation.tenant.name}'s encryption keys"
        if invitation.tenant
        else "You are invited to the KeyCore vendor portal"
    )
    send_mail(
        subject=settings.ACCOUNT_EMAIL_SUBJECT_PREFIX + subject,
        message=render_to_string("emails/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )
    Invitation.objects.filter(pk=invitation.pk).update(
        last_sent_at=timezone.now(), send_count=invitation.send_count + 1
    )


def invitation_lookup(token: str) -> Invitation:
    """The invitation for a link, or a typed error that explains why it cannot be used."""
    invitation = Invitation.objects.select_related("tenant").filter(token_hash=_token_hash(token or "")).first()
    if invitation is None:
        raise errors.NotFound(
            "This invitation link is not valid. It may have been replaced by a newer one; ask for a new invitation."
        )
    if invitation.accepted_at:
        raise errors.Conflict("This invitation has already been used. Sign in to continue.")
    if invitation.revoked_at:
        raise errors.Conflict("This invitation was withdrawn. Ask the person who invited you for a new one.")
    if invitation.awaiting_approval:
        raise errors.Conflict("This invitation waits for an owner of the tenant to approve it.")
    if invitation.expires_at <= timezone.now():
        raise errors.Conflict("This invitation has expired. Ask the person who invited you to send it again.")
    if invitation.tenant is not None and invitation.tenant.status in (
        TenantStatus.OFFBOARDING,
        TenantStatus.OFFBOARDED,
    ):
        raise errors.Conflict("This tenant is being offboarded; the invitation can no longer be used.")
    return invitation


def invitation_accept(*, token: str, user: User, actor: Actor) -> Invitation:
    """Turn an invitation into a membership (or a staff role) for ``user``, once."""
    with transaction.atomic():
        invitation = invitation_lookup(token)
        invitation = Invitation.objects.select_for_update(no_key=True).get(pk=invitation.pk)
        if invitation.accepted_at:
            raise errors.Conflict("This invitation has already been used.")
        if invitation.email.lower() != user.email.lower():
            raise errors.PermissionDenied(
                f"This invitation is for {invitation.email}; you are signed in as {user.email}."
            )
        if invitation.audience == InvitationAudience.TENANT:
            if VendorStaff.objects.filter(user=user, is_active=True).exists():
                raise errors.PermissionDenied("Vendor staff accounts cannot join a tenant; use a separate account.")
            membership, _ = Membership.objects.get_or_create(
                tenant=invitation.tenant, user=user, defaults={"role": invitation.role}
            )
            audit_record(
                actor=actor,
                action="member.joined",
                tenant=invitation.tenant,
                target=membership,
                target_repr=f"{user.email} as {membership.role}",
                changes={"role": [None, membership.role]},
            )
        else:
            if Membership.objects.filter(user=user).exists():
                raise errors.PermissionDenied(
                    "Tenant member accounts cannot join the vendor's staff; use a separate account."
                )
            staff, _ = VendorStaff.objects.update_or_create(
                user=user, defaults={"role": invitation.role, "is_active": True, "invited_by": invitation.created_by}
            )
            audit_record(
                actor=actor,
                action="staff.joined",
                target=staff,
                target_repr=f"{user.email} as {staff.role}",
                changes={"role": [None, staff.role]},
            )
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
    return invitation


# --- members -------------------------------------------------------------------------


def _granter_role(tenant: Tenant, actor: Actor) -> str | None:
    """The acting member's role in ``tenant``; None when the vendor (staff, API key, system) acts.

    Who may reach a service at all is the portals' and the API's business; this
    only decides how far a tenant member may grant.
    """
    if actor.user is None or actor.user.pk is None:
        return None
    return Membership.objects.filter(tenant=tenant, user=actor.user).values_list("role", flat=True).first()


def _require_may_grant(tenant: Tenant, actor: Actor, *roles: str) -> None:
    granter = _granter_role(tenant, actor)
    for role in roles:
        if not tenant_role_may_grant(granter, role):
            raise errors.PermissionDenied(
                "Only an owner can make someone an owner or change an owner's membership.",
                field_errors={"role": ["Only owners grant or change the owner role."]},
            )


def _owners(tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role=TenantRole.OWNER).count()


def membership_set_role(*, membership: Membership, role: str, actor: Actor) -> Membership:
    if role not in TenantRole.values:
        raise errors.InvalidInput(f"Unknown role {role!r}.", field_errors={"role": ["Unknown role."]})
    guard(
        actor=actor,
        tenant=membership.tenant,
        attempted="member.role_change",
        reason=vendor_members_refusal(membership.tenant),
        target=membership,
    )
    with transaction.atomic():
        Tenant.objects.select_for_update(no_key=True).get(pk=membership.tenant_id)
        membership = Membership.objects.select_related("user", "tenant").get(pk=membership.pk)
        _require_may_grant(membership.tenant, actor, membership.role, role)
        if membership.role == TenantRole.OWNER and role != TenantRole.OWNER and _owners(membership.tenant) <= 1:
            raise errors.Conflict("The last owner cannot be demoted; make someone else owner first.")
        before = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(
            actor=actor,
            action="member.role_changed",
            tenant=membership.tenant,
            target=membership,
            target_repr=membership.user.email,
            changes={"role": [before, role]},
        )
    return membership


def membership_remove(*, membership: Membership, actor: Actor) -> None:
    guard(
        actor=actor,
        tenant=membership.tenant,
        attempted="member.remove",
        reason=vendor_members_refusal(membership.tenant),
        target=membership,
    )
    with transaction.atomic():
        Tenant.objects.select_for_update(no_key=True).get(pk=membership.tenant_id)
        membership = Membership.objects.select_related("user", "tenant").get(pk=membership.pk)
        if membership.user_id != getattr(actor.user, "pk", None):  # anyone may leave; removing others needs the rank
            _require_may_grant(membership.tenant, actor, membership.role)
        if membership.role == TenantRole.OWNER and _owners(membership.tenant) <= 1:
            raise errors.Conflict("The last owner cannot be removed; make someone else owner first.")
        audit_record(
            actor=actor,
            action="member.removed",
            tenant=membership.tenant,
            target=membership,
            target_repr=membership.user.email,
            changes={"role": [membership.role, None]},
        )
        membership.delete()


# --- vendor staff ----------------------------------------------------------------------


def staff_create(*, email: str, role: str, actor: Actor, password: str | None = None) -> VendorStaff:
    """Create (or promote) a vendor staff account directly; used by the operator's management command."""
    email = _validate_invite(email, role, audience=InvitationAudience.VENDOR)
    with transaction.atomic():
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            user = User.objects.create_user(email=email, password=password)
        elif password:
            user.set_password(password)
            user.save(update_fields=["password"])
        if Membership.objects.filter(user=user).exists():
            raise errors.Conflict(f"{email} is a tenant member; vendor staff need a separate account.")
        EmailAddress.objects.update_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
        staff, created = VendorStaff.objects.update_or_create(user=user, defaults={"role": role, "is_active": True})
        audit_record(
            actor=actor,
            action="staff.created" if created else "staff.updated",
            target=staff,
            target_repr=f"{email} as {role}",
            changes={"role": [None, role]},
        )
    return staff


def staff_set_role(*, staff: VendorStaff, role: str, actor: Actor) -> VendorStaff:
    if role not in VendorRole.values:
        raise errors.InvalidInput(f"Unknown role {role!r}.", field_errors={"role": ["Unknown role."]})
    with transaction.atomic():
        staff = VendorStaff.objects.select_for_update(of=("self",), no_key=True).select_related("user").get(pk=staff.pk)
        if staff.role == VendorRole.ADMIN and role != VendorRole.ADMIN and _active_admins() <= 1:
            raise errors.Conflict("The last vendor administrator cannot be demoted.")
        before = staff.role
        staff.role = role
        staff.save(update_fields=["role"])
        audit_record(
            actor=actor,
            action="staff.role_changed",
            target=staff,
            target_repr=staff.user.email,
            changes={"role": [before, role]},
        )
    return staff


def staff_deactivate(*, staff: VendorStaff, actor: Actor) -> VendorStaff:
    with transaction.atomic():
        staff = VendorStaff.objects.select_for_update(of=("self",), no_key=True).select_related("user").get(pk=staff.pk)
        if staff.role == VendorRole.ADMIN and _active_admins() <= 1:
            raise errors.Conflict("The last vendor administrator cannot be removed.")
        staff.is_active = False
        staff.save(update_fields=["is_active"])
        audit_record(
            actor=actor,
            action="staff.deactivated",
            target=staff,
            target_repr=staff.user.email,
            changes={"active": [True, False]},
        )
    return staff


def _active_admins() -> int:
    return VendorStaff.objects.filter(role=VendorRole.ADMIN, is_active=True, user__is_active=True).count()
