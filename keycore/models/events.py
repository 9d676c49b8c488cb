"""Forwarding security events to a tenant's SIEM, and chain verifications.

A tenant may configure destinations (a webhook or a syslog server). Each has a
*cursor*: the last seq of the tenant's event chain that it delivered or gave up
on (dead-lettered). Delivery walks the chain in order from the cursor, so events
arrive in chain order, each once unless a network failure leaves a batch's fate
unknown (then it is sent again with the same event ids).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from keycore.models.tenants import Tenant
from keycore.querysets import TenantScopedQuerySet


class DestinationKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (HTTPS, HMAC-signed)"
    SYSLOG = "syslog", "Syslog (RFC 5424 over TCP or TLS)"


class EventDestination(models.Model):
    """Where a tenant's security events are forwarded.

    ``settings`` holds what is safe to show (URL, host, port, TLS, CA bundle);
    ``sealed_secret`` holds the webhook's signing secret sealed with the root key,
    bound to this row's ``uid`` — write-only: shown once when generated, never again.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="event_destinations")
    kind = models.CharField(max_length=8, choices=DestinationKind.choices)
    name = models.CharField(max_length=120)
    settings = models.JSONField(default=dict, blank=True)
    sealed_secret = models.BinaryField(null=True, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    #: the last chain seq delivered or dead-lettered; delivery resumes after it
    cursor_seq = models.BigIntegerField(default=0)
    #: consecutive failed attempts of the batch at the cursor
    failures = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    #: one deliverer at a time: whoever set the lease until a future moment
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)
    delivered_total = models.BigIntegerField(default=0)
    dead_lettered_total = models.BigIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey("keycore.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["enabled", "next_attempt_at"], name="destination_due")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def has_secret(self) -> bool:
        return bool(self.sealed_secret)

    @property
    def target_display(self) -> str:
        if self.kind == DestinationKind.WEBHOOK:
            return self.settings.get("url", "")
        scheme = "tls" if self.settings.get("tls") else "tcp"
        return f"{scheme}://{self.settings.get('host', '')}:{self.settings.get('port', '')}"


class EventDelivery(models.Model):
    """One attempt to deliver a batch of events (or replay dead letters) to a destination."""

    destination = models.ForeignKey(EventDestination, on_delete=models.CASCADE, related_name="deliveries")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    count = models.PositiveIntegerField()
    ok = models.BooleanField()
    replay = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.FloatField(default=0)
    attempted_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-attempted_at", "-id"]
        indexes = [models.Index(fields=["destination", "-attempted_at"], name="delivery_destination_at")]

    def __str__(self) -> str:
        return f"events {self.first_seq}–{self.last_seq} {'delivered' if self.ok else 'failed'}"


class ReplayState(models.TextChoices):
    NONE = "", "Not replayed"
    QUEUED = "queued", "Replay queued"
    DELIVERED = "delivered", "Replayed"
    FAILED = "failed", "Replay failed"


class DeadLetter(models.Model):
    """An event a destination did not accept after every retry; the tenant can see and replay it.

    ``event`` is the document as it was sent, so a replay works after the chain row is pruned.
    """

    destination = models.ForeignKey(EventDestination, on_delete=models.CASCADE, related_name="dead_letters")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    seq = models.BigIntegerField()
    event = models.JSONField()
    attempts = models.PositiveIntegerField()
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    replay_state = models.CharField(max_length=10, choices=ReplayState.choices, blank=True, default="")
    replayed_at = models.DateTimeField(null=True, blank=True)
    replay_error = models.CharField(max_length=500, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["destination", "seq"]
        constraints = [models.UniqueConstraint(fields=["destination", "seq"], name="dead_letter_unique")]
        indexes = [models.Index(fields=["destination", "replay_state", "seq"], name="dead_letter_state")]

    def __str__(self) -> str:
        return f"dead letter {self.seq} of {self.destination_id}"


class VerificationState(models.TextChoices):
    PENDING = "pending", "Waiting"
    RUNNING = "running", "Running"
    OK = "ok", "Intact"
    BROKEN = "broken", "Broken"
    ERROR = "error", "Could not run"


class ChainVerification(models.Model):
    """A run of chain verification requested from a portal (the command runs it in place)."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    #: empty for the vendor chain
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    chain = models.CharField(max_length=40)
    state = models.CharField(max_length=8, choices=VerificationState.choices, default=VerificationState.PENDING)
    checked = models.BigIntegerField(default=0)
    head_seq = models.BigIntegerField(null=True, blank=True)
    checkpoint_seq = models.BigIntegerField(default=0)
    first_broken_seq = models.BigIntegerField(null=True, blank=True)
    problem = models.CharField(max_length=500, blank=True)
    requested_by_label = models.CharField(max_length=200)
    #: a signed head kept outside KeyCore to verify against (a chain ending before it was rolled back)
    known_head = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["chain", "-created_at"], name="verification_chain_created")]

    def __str__(self) -> str:
        return f"verification of {self.chain}: {self.state}"

    @property
    def is_done(self) -> bool:
        return self.state in (VerificationState.OK, VerificationState.BROKEN, VerificationState.ERROR)
