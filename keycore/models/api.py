from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class ApiScope(models.TextChoices):
    TENANTS_READ = "tenants:read", "Read tenants"
    TENANTS_WRITE = "tenants:write", "Create and change tenants, invitations"
    KEYS_WRITE = "keys:write", "Manage vendor-provided keys"
    JOBS_WRITE = "jobs:write", "Start and cancel rekey jobs"
    EVENTS_READ = "events:read", "Read security events and the audit trail"
    CRYPTO = "crypto", "Encrypt, decrypt and rekey tenant data"


class ApiKey(models.Model):
    """A bearer key for the REST API: shown once, stored as a lookup prefix and a SHA-256 hash."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    #: crypto keys may be limited to some tenants; empty = all tenants
    tenants = models.ManyToManyField("keycore.Tenant", blank=True, related_name="+")
    created_by = models.ForeignKey("keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    rotated_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


class IdempotencyRecord(models.Model):
    """The first response to a POST carrying an ``Idempotency-Key``; a retry gets it again."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_unique")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]
