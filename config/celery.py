"""The Celery app. Settings come from Django's settings (CELERY_*)."""

import os

from celery import Celery
from celery.signals import beat_init, worker_init
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
