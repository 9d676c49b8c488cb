"""What the vendor may never do to a tenant, and the record of every time it tried.

Once a tenant brings its own key, its data is its own: no vendor action — portal,
REST API, management command, job — may

* make a vendor-provided key primary in place of the tenant's key, or act on the
  tenant's own configurations (make primary, demote, disable, revoke, re-enable,
  replace credentials);
* stop or undo what moves the tenant's data under its key (cancel the rewrap job
  towards it), or destroy its versions (start, confirm or cancel a retirement);
* and, once the tenant has an owner, change the tenant's own settings (event
  retention, MFA requirement, its key-cache bound, retirement), its members or its
  SIEM destinations, or invite anyone without an owner's approval.

Suspension and reactivation never touch keys. The vendor keeps what it needs: it
suspends service, offboards (with the grace period), invites the first owner of a
new tenant, manages the vendor-provided key of a tenant that never brought one
exactly as before, and sees status.

Who acts for whom is decided here and nowhere else: an actor speaks for a tenant
when it is a signed-in member of that tenant; KeyCore's own jobs and schedules
(``Actor.system``) act for nobody and are not refused; everyone else — vendor staff,
vendor API keys, the operator's commands — is the vendor. The capability of a
member's role (who may manage keys, members, settings) is ``keycore/roles.py``'s.

What the vendor may do to each KMS configuration is decided with everything else about
configurations in :func:`keycore.key_rules.kms_config_allowed_actions`, which asks
:func:`is_vendor` and :func:`vendor_key_replacement_refusal` here.

Every refusal raises :class:`keycore.errors.TenantSovereignty` (403) saying why, and
is first written to the tenant's own audit chain as ``vendor.refused`` in a
transaction of its own, so the tenant sees the attempt even though nothing changed.
Services call :func:`guard` before opening their own transaction for that reason.
"""

from __future__ import annotations

from django.db import transaction

from keycore import errors
from keycore.models import KmsConfig, Membership, Tenant
from keycore.models.jobs import JobKind
from keycore.models.keys import ConfigOwner, ConfigState
from keycore.roles import TenantRole
from keycore.services.audit import Actor, audit_record

#: a tenant-owned configuration in one of these states is the tenant's key, even while disabled or revoked
OWN_KEY_STATES = (ConfigState.ACTIVE, ConfigState.DECRYPT_ONLY, ConfigState.DISABLED, ConfigState.REVOKED)

#: tenant settings the vendor may set only while the tenant has no owner (onboarding defaults)
TENANT_SETTINGS = (
    "detailed_events",
    "event_retention_days",
    "require_mfa",
    "key_cache_seconds",
    "retire_idle_days",
    "auto_retire_versions",
)


def is_system(actor: Actor) -> bool:
    """KeyCore itself (jobs, schedules): acts for nobody, is never refused here."""
    return actor.user is None and actor.api_key is None and actor.label.startswith("system:")


def acts_for_tenant(actor: Actor, tenant: Tenant) -> bool:
    """Whether ``actor`` is a signed-in member of ``tenant`` (any role)."""
    user = actor.user
    if user is None or not user.pk:
        return False
    memo = ("member", tenant.pk)
    if memo not in actor.extra:
        actor.extra[memo] = Membership.objects.filter(tenant_id=tenant.pk, user=user).exists()
    return actor.extra[memo]


def is_vendor(actor: Actor, tenant: Tenant) -> bool:
    """The vendor acting on ``tenant``: anyone who is neither the tenant nor KeyCore itself."""
    return not is_system(actor) and not acts_for_tenant(actor, tenant)


def tenant_owns_key(tenant: Tenant) -> bool:
    """Whether the tenant has brought a key of its own that it has not retired (revoked and disabled count)."""
    return KmsConfig.objects.filter(tenant_id=tenant.pk, owner=ConfigOwner.TENANT, state__in=OWN_KEY_STATES).exists()


def tenants_owning_keys(tenant_ids) -> set[int]:
    """Of ``tenant_ids`` (ids, or a query of them), those that own a key — :func:`tenant_owns_key`, set-based."""
    return set(
        KmsConfig.objects.filter(tenant_id__in=tenant_ids, owner=ConfigOwner.TENANT, state__in=OWN_KEY_STATES)
        .values_list("tenant_id", flat=True)
        .distinct()
    )


def tenant_has_owner(tenant: Tenant) -> bool:
    return Membership.objects.filter(tenant_id=tenant.pk, role=TenantRole.OWNER).exists()


# --- the rules: a reason the vendor may not, or None ------------------------------------------------


def vendor_key_replacement_refusal(tenant: Tenant) -> str | None:
    """Why no vendor-provided key may become this tenant's primary key on the vendor's word, or None."""
    if tenant_owns_key(tenant):
        return (
            f"{tenant.name} uses its own key: a vendor-provided key can never replace it, whatever the tenant's "
            "status. "
            "Only the tenant can go back to a vendor-provided key."
        )
    return None


def vendor_job_refusal(job, action: str) -> str | None:
    """Why the vendor may not ``action`` (cancel, confirm) this job, or None."""
    if job.tenant_id is None or not tenant_owns_key(job.tenant):
        return None
    if job.kind == JobKind.REWRAP and job.target_config_id and job.target_config.owner == ConfigOwner.TENANT:
        return (
            f"This job moves {job.tenant.name}'s keys under its own key; only the tenant can stop it "
            "(until it finishes, older versions would stay readable after the tenant revokes its key)."
        )
    if job.kind == JobKind.KEY_RETIREMENT:
        return f"{job.tenant.name} uses its own key: only the tenant decides when its key versions are retired."
    return None


def vendor_settings_refusal(tenant: Tenant, changes: dict) -> str | None:
    """Why the vendor may not change these tenant settings, or None."""
    own = sorted(name for name in changes if name in TENANT_SETTINGS)
    if own and tenant_has_owner(tenant):
        return (
            f"{', '.join(own)} {'is' if len(own) == 1 else 'are'} {tenant.name}'s own setting"
            f"{'' if len(own) == 1 else 's'}: only its owners can change "
            f"{'it' if len(own) == 1 else 'them'} once the tenant has an owner."
        )
    if "key_rotation_days" in changes and tenant_owns_key(tenant):
        return f"{tenant.name} uses its own key: only the tenant sets how often its key versions rotate."
    return None


def vendor_members_refusal(tenant: Tenant) -> str | None:
    """Why the vendor may not change the tenant's members directly, or None."""
    if tenant_has_owner(tenant):
        return f"{tenant.name} has an owner: only the tenant manages its members."
    return None


# --- refusing --------------------------------------------------------------------------------------


def refuse(*, actor: Actor, tenant: Tenant, attempted: str, reason: str, target=None) -> errors.TenantSovereignty:
    """Record the attempt on the tenant's chain (committed now) and return the error to raise."""
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="vendor.refused",
            tenant=tenant,
            target=target if target is not None else tenant,
            changes={"attempted": [None, attempted], "reason": [None, reason[:300]]},
        )
    return errors.TenantSovereignty(reason)


def guard(*, actor: Actor, tenant: Tenant, attempted: str, reason: str | None, target=None) -> None:
    """Raise (after recording the attempt) when the vendor is refused; do nothing for the tenant or KeyCore."""
    if reason and is_vendor(actor, tenant):
        raise refuse(actor=actor, tenant=tenant, attempted=attempted, reason=reason, target=target)
