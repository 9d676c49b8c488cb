"""The Celery app. Settings come from Django's settings (CELERY_*)."""

import logging
import os

from celery import Celery
from celery.signals import beat_init, worker_init, worker_process_shutdown
from django.core.exceptions import ImproperlyConfigured

from keycore.checks import require_secrets

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("keycore")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@beat_init.connect
def refuse_to_start_without_secrets(**kwargs):
    """A worker or beat without SECRET_KEY or KEYCORE_ROOT_KEY stops here, with the reason.

    SystemExit, because Celery logs and swallows what a signal handler raises otherwise.
    """
    try:
        require_secrets()
    except ImproperlyConfigured as exc:
        raise SystemExit(f"KeyCore cannot start: {exc}") from None


@worker_init.connect
def serve_worker_metrics(sender=None, **kwargs):
    """With ``KEYCORE_WORKER_METRICS_PORT``, the worker serves its Prometheus metrics on that port.

    On ``KEYCORE_WORKER_METRICS_ADDRESS`` (127.0.0.1 unless set: never public by default). A prefork pool's
    children are other processes: their figures reach the endpoint through ``PROMETHEUS_MULTIPROC_DIR``.
    """
    from django.conf import settings

    from keycore import metrics

    if not settings.KEYCORE_WORKER_METRICS_PORT:
        return
    pool = getattr(sender, "pool_cls", "")
    pool_name = pool if isinstance(pool, str) else f"{pool.__module__}.{pool.__name__}"
    if not metrics.multiprocess_dir() and "prefork" in pool_name.lower():
        logging.getLogger(__name__).warning(
            "KEYCORE_WORKER_METRICS_PORT is set without PROMETHEUS_MULTIPROC_DIR: a prefork pool's children "
            "cannot report their figures (set the folder, or run --pool solo or threads)"
        )
    metrics.serve_worker_metrics(settings.KEYCORE_WORKER_METRICS_ADDRESS, settings.KEYCORE_WORKER_METRICS_PORT)


@worker_process_shutdown.connect
def forget_dead_child(pid=None, **kwargs):
    from keycore import metrics

    metrics.mark_process_dead(pid or os.getpid())


@app.on_after_finalize.connect
def schedule_periodic_tasks(sender, **kwargs):
    from django.conf import settings

    sender.add_periodic_task(
        settings.KEYCORE_HEALTH_CHECK_INTERVAL, sender.signature("keycore.tasks.check_kms_health"), name="kms-health"
    )
    # rekey chunks whose task died with a worker are picked up again (their lease has run out)
    sender.add_periodic_task(60.0, sender.signature("keycore.tasks.resume_rekey_jobs"), name="rekey-jobs-resume")
    # a new tenant-key version for tenants whose rotation period has passed (one set-based query)
    sender.add_periodic_task(3600.0, sender.signature("keycore.tasks.rotate_due_tenant_keys"), name="key-rotation")
    # older versions a tenant lets KeyCore retire once drained (no document left) or idle (its own period)
    sender.add_periodic_task(3600.0, sender.signature("keycore.tasks.retire_ready_tenant_keys"), name="key-retirement")
    sender.add_periodic_task(
        settings.KEYCORE_EVENT_DELIVERY_INTERVAL,
        sender.signature("keycore.event_tasks.dispatch_event_deliveries"),
        name="event-deliveries",
    )
    sender.add_periodic_task(
        settings.KEYCORE_EVENT_PRUNE_INTERVAL, sender.signature("keycore.event_tasks.prune_events"), name="event-prune"
    )
