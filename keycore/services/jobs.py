"""Rekey jobs: move tenant keys under new KEKs, committed in units so a restart does nothing twice.

A job is a row; Celery tasks carry only its id. Each unit of work (one tenant
key) is: unwrap through any usable wrap, wrap under the target, verify by
unwrapping and comparing, commit the new wrap and the progress counter together.
A re-delivered task skips keys that already have a verified wrap under the target.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from keycore import errors
from keycore.models import KmsConfig, RekeyJob, Tenant, TenantKey, TenantKeyWrap
from keycore.models.jobs import ACTIVE_JOB_STATES, JobKind, JobState
from keycore.models.keys import ConfigState
from keycore.services.audit import Actor, audit_record

log = logging.getLogger(__name__)


def _enqueue(job: RekeyJob) -> None:
    from keycore.tasks import run_rekey_job

    transaction.on_commit(lambda: run_rekey_job.delay(job.pk))


def job_start_rewrap(*, tenant: Tenant, source: KmsConfig | None, target: KmsConfig, actor: Actor) -> RekeyJob:
    """Start moving every live tenant key of ``tenant`` under ``target`` (in the caller's transaction)."""
    RekeyJob.objects.filter(tenant=tenant, kind=JobKind.REWRAP, state__in=ACTIVE_JOB_STATES).exclude(
        target_config=target
    ).update(state=JobState.CANCELLED, finished_at=timezone.now(), last_error="Superseded by a newer primary change.")
    total = TenantKey.objects.filter(tenant=tenant).exclude(state="destroyed").count()
    job = RekeyJob.objects.create(
        kind=JobKind.REWRAP,
        tenant=tenant,
        source_config=source,
        target_config=target,
        total=total,
        started_by=actor.user if actor.user is not None and actor.user.pk else None,
        started_by_label=actor.label[:200],
    )
    audit_record(
        actor=actor,
        action="rekey_job.started",
        tenant=tenant,
        target=job,
        target_repr=f"rewrap to {target.name}",
        changes={"total": [None, total]},
    )
    _enqueue(job)
    return job


def job_cancel(*, job: RekeyJob, actor: Actor) -> RekeyJob:
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update().get(pk=job.pk)
        if job.state not in ACTIVE_JOB_STATES:
            raise errors.Conflict(
                f"The job is {job.get_state_display().lower()}; only waiting, running or paused jobs can be cancelled."
            )
        before = job.state
        job.state = JobState.CANCELLED
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "finished_at", "updated_at"])
        audit_record(
            actor=actor,
            action="rekey_job.cancelled",
            tenant=job.tenant,
            target=job,
            changes={"state": [before, job.state]},
        )
    return job


def job_retry(*, job: RekeyJob, actor: Actor) -> RekeyJob:
    with transaction.atomic():
        job = RekeyJob.objects.select_for_update().get(pk=job.pk)
        if job.state not in (JobState.FAILED, JobState.PAUSED, JobState.CANCELLED):
            raise errors.Conflict("Only failed, paused or cancelled jobs can be retried.")
        before = job.state
        job.state = JobState.PENDING
        job.failed = 0
        job.pause_reason = ""
        job.finished_at = None
        job.save(update_fields=["state", "failed", "pause_reason", "finished_at", "updated_at"])
        audit_record(
            actor=actor,
            action="rekey_job.retried",
            tenant=job.tenant,
            target=job,
            changes={"state": [before, job.state]},
        )
        _enqueue(job)
    return job


def job_run(job_id: int) -> RekeyJob:
    """Run (or resume) a rewrap job to the end, or until a KMS error pauses it."""
    from keycore.services.keys import unwrap_raw, wrap_tenant_key

    with transaction.atomic():
        job = RekeyJob.objects.select_for_update(of=("self",)).select_related("tenant", "target_config").get(pk=job_id)
        if job.state not in (JobState.PENDING, JobState.RUNNING, JobState.PAUSED):
            return job
        job.state = JobState.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.pause_reason = ""
        job.save(update_fields=["state", "started_at", "pause_reason", "updated_at"])
    tenant, target = job.tenant, job.target_config
    keys = TenantKey.objects.filter(tenant=tenant).exclude(state="destroyed").order_by("version")
    for key in keys:
        if RekeyJob.objects.filter(pk=job.pk, state=JobState.CANCELLED).exists():
            return RekeyJob.objects.get(pk=job.pk)
        if TenantKeyWrap.objects.filter(tenant_key=key, kms_config=target, verified_at__isnull=False).exists():
            continue
        try:
            raw = unwrap_raw(tenant, key)
            with transaction.atomic():
                wrap_tenant_key(key=key, raw=raw, config=target)
                RekeyJob.objects.filter(pk=job.pk).update(done=F("done") + 1, updated_at=timezone.now())
        except errors.KeyCoreError as exc:
            if exc.retryable:
                RekeyJob.objects.filter(pk=job.pk).update(
                    state=JobState.PAUSED,
                    pause_reason=exc.detail[:500],
                    last_error=exc.detail,
                    updated_at=timezone.now(),
                )
                raise
            RekeyJob.objects.filter(pk=job.pk).update(
                failed=F("failed") + 1, last_error=exc.detail, updated_at=timezone.now()
            )
    return _finish(job)


def _finish(job: RekeyJob) -> RekeyJob:
    from keycore.services.keys import bump_epoch

    with transaction.atomic():
        job = (
            RekeyJob.objects.select_for_update(of=("self",))
            .select_related("tenant", "target_config", "source_config")
            .get(pk=job.pk)
        )
        if job.state != JobState.RUNNING:
            return job
        # every key now has a verified wrap under the target: old wraps under the decrypt-only source go
        done = TenantKey.objects.filter(tenant=job.tenant).exclude(state="destroyed")
        missing = done.exclude(wraps__kms_config=job.target_config).count()
        job.done = done.count() - missing
        if missing == 0 and job.source_config is not None and job.source_config.state == ConfigState.DECRYPT_ONLY:
            TenantKeyWrap.objects.filter(kms_config=job.source_config, tenant_key__tenant=job.tenant).delete()
            bump_epoch()
        job.state = JobState.SUCCEEDED if missing == 0 and not job.failed else JobState.FAILED
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "done", "finished_at", "updated_at"])
        audit_record(
            actor=Actor.system("rekey-job"),
            action=f"rekey_job.{job.state}",
            tenant=job.tenant,
            target=job,
            changes={"done": [None, job.done], "failed": [None, job.failed]},
        )
    return job
