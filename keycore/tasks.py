"""Celery tasks: ids in, one service call, retries here. Enqueued with transaction.on_commit."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError

from keycore import errors, event_tasks  # noqa: F401 - event_tasks: the security-events tasks, found through here
from keycore.models import KmsConfig, VendorKey
from keycore.models.keys import UNWRAP_STATES, VendorKeyState
from keycore.providers.registry import get_provider_class, provider_names
from keycore.services.jobs import (
    ChunkBusy,
    ChunkPaused,
    job_mark_enqueued,
    job_plan,
    job_resume_stalled,
    job_run_chunk,
    jobs_never_planned,
    retire_ready_versions,
    retry_delay,
)
from keycore.services.keys import kms_config_check, tenant_key_rotate_if_due, tenants_due_for_rotation
from keycore.services.vendor_keys import vendor_key_check

log = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, max_retries=None)
def run_rekey_job(self, job_id: int) -> None:
    """Plan a rekey job (once) and fan its chunks out, one task each."""
    try:
        chunk_ids = job_plan(job_id)
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=retry_delay(self.request.retries)) from exc
    if chunk_ids:
        job_mark_enqueued(chunk_ids)
        for chunk_id in chunk_ids:
            run_rekey_chunk.delay(chunk_id)


@shared_task(bind=True, acks_late=True, max_retries=None)
def run_rekey_chunk(self, chunk_id: int) -> None:
    """Work one chunk of a rekey job; resumable from its committed cursor wherever it stopped."""
    try:
        job_run_chunk(chunk_id, attempt=self.request.retries)
    except ChunkBusy as busy:
        # another worker holds the lease; if it died, the lease runs out and this task takes over
        raise self.retry(countdown=busy.wait) from None
    except ChunkPaused as paused:
        # a KMS is down: the job shows why; exponential backoff, and the job resumes by itself
        raise self.retry(countdown=paused.delay) from None
    except (OperationalError, InterfaceError) as exc:
        # the database went away mid-batch: that batch rolled back, the cursor did not move
        raise self.retry(exc=exc, countdown=retry_delay(self.request.retries)) from exc


@shared_task
def resume_rekey_jobs(startup: bool = False) -> int:
    """Periodic (and at worker start): re-enqueue chunks whose task was lost with a killed worker."""
    for job_id in jobs_never_planned():
        run_rekey_job.delay(job_id)
    stalled = job_resume_stalled(startup=startup)
    job_mark_enqueued([chunk_id for chunk_id, _ in stalled])
    for chunk_id, countdown in stalled:
        run_rekey_chunk.apply_async((chunk_id,), countdown=countdown or None)
    return len(stalled)


@worker_ready.connect
def _resume_rekey_jobs_on_start(sender=None, **kwargs) -> None:
    """A worker that starts picks up what a killed one left (its own queue, through the broker)."""
    resume_rekey_jobs.apply_async(kwargs={"startup": True})


#: tenants per task of the scheduled rotation
ROTATION_BATCH = 200


@shared_task
def rotate_due_tenant_keys() -> int:
    """Periodic (hourly): a new tenant-key version for every tenant whose rotation period has passed."""
    due = tenants_due_for_rotation()
    for start in range(0, len(due), ROTATION_BATCH):
        rotate_tenant_keys.delay(due[start : start + ROTATION_BATCH])
    return len(due)


@shared_task(acks_late=True)
def rotate_tenant_keys(tenant_ids: list[int]) -> int:
    """Rotate the given tenants' keys if still due (idempotent: a re-delivery rotates nobody twice).

    A tenant whose KMS fails stays due, so the next hourly run tries it again.
    """
    rotated = 0
    for tenant_id in tenant_ids:
        try:
            rotated += tenant_key_rotate_if_due(tenant_id=tenant_id) is not None
        except errors.KeyCoreError as exc:
            log.warning("scheduled rotation of tenant %s failed: %s", tenant_id, exc.code)
    return rotated


@shared_task
def retire_ready_tenant_keys() -> int:
    """Periodic (hourly): for tenants that opted in, retire older key versions that are drained or idle."""
    return len(retire_ready_versions())


@shared_task
def check_kms_health() -> int:
    """Periodic: health-check every configuration in use and record the result for the portals."""
    remote = [name for name in provider_names() if get_provider_class(name).periodic_health_check]
    # a configuration under a shared vendor key is checked once, through its vendor key, for all its tenants
    configs = KmsConfig.objects.filter(
        state__in=UNWRAP_STATES, provider__in=remote, vendor_key__isnull=True
    ).select_related("tenant")
    count = 0
    for config in configs.iterator():
        kms_config_check(config=config)
        count += 1
    for vendor_key in VendorKey.objects.filter(state=VendorKeyState.ACTIVE, provider__in=remote):
        vendor_key_check(vendor_key=vendor_key)
        count += 1
    return count
