from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from keycore.models.tenants import Tenant
from keycore.querysets import TenantScopedQuerySet

GENESIS_HASH = "0" * 64


class EventChain(models.Model):
    """The head of one hash chain: ``vendor`` for vendor-wide events, ``tenant:<id>`` per tenant.

    Appending locks this row, so a chain has one writer at a time and no gaps.
    ``head_mac`` signs (seq, last_hash) with a key derived from the root key, so a
    rewritten or truncated tail is caught even if its hashes were recomputed.
    Pruning leaves a signed *checkpoint*: the seq and hash of the last pruned row,
    from which verification continues.
    """

    key = models.CharField(max_length=40, unique=True)
    seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    head_mac = models.CharField(max_length=64, blank=True)
    head_key_id = models.CharField(max_length=16, blank=True)
    checkpoint_seq = models.BigIntegerField(default=0)
    checkpoint_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    checkpoint_mac = models.CharField(max_length=64, blank=True)
    checkpoint_key_id = models.CharField(max_length=16, blank=True)
    checkpoint_at = models.DateTimeField(null=True, blank=True)
    pruned_total = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"chain {self.key} at {self.seq}"


class AuditEvent(models.Model):
    """An admin action, written in the same transaction as the change it describes.

    ``changes`` maps field → [before, after] and never holds a secret. Each row
    carries the hash of the previous row of its chain (tamper evidence).
    """

    # no index of its own: "audit_tenant_created" and "audit_tenant_id" lead with it (one index fewer to keep
    # up on every event: a vendor-wide rotation writes one event per tenant)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events", db_index=False
    )
    chain = models.CharField(max_length=40)
    seq = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    action = models.CharField(max_length=64)
    # indexed only where set (below): KeyCore's own events (jobs, schedules: most of them) name neither
    actor_user = models.ForeignKey(
        "keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    actor_api_key = models.ForeignKey(
        "keycore.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    actor_label = models.CharField(max_length=200)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["chain", "seq"], name="audit_chain_seq")]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="audit_tenant_created"),
            models.Index(fields=["action", "-created_at"], name="audit_action_created"),
            models.Index(fields=["-created_at"], name="audit_created"),
            # the API's cursor pagination (ordering -id) within one tenant
            models.Index(fields=["tenant", "-id"], name="audit_tenant_id"),
            # what deleting a user or an API key looks up (SET NULL); partial, so system events cost nothing here
            models.Index(fields=["actor_user"], condition=Q(actor_user__isnull=False), name="audit_actor_user"),
            models.Index(
                fields=["actor_api_key"], condition=Q(actor_api_key__isnull=False), name="audit_actor_api_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_label}"


#: what a key-use row's hash covers: 1 = the claimed values and counts; 2 = also the API key, the peer
#: address and the listed operations (detailed mode). Rows keep the version they were written with.
KEYUSE_PAYLOAD_VERSION = 2


class KeyUseEvent(models.Model):
    """Key use (encrypt, decrypt, rekey…) counted per minute and per who/what/result.

    Rows are appended by each process's recorder when it flushes (at most every
    second), so one minute may have several rows for the same key; readers sum.
    Each row is a link of its tenant's hash chain, like the tenant's AuditEvents.

    ``label``, ``requesting_id`` and ``source_ip`` are what the caller *claimed*;
    ``api_key_*`` and ``peer_ip`` are what KeyCore saw: the API key that made the
    call and the address it came from (empty for calls made inside KeyCore).
    ``details`` lists each operation (canonical JSON) for tenants in detailed mode.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="key_use_events")
    minute = models.DateTimeField()
    operation = models.CharField(max_length=16)
    label = models.CharField(max_length=100, blank=True)
    requesting_id = models.CharField(max_length=200, blank=True)
    source_ip = models.CharField(max_length=64, blank=True)
    result = models.CharField(max_length=40)
    count = models.PositiveIntegerField()
    key_version = models.PositiveIntegerField(null=True, blank=True)
    #: no foreign key: a row never changes (its hash covers these), whatever becomes of the key
    api_key_uid = models.UUIDField(null=True, blank=True)
    api_key_prefix = models.CharField(max_length=16, blank=True)
    api_key_name = models.CharField(max_length=120, blank=True)
    peer_ip = models.CharField(max_length=64, blank=True)
    details = models.TextField(blank=True)
    payload_version = models.PositiveSmallIntegerField(default=KEYUSE_PAYLOAD_VERSION)
    chain = models.CharField(max_length=40, blank=True)
    seq = models.BigIntegerField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-minute", "-id"]
        constraints = [models.UniqueConstraint(fields=["chain", "seq"], name="keyuse_chain_seq")]
        indexes = [
            models.Index(fields=["tenant", "-minute"], name="keyuse_tenant_minute"),
            models.Index(fields=["tenant", "operation", "-minute"], name="keyuse_tenant_op_minute"),
            models.Index(fields=["tenant", "-id"], name="keyuse_tenant_id"),
            models.Index(fields=["tenant", "api_key_prefix", "-minute"], name="keyuse_tenant_apikey"),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.result} x{self.count}"
