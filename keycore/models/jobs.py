from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from keycore.models.tenants import Tenant
from keycore.querysets import TenantScopedQuerySet


class JobKind(models.TextChoices):
    REWRAP = "rewrap", "Move to a new key"
    KEK_ROTATION = "kek_rotation", "Vendor-wide KEK rotation"
    ROOT_ROTATION = "root_rotation", "Root-key rotation"
    KEY_RETIREMENT = "key_retirement", "Tenant-key retirement"
    VENDOR_KEY_MOVE = "vendor_key_move", "Move tenants to a vendor key"


class JobState(models.TextChoices):
    PENDING = "pending", "Waiting"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Finished"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_JOB_STATES = (JobState.PENDING, JobState.RUNNING, JobState.PAUSED)

#: what one unit of ``total``/``done``/``failed`` counts, per kind
#: what a job counts, (one, several)
JOB_UNITS = {
    JobKind.REWRAP: ("tenant key", "tenant keys"),
    JobKind.KEK_ROTATION: ("KEK", "KEKs"),
    JobKind.ROOT_ROTATION: ("sealed secret", "sealed secrets"),
    JobKind.KEY_RETIREMENT: ("tenant key", "tenant keys"),
    JobKind.VENDOR_KEY_MOVE: ("tenant", "tenants"),
}


class RekeyJob(models.Model):
    """A background job that moves tenant keys under new keys; progress is committed in units.

    The work is split into :class:`RekeyJobChunk` rows (ranges of ids), each run
    by one Celery task at a time; ``done``/``failed`` are incremented in the same
    transaction as the work they count, so they are exact at every moment.
    ``pause_reason`` says why a job waits (a KMS is down, a confirmation is due)
    and ``retry_at`` when it tries again by itself.
    """

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
    #: what the job covers, in words ("tenant acme", "every vendor-provided KEK")
    scope = models.CharField(max_length=200, blank=True)
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
    retry_at = models.DateTimeField(null=True, blank=True)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)

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

    @property
    def unit(self) -> str:
        """What the job counts, singular or plural as its total: "1 tenant key", "3 tenant keys"."""
        one, several = JOB_UNITS.get(self.kind, ("item", "items"))
        return one if self.total == 1 else several

    @property
    def title(self) -> str:
        """What the job does, for people: "Move to Acme production key" rather than its kind alone."""
        if self.kind == JobKind.REWRAP and self.target_config_id:
            return f"Move to {self.target_config.name}"
        if self.kind == JobKind.VENDOR_KEY_MOVE and self.params.get("vendor_key_name"):
            return f"Move tenants to {self.params['vendor_key_name']}"
        return self.get_kind_display()


class ChunkState(models.TextChoices):
    PENDING = "pending", "Waiting"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    DONE = "done", "Done"


class RekeyJobChunk(models.Model):
    """One unit of scheduling of a job: the rows with ids in ``[first_id, last_id]`` of ``subject``.

    ``cursor`` is the last id whose work is committed; it moves in the same
    transaction as that work, so a restarted chunk resumes right after it. A
    worker owns a chunk while ``lease_until`` is in the future; it renews the lease
    with every batch, and another worker takes over only once it has expired.
    """

    job = models.ForeignKey(RekeyJob, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    #: which rows the ids name: "tenant_key", "kms_config" or "authenticator"
    subject = models.CharField(max_length=16)
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    cursor = models.BigIntegerField()
    state = models.CharField(max_length=8, choices=ChunkState.choices, default=ChunkState.PENDING)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="job_chunk_seq")]
        indexes = [models.Index(fields=["state", "lease_until"], name="job_chunk_state_lease")]

    def __str__(self) -> str:
        return f"chunk {self.seq} of job {self.job_id} ({self.state})"


class KmsRateBucket(models.Model):
    """The token bucket of one KMS configuration, when no Redis is configured (rates in requests/s).

    Shared by every worker through a row lock; holds only a count and a time.
    """

    config = models.OneToOneField("keycore.KmsConfig", on_delete=models.CASCADE, primary_key=True, related_name="+")
    tokens = models.FloatField(default=0)
    refilled_at = models.FloatField(default=0)
