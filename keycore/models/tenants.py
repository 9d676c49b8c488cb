from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone

from keycore.querysets import TenantScopedQuerySet
from keycore.roles import TenantRole, VendorRole

EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
external_id_validator = RegexValidator(
    EXTERNAL_ID_PATTERN,
    "Use 1–128 letters, digits, dots, dashes or underscores, starting with a letter or digit.",
)


class TenantStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    OFFBOARDING = "offboarding", "Offboarding"
    OFFBOARDED = "offboarded", "Offboarded"


class KeyOwnership(models.TextChoices):
    VENDOR = "vendor", "Vendor-provided"
    TENANT = "tenant", "Own KMS"


class Health(models.TextChoices):
    """The last health check of a KMS (it answered; a wrap and unwrap worked) — not whether data can be read:
    a revoked key's KMS is still reachable. Whether data can be read is the tenant's key status."""

    UNKNOWN = "unknown", "Not checked yet"
    OK = "ok", "Reachable"
    FAILING = "failing", "Failing"


class KeyStatus(models.TextChoices):
    """Whether the tenant's data can be read now, and if not why: computed by keycore/key_status.py only."""

    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    KMS_UNREACHABLE = "kms_unreachable", "KMS unreachable"
    REVOKED = "revoked", "Revoked by tenant"
    DISABLED = "disabled", "Key disabled"
    SUSPENDED = "suspended", "Suspended"
    OFFBOARDED = "offboarded", "Offboarded"
    SHREDDED = "shredded", "Shredded"


class ChoiceLabels:
    """``get_<field>_display()`` from a dict built once per field, not once per call.

    Django's own rebuilds the field's whole choices dict (flattened, made hashable) on every call: three
    badges on each of 50 rows made it about a third of the CPU of the vendor portal's tenants page
    (docs/benchmarks.md, "Profiled"). Choices here are fixed ``TextChoices``, so the dict never changes.
    """

    def _get_FIELD_display(self, field):
        labels = _CHOICE_LABELS.get(field)
        if labels is None:
            labels = _CHOICE_LABELS[field] = dict(field.flatchoices)
        value = getattr(self, field.attname)
        label = labels.get(value, value)
        return label if label is None else str(label)  # as Django's: a str, translated when asked


#: field → {stored value: label}
_CHOICE_LABELS: dict = {}


class Tenant(ChoiceLabels, models.Model):
    """A customer of the vendor. Addressed by ``external_id`` (the vendor's own id).

    ``key_ownership``, ``primary_provider``, ``health`` and ``key_status`` are kept in
    step with the tenant's configurations by ``keycore.services.summary.tenant_summary_sync``
    (called in the transaction of every change), so that the tenants list can filter 1M rows
    on indexed columns without joins. ``health`` is the KMS health alone (kept for the API's
    compatibility); ``key_status`` says whether the data can be read (keycore/key_status.py).
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    external_id = models.CharField(max_length=128, unique=True, validators=[external_id_validator])
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE)
    key_ownership = models.CharField(max_length=8, choices=KeyOwnership.choices, default=KeyOwnership.VENDOR)
    primary_provider = models.CharField(max_length=32, default="local")
    health = models.CharField(max_length=8, choices=Health.choices, default=Health.UNKNOWN)
    #: a tenant without a primary key yet cannot encrypt: "disabled" until its first key is added
    key_status = models.CharField(max_length=16, choices=KeyStatus.choices, default=KeyStatus.DISABLED)
    require_mfa = models.BooleanField(default=False, help_text="Every member must use MFA.")
    key_rotation_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Create a new tenant-key version this often (empty: only on demand)."
    )
    event_retention_days = models.PositiveIntegerField(default=365)
    #: the tenant's own bound on how long a KeyCore process keeps one of its unwrapped keys (None: the operator's)
    key_cache_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds an unwrapped key may stay in a KeyCore process's memory (30–300)."
    )
    #: an older tenant-key version idle this long (no decrypt) may be retired even if data still counts under it
    retire_idle_days = models.PositiveIntegerField(null=True, blank=True)
    #: retire drained or idle older versions without asking (the tenant's opt-in)
    auto_retire_versions = models.BooleanField(default=False)
    #: record each key use on its own (object id, request id, custom values, time), not only counts
    detailed_events = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    #: offboarding: vendor-provided keys may be crypto-shredded after this moment
    shred_after = models.DateTimeField(null=True, blank=True)
    #: dual control: an administrator asked to shred before ``shred_after``; another must approve
    shred_early_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    shred_early_requested_at = models.DateTimeField(null=True, blank=True)
    shred_early_reason = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["name", "id"]
        indexes = [
            models.Index(fields=["name", "id"], name="tenant_name_id"),
            models.Index(Upper("name"), "id", name="tenant_uname_id"),
            models.Index(fields=["status", "name", "id"], name="tenant_status_name"),
            models.Index(fields=["key_ownership", "name", "id"], name="tenant_owner_name"),
            models.Index(fields=["health", "name", "id"], name="tenant_health_name"),
            models.Index(fields=["created_at", "id"], name="tenant_created"),
            # each filter of the tenants list under each sort: without these, a filter that matches few
            # tenants walks the sort's index through all 100k rows looking for them
            models.Index(fields=["primary_provider", "name", "id"], name="tenant_provider_name"),
            models.Index(fields=["status", "created_at", "id"], name="tenant_status_created"),
            models.Index(fields=["key_ownership", "created_at", "id"], name="tenant_owner_created"),
            models.Index(fields=["health", "created_at", "id"], name="tenant_health_created"),
            models.Index(fields=["primary_provider", "created_at", "id"], name="tenant_provider_created"),
            models.Index(fields=["key_status", "name", "id"], name="tenant_keystatus_name"),
            models.Index(fields=["key_status", "created_at", "id"], name="tenant_keystatus_created"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})"

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE


class TenantCount(models.Model):
    """How many tenants have each value of a summary column: the vendor dashboard's numbers at any scale.

    Kept exact by ``keycore.services.summary`` in the transaction of every change (a
    row-level ``count = count ± 1``, never a recount); ``manage.py tenant_counts --check``
    recomputes and compares. Each value is spread over ``SLOTS`` rows (the tenant's id
    modulo ``SLOTS``) so that concurrent changes of different tenants rarely wait for the
    same row; a value's count is the sum of its slots.
    """

    SLOTS = 16

    dimension = models.CharField(max_length=16)  # a column of Tenant: status, key_ownership, key_status
    value = models.CharField(max_length=32)
    slot = models.PositiveSmallIntegerField(default=0)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dimension", "value", "slot"], name="tenant_count_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.dimension}={self.value}[{self.slot}]: {self.count}"


class Membership(models.Model):
    """A user's role in one tenant. A user may belong to several tenants.

    Portal URLs name a membership by ``uid``, never by its sequential id.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey("keycore.User", on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=TenantRole.choices)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique")]
        ordering = ["user__email"]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} as {self.role}"


class InvitationAudience(models.TextChoices):
    TENANT = "tenant", "Tenant member"
    VENDOR = "vendor", "Vendor staff"


class Invitation(models.Model):
    """A single-use, expiring invitation to join a tenant (or the vendor's staff).

    Only a SHA-256 of the token is stored; the token itself travels in the email link.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    audience = models.CharField(max_length=8, choices=InvitationAudience.choices, default=InvitationAudience.TENANT)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=TenantRole.choices + VendorRole.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey("keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by_label = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_sent_at = models.DateTimeField(null=True, blank=True)
    send_count = models.PositiveIntegerField(default=0)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey("keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)
    #: asked by the vendor for a tenant that already has owners: no link exists until an owner approves
    awaiting_approval = models.BooleanField(default=False)
    approved_by = models.ForeignKey("keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "email"], name="invitation_tenant_email")]

    def __str__(self) -> str:
        return f"invitation of {self.email} as {self.role}"

    @property
    def state(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.awaiting_approval:
            return "awaiting approval"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"
