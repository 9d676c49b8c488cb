from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from keycore.models.tenants import Health, Tenant
from keycore.querysets import TenantKeyWrapQuerySet, TenantScopedQuerySet


class ConfigOwner(models.TextChoices):
    VENDOR = "vendor", "Vendor"
    TENANT = "tenant", "Tenant"


class ConfigState(models.TextChoices):
    ACTIVE = "active", "Active"
    DECRYPT_ONLY = "decrypt_only", "Decrypt-only"
    DISABLED = "disabled", "Disabled"
    REVOKED = "revoked", "Revoked"
    RETIRED = "retired", "Retired"
    DESTROYED = "destroyed", "Destroyed"


#: states in which a configuration's wraps may be unwrapped
UNWRAP_STATES = (ConfigState.ACTIVE, ConfigState.DECRYPT_ONLY)
#: states that block every tenant key wrapped under the configuration, whatever other wraps it has:
#: a tenant's revocation must not be sidestepped by an older vendor wrap of the same key
BLOCKING_STATES = (ConfigState.DISABLED, ConfigState.REVOKED)


class VendorKeyState(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class VendorKey(models.Model):
    """A named key the vendor keeps in a KMS of its own ("EU AWS key", "US HSM"), shared by many tenants.

    It holds what a provider needs (``settings``, and ``sealed_secrets`` sealed under
    the root key bound to this row's ``uid``, like a configuration's). Tenants do not
    point at it directly: each tenant it serves has a vendor-owned
    :class:`KmsConfig` referencing it, so every existing rule (one primary per tenant,
    states, history, the kill switch) keeps working per tenant, while the KMS key and
    its credentials live once. Every wrap stays bound to its tenant (docs/providers.md).
    At most one active vendor key is the default for new tenants.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120, unique=True)
    provider = models.CharField(max_length=32)
    settings = models.JSONField(default=dict, blank=True)
    sealed_secrets = models.BinaryField(null=True, blank=True, editable=False)
    secret_fields_set = models.JSONField(default=list, blank=True, help_text="Names of secrets that are set.")
    state = models.CharField(max_length=8, choices=VendorKeyState.choices, default=VendorKeyState.ACTIVE)
    is_default = models.BooleanField(default=False)
    rate_limit = models.PositiveIntegerField(default=0, help_text="Requests per second for jobs; 0 = unlimited.")
    health = models.CharField(max_length=8, choices=Health.choices, default=Health.UNKNOWN)
    health_detail = models.CharField(max_length=500, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_latency_ms = models.FloatField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey("keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_vendor_key"),
            models.CheckConstraint(condition=Q(is_default=False) | Q(state="active"), name="default_vendor_key_active"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"


class KmsConfig(models.Model):
    """A key-encryption key in some KMS, owned by the vendor or by the tenant.

    ``settings`` holds what is safe to show (ARN, host, token label);
    ``sealed_secrets`` holds credentials (or, for the local provider, the KEK
    itself) sealed with the operator's root key, bound to this row's ``uid``.
    Exactly one configuration per tenant is primary (enforced by a partial unique
    index); the primary one wraps new tenant keys. A vendor-owned configuration may
    reference a shared :class:`VendorKey` instead of holding a KMS of its own: then
    the provider is built from the vendor key, and ``sealed_secrets`` stays empty.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="kms_configs")
    owner = models.CharField(max_length=8, choices=ConfigOwner.choices)
    provider = models.CharField(max_length=32)
    name = models.CharField(max_length=120)
    settings = models.JSONField(default=dict, blank=True)
    sealed_secrets = models.BinaryField(null=True, blank=True, editable=False)
    secret_fields_set = models.JSONField(default=list, blank=True, help_text="Names of secrets that are set.")
    state = models.CharField(max_length=16, choices=ConfigState.choices, default=ConfigState.ACTIVE)
    is_primary = models.BooleanField(default=False)
    #: requests per second this KMS allows KeyCore (rekey jobs stay under it)
    rate_limit = models.PositiveIntegerField(default=0, help_text="Requests per second for jobs; 0 = unlimited.")
    health = models.CharField(max_length=8, choices=Health.choices, default=Health.UNKNOWN)
    health_detail = models.CharField(max_length=500, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    health_latency_ms = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey("keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    #: the vendor's shared key this configuration uses for this tenant, if any (never for a tenant's own key)
    vendor_key = models.ForeignKey(VendorKey, null=True, blank=True, on_delete=models.PROTECT, related_name="configs")

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-is_primary", "created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(vendor_key__isnull=True) | Q(owner="vendor"), name="vendor_key_only_vendor_owned"
            ),
            models.UniqueConstraint(
                fields=["tenant", "vendor_key"],
                condition=Q(vendor_key__isnull=False) & ~Q(state__in=["retired", "destroyed"]),
                name="one_live_config_per_tenant_vendor_key",
            ),
            models.UniqueConstraint(
                fields=["tenant"], condition=Q(is_primary=True), name="one_primary_config_per_tenant"
            ),
            # a primary configuration may be disabled or revoked (the kill switch), never demoted or gone
            models.CheckConstraint(
                condition=Q(is_primary=False) | Q(state__in=["active", "disabled", "revoked"]),
                name="primary_config_state",
            ),
        ]
        indexes = [
            models.Index(fields=["provider", "state"], name="kmsconfig_provider_state"),
            models.Index(fields=["health"], name="kmsconfig_health"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider}, {self.state})"

    @property
    def is_usable_for_unwrap(self) -> bool:
        return self.state in UNWRAP_STATES


class TenantKeyState(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRING = "retiring", "Retiring (decrypt only)"
    DESTROYED = "destroyed", "Destroyed"


#: the highest tenant-key version there can be: versions live in signed 32-bit columns (this one and
#: KeyUseEvent.key_version), though an EDEK's header has room for 32 bits
KEY_VERSION_MAX = 2**31 - 1


class TenantKey(models.Model):
    """One version of a tenant's key: 256 random bits, stored only wrapped by KEKs.

    ``check_value`` (an HMAC of a constant under the key) lets any unwrap be
    verified without touching data; it reveals nothing about the key.
    ``documents`` and ``last_decrypt_at`` are kept by the key-use writer in the
    transaction that records the uses (keycore.services.events.keyuse_append).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="tenant_keys")
    version = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=TenantKeyState.choices, default=TenantKeyState.ACTIVE)
    check_value = models.BinaryField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)
    retiring_at = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)
    #: documents KeyCore issued under this version and did not move away (encrypt adds, rekey moves)
    documents = models.BigIntegerField(default=0)
    #: the minute of the last successful decrypt under this version
    last_decrypt_at = models.DateTimeField(null=True, blank=True)
    #: ever wrapped under a vendor-provided key: a backup from then, with the vendor's key, recovers this version
    vendor_held = models.BooleanField(default=False)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["tenant", "-version"]
        constraints = [models.UniqueConstraint(fields=["tenant", "version"], name="tenant_key_version_unique")]

    def __str__(self) -> str:
        return f"tenant key v{self.version} of tenant {self.tenant_id}"


class TenantKeyWrap(models.Model):
    """A tenant key wrapped under one KMS configuration. A key may have several during a transition."""

    tenant_key = models.ForeignKey(TenantKey, on_delete=models.CASCADE, related_name="wraps")
    kms_config = models.ForeignKey(KmsConfig, on_delete=models.CASCADE, related_name="wraps")
    wrapped = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)

    objects = TenantKeyWrapQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant_key", "kms_config"], name="wrap_unique")]
        indexes = [models.Index(fields=["kms_config", "tenant_key"], name="wrap_config_key")]


class HistoryAction(models.TextChoices):
    CREATED = "created", "Added"
    MADE_PRIMARY = "made_primary", "Made primary"
    DECRYPT_ONLY = "decrypt_only", "Demoted to decrypt-only"
    DISABLED = "disabled", "Disabled"
    REVOKED = "revoked", "Revoked"
    REENABLED = "reenabled", "Re-enabled"
    RETIRED = "retired", "Retired"
    DESTROYED = "destroyed", "Destroyed (crypto-shredded)"
    KEY_ROTATED = "key_rotated", "New tenant-key version"
    KEY_DESTROYED = "key_destroyed", "Tenant-key version destroyed"


class KeyHistoryEntry(models.Model):
    """The tenant's key history: which configuration was primary when, and every state change."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="key_history")
    kms_config = models.ForeignKey(KmsConfig, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    config_name = models.CharField(max_length=120, blank=True)
    config_owner = models.CharField(max_length=8, blank=True)
    config_provider = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=16, choices=HistoryAction.choices)
    detail = models.CharField(max_length=300, blank=True)
    actor_label = models.CharField(max_length=200)
    at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["tenant", "-at"], name="history_tenant_at")]


class RevocationEpoch(models.Model):
    """A counter bumped by every change that must empty key caches (revoke, disable, primary change).

    Every process reads it at most once per ``KEYCORE_REVOCATION_POLL`` seconds and
    clears its tenant-key cache when it moved — that is how a revocation takes
    effect everywhere within two seconds.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.BigIntegerField(default=0)
    changed_at = models.DateTimeField(default=timezone.now)
