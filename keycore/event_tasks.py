"""Celery tasks of the security-events pipeline: ids in, one service call. Imported by keycore.tasks.

Periodic (config/celery.py): ``dispatch_event_deliveries`` every
``KEYCORE_EVENT_DELIVERY_INTERVAL`` seconds starts a delivery for each destination
with events waiting (a failing one only once its backoff has passed), and
``prune_events`` every ``KEYCORE_EVENT_PRUNE_INTERVAL`` seconds applies retention.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_process_shutdown

from keycore.models import EventDestination
from keycore.services.events import chain_verification_run, events_prune_all
from keycore.services.forwarding import dead_letters_deliver, deliver_pending, destinations_due
from keycore.services.keyuse import recorder

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def deliver_events(destination_id: int) -> int:
    """Deliver a destination's waiting events; runs again at once while a backlog remains.

    A failing destination is not re-enqueued here: the dispatcher picks it up when its
    backoff has passed, so retries never pile up as tasks.
    """
    if not EventDestination.objects.filter(pk=destination_id).exists():
        return 0
    outcome = deliver_pending(destination_id)
    if outcome.more and outcome.retry_at is None and not outcome.busy:
        deliver_events.delay(destination_id)
    return outcome.delivered


@shared_task
def dispatch_event_deliveries() -> int:
    """Periodic: a delivery task for every destination that has events waiting and is due."""
    due = destinations_due()
    for pk in due:
        deliver_events.delay(pk)
    return len(due)


@shared_task(acks_late=True)
def replay_dead_letters(destination_id: int) -> int:
    if not EventDestination.objects.filter(pk=destination_id).exists():
        return 0
    return dead_letters_deliver(destination_id)


@shared_task(acks_late=True)
def run_chain_verification(verification_id: int) -> str:
    return chain_verification_run(verification_id).state


@shared_task
def prune_events() -> int:
    """Periodic: apply every chain's retention period behind a signed checkpoint."""
    results = events_prune_all()
    for result in results:
        if result.problem and result.problem != "retention is unlimited":
            log.warning("pruning %s: %s", result.chain, result.problem)
    return sum(r.pruned for r in results)


@worker_process_shutdown.connect
def flush_key_use_on_shutdown(**kwargs) -> None:
    """Celery pool processes exit without running atexit handlers: flush key-use counts here."""
    try:
        recorder.flush()
    except Exception:
        log.exception("flushing key-use counts at worker shutdown failed")
