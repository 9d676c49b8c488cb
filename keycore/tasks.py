"""Celery tasks: ids in, one service call, retries here. Enqueued with transaction.on_commit."""

from __future__ import annotations

from celery import shared_task

from keycore import errors, event_tasks  # noqa: F401 - event_tasks: the security-events tasks, found through here


@shared_task(bind=True, acks_late=True, max_retries=None)
def run_rekey_job(self, job_id: int) -> None:
    from keycore.services.jobs import job_run

    try:
        job_run(job_id)
    except errors.KeyCoreError as exc:
        if exc.retryable:
            # the job is paused with the reason shown; try again with exponential backoff, capped at 5 minutes
            raise self.retry(exc=exc, countdown=min(300, 2 ** min(self.request.retries, 8))) from exc
        raise


@shared_task
def check_kms_health() -> int:
    """Periodic: health-check every configuration in use and record the result for the portals."""
    from keycore.models import KmsConfig
    from keycore.models.keys import UNWRAP_STATES
    from keycore.providers.registry import get_provider_class, provider_names
    from keycore.services.keys import kms_config_check

    remote = [name for name in provider_names() if get_provider_class(name).periodic_health_check]
    configs = KmsConfig.objects.filter(state__in=UNWRAP_STATES, provider__in=remote).select_related("tenant")
    count = 0
    for config in configs.iterator():
        kms_config_check(config=config)
        count += 1
    return count
