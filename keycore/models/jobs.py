from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from keycore.models.tenants import Tenant
from keycore.querysets import TenantScopedQuerySet


class JobKind(models.TextChoices):
    REWRAP = "rewrap", "Move tenant keys to another configuration"
    KEK_ROTATION = "kek_rotation", "Vendor-wide KEK rotation"
    ROOT_ROTATION = "root_rotation", "Root-key rotation"
    KEY_RETIREMENT = "key_retirement", "Tenant-key retirement"


class JobState(models.TextChoices):
    PENDING = "pending", "Waiting"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Finished"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_JOB_STATES = (JobState.PENDING, JobState.RUNNING, JobState.PAUSED)


class RekeyJob(models.Model):
    """A background job that moves tenant keys under new keys; progress is committed in units."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=JobKind.choices)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="rekey_jobs")
    source_config = models.ForeignKey(
        "keycore.KmsConfig", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_config = models.ForeignKey(
        "keycore.KmsConfig", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    tenant_key = models.ForeignKey(
        "keycore.TenantKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.PENDING)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    started_by = models.ForeignKey("keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_by_label = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_error = models.TextField(blank=True)
    pause_reason = models.CharField(max_length=500, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "-created_at"], name="job_state_created"),
            models.Index(fields=["tenant", "-created_at"], name="job_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.state})"

    @property
    def progress_percent(self) -> int:
        if not self.total:
            return 100 if self.state == JobState.SUCCEEDED else 0
        return min(100, int(100 * (self.done + self.failed) / self.total))

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_JOB_STATES
