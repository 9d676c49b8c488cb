"""Webhook forwarding against a real HTTP server: a failing one, then a recovering one — every event
delivered once, in chain order, with a valid signature; dead letters after the last attempt, and replay."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest
from django.utils import timezone

from keycore import errors
from keycore.models import DeadLetter, EventChain, EventDelivery, EventDestination
from keycore.services.audit import chain_key
from keycore.services.forwarding import (
    dead_letters_deliver,
    dead_letters_replay,
    deliver_pending,
    destination_create,
    destination_rotate_secret,
    destination_set_enabled,
    destination_test,
    destinations_due,
)
from tests.events.conftest import use_keys
from tests.events.receivers import WebhookReceiver


@pytest.fixture
def receiver():
    server = WebhookReceiver(status=500)
    yield server
    server.close()


@pytest.fixture
def webhook(tenant, admin_actor, receiver, recorder):
    """acme's webhook, created before any key use, starting from the oldest event."""
    destination, secret = destination_create(
        tenant=tenant,
        kind="webhook",
        name="Our SIEM",
        settings_={"url": receiver.url},
        actor=admin_actor,
        from_beginning=True,
    )
    use_keys(tenant)
    use_keys(tenant, label="payroll", who="hr-svc")
    destination.secret = secret
    return destination


def head_seq(tenant) -> int:
    return EventChain.objects.get(key=chain_key(tenant.pk)).seq


def later(minutes: float):
    return timezone.now() + timedelta(minutes=minutes)


def signature_valid(request, secret: str) -> bool:
    timestamp = request.headers["x-keycore-timestamp"]
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.headers["x-keycore-signature"])


@pytest.mark.django_db
def test_a_failing_then_recovering_receiver_gets_every_event_once_in_order(tenant, webhook, receiver, settings):
    settings.KEYCORE_EVENT_DELIVERY_BATCH = 4
    outcome = deliver_pending(webhook.pk)
    assert outcome.delivered == 0 and outcome.failed_attempts == 1 and outcome.retry_at is not None
    webhook.refresh_from_db()
    assert webhook.failures == 1 and webhook.cursor_seq == 0 and "HTTP 500" in webhook.last_error
    # not due again before its backoff has passed
    assert deliver_pending(webhook.pk).delivered == 0
    assert len(receiver.requests) == 1
    assert webhook.pk not in destinations_due()
    # still failing after the backoff: the wait doubles
    first_wait = webhook.next_attempt_at - EventDelivery.objects.get(destination=webhook).attempted_at
    deliver_pending(webhook.pk, now=later(1))
    webhook.refresh_from_db()
    assert webhook.failures == 2
    assert webhook.next_attempt_at - later(1) == pytest.approx(2 * first_wait, abs=timedelta(seconds=2))

    receiver.status = 200
    assert webhook.pk in destinations_due(later(60))
    outcome = deliver_pending(webhook.pk, now=later(60))
    total = head_seq(tenant)
    assert outcome.delivered == total and outcome.failed_attempts == 0
    accepted = receiver.accepted_events()
    assert [e["seq"] for e in accepted] == list(range(1, total + 1)), "each event once, in chain order"
    assert len({e["id"] for e in accepted}) == total
    for request in receiver.requests:
        assert signature_valid(request, webhook.secret)
        assert request.headers["content-type"] == "application/json"
    assert all(len(r.events) <= 4 for r in receiver.requests)
    webhook.refresh_from_db()
    assert webhook.cursor_seq == total and webhook.failures == 0 and webhook.delivered_total == total
    # the documents are the export's: kinds, hashes and the chain links
    kinds = {e["kind"] for e in accepted}
    assert kinds == {"admin", "key_use"}
    assert all(accepted[i]["prev_hash"] == accepted[i - 1]["hash"] for i in range(1, len(accepted)))
    # caught up: nothing more to send, nothing due
    assert deliver_pending(webhook.pk).delivered == 0
    assert webhook.pk not in destinations_due()


@pytest.mark.django_db
def test_new_events_follow_where_delivery_stopped(tenant, webhook, receiver):
    receiver.status = 200
    deliver_pending(webhook.pk)
    before = head_seq(tenant)
    use_keys(tenant, label="later")
    assert webhook.pk in destinations_due()
    deliver_pending(webhook.pk)
    seqs = [e["seq"] for e in receiver.accepted_events()]
    assert seqs == list(range(1, head_seq(tenant) + 1)) and head_seq(tenant) > before


@pytest.mark.django_db
def test_events_become_dead_letters_after_the_last_attempt_and_replay_delivers_them(
    tenant, webhook, receiver, settings, admin_actor
):
    settings.KEYCORE_EVENT_DELIVERY_MAX_ATTEMPTS = 3
    settings.KEYCORE_EVENT_DELIVERY_BATCH = 5
    for minutes in (0, 10, 20):
        deliver_pending(webhook.pk, now=later(minutes))
    letters = list(DeadLetter.objects.for_tenant(tenant).filter(destination=webhook).order_by("seq"))
    assert [d.seq for d in letters] == [1, 2, 3, 4, 5]
    assert all(d.attempts == 3 and "HTTP 500" in d.last_error for d in letters)
    webhook.refresh_from_db()
    assert webhook.cursor_seq == 5 and webhook.dead_lettered_total == 5 and webhook.failures == 0
    assert letters[0].event["id"] == f"tenant:{tenant.pk}:1", "the document is kept as it was sent"

    receiver.status = 200
    deliver_pending(webhook.pk, now=later(30))
    assert [e["seq"] for e in receiver.accepted_events()] == list(range(6, head_seq(tenant) + 1))

    assert dead_letters_replay(destination=webhook, actor=admin_actor) == 5
    assert dead_letters_deliver(webhook.pk) == 5
    replayed = receiver.accepted_events()[-5:]
    assert [e["seq"] for e in replayed] == [1, 2, 3, 4, 5]
    assert signature_valid(receiver.requests[-1], webhook.secret)
    assert set(DeadLetter.objects.filter(destination=webhook).values_list("replay_state", flat=True)) == {"delivered"}
    with pytest.raises(errors.Conflict):
        dead_letters_replay(destination=webhook, actor=admin_actor)
    assert EventDelivery.objects.filter(destination=webhook, replay=True, ok=True).count() == 1


@pytest.mark.django_db
def test_a_failed_replay_can_be_replayed_again(tenant, webhook, receiver, settings, admin_actor):
    settings.KEYCORE_EVENT_DELIVERY_MAX_ATTEMPTS = 1
    deliver_pending(webhook.pk)
    first = DeadLetter.objects.filter(destination=webhook).order_by("seq").first()
    dead_letters_replay(destination=webhook, actor=admin_actor, ids=[first.pk])
    assert dead_letters_deliver(webhook.pk) == 0
    first.refresh_from_db()
    assert first.replay_state == "failed" and "HTTP 500" in first.replay_error
    receiver.status = 204
    dead_letters_replay(destination=webhook, actor=admin_actor, ids=[first.pk])
    assert dead_letters_deliver(webhook.pk) == 1


@pytest.mark.django_db
def test_a_redirect_is_a_failure_not_a_request_elsewhere(webhook, receiver):
    receiver.status, receiver.redirect_to = 302, "http://127.0.0.1:9/elsewhere"
    outcome = deliver_pending(webhook.pk)
    assert outcome.delivered == 0 and outcome.failed_attempts == 1
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_an_unreachable_receiver_is_retried_later(tenant, admin_actor, recorder):
    destination, _ = destination_create(
        tenant=tenant, kind="webhook", name="gone", settings_={"url": "http://127.0.0.1:9/"}, actor=admin_actor
    )
    use_keys(tenant)
    outcome = deliver_pending(destination.pk)
    destination.refresh_from_db()
    assert outcome.failed_attempts == 1 and "cannot reach" in destination.last_error


@pytest.mark.django_db
def test_a_disabled_destination_sends_nothing_and_resumes_where_it_stopped(tenant, webhook, receiver, admin_actor):
    receiver.status = 200
    destination_set_enabled(destination=webhook, enabled=False, actor=admin_actor)
    assert deliver_pending(webhook.pk).delivered == 0 and not receiver.requests
    assert webhook.pk not in destinations_due()
    destination_set_enabled(destination=webhook, enabled=True, actor=admin_actor)
    deliver_pending(webhook.pk)
    assert [e["seq"] for e in receiver.accepted_events()] == list(range(1, head_seq(tenant) + 1))


@pytest.mark.django_db
def test_a_new_destination_starts_with_the_next_event_unless_asked_for_history(tenant, admin_actor, receiver):
    receiver.status = 200
    destination, _ = destination_create(
        tenant=tenant, kind="webhook", name="new", settings_={"url": receiver.url}, actor=admin_actor
    )
    assert destination.cursor_seq == head_seq(tenant) - 1, "its own creation event is the next one"
    deliver_pending(destination.pk)
    assert [e["action"] for e in receiver.accepted_events()] == ["event_destination.created"]


@pytest.mark.django_db
def test_the_secret_is_shown_once_stored_sealed_and_rotatable(tenant, webhook, receiver, admin_actor):
    from keycore.models import AuditEvent

    assert webhook.secret and len(webhook.secret) >= 32
    stored = EventDestination.objects.get(pk=webhook.pk)
    assert webhook.secret.encode() not in bytes(stored.sealed_secret)
    assert webhook.secret not in str(stored.settings)
    for event in AuditEvent.objects.filter(target_id=str(webhook.uid)):
        assert webhook.secret not in str(event.changes)
    new = destination_rotate_secret(destination=stored, actor=admin_actor)
    assert new and new != webhook.secret
    chosen = "a-secret-the-tenant-chose-1234"
    assert destination_rotate_secret(destination=stored, actor=admin_actor, secret=chosen) is None
    receiver.status = 200
    deliver_pending(webhook.pk)
    assert signature_valid(receiver.requests[-1], chosen)
    assert not signature_valid(receiver.requests[-1], webhook.secret)


@pytest.mark.django_db
def test_testing_a_destination_sends_one_signed_synthetic_event(webhook, receiver, admin_actor):
    receiver.status = 200
    result = destination_test(destination=webhook, actor=admin_actor)
    assert result.ok and result.status_code == 200
    (request,) = receiver.requests
    assert request.events[0]["kind"] == "test" and signature_valid(request, webhook.secret)
    receiver.status = 503
    result = destination_test(destination=webhook, actor=admin_actor)
    assert not result.ok and "503" in result.detail
    webhook.refresh_from_db()
    assert webhook.cursor_seq == 0, "a test does not move the cursor"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://siem.example.com/hook", "https"),
        ("https://127.0.0.1/hook", "Internal"),
        ("https://10.1.2.3/hook", "Internal"),
        ("https://[::1]/hook", "Internal"),
        ("https://169.254.169.254/latest/meta-data", "Internal"),
        ("https://localhost/hook", "Internal"),
        ("https://user:pw@siem.example.com/hook", "credentials"),
        ("ftp://siem.example.com/", "https"),
    ],
)
def test_it_refuses_internal_or_unsafe_webhook_urls_in_production(tenant, admin_actor, settings, url, message):
    settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE = False
    with pytest.raises(errors.InvalidInput, match=message):
        destination_create(tenant=tenant, kind="webhook", name="x", settings_={"url": url}, actor=admin_actor)


@pytest.mark.django_db
def test_a_name_that_resolves_to_an_internal_address_is_refused_at_delivery(tenant, admin_actor, settings, recorder):
    settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE = False
    destination, _ = destination_create(
        tenant=tenant, kind="webhook", name="x", settings_={"url": "https://localtest.me/hook"}, actor=admin_actor
    )
    EventDestination.objects.filter(pk=destination.pk).update(settings={"url": "https://127.0.0.1.nip.io/hook"})
    import socket

    real = socket.getaddrinfo
    socket.getaddrinfo = lambda host, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]
    try:
        outcome = deliver_pending(destination.pk)
    finally:
        socket.getaddrinfo = real
    destination.refresh_from_db()
    assert outcome.failed_attempts == 1 and "not a public address" in destination.last_error


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_delivery_runs_on_a_real_celery_worker(tenant, admin_actor, celery_worker, recorder):
    from keycore.event_tasks import deliver_events, dispatch_event_deliveries
    from tests.workers import wait_for

    receiver = WebhookReceiver(status=200)
    try:
        destination, secret = destination_create(
            tenant=tenant,
            kind="webhook",
            name="SIEM",
            settings_={"url": receiver.url},
            actor=admin_actor,
            from_beginning=True,
        )
        use_keys(tenant)
        deliver_events.delay(destination.pk)
        total = head_seq(tenant)
        wait_for(lambda: len(receiver.accepted_events()) >= total, timeout=60, what="the worker's delivery")
        # the worker records the delivery and lets go of the destination just after the receiver answered
        wait_for(
            lambda: EventDestination.objects.filter(pk=destination.pk, cursor_seq=total, lease_until=None).exists(),
            timeout=30,
            what="the delivery to be recorded",
        )
        use_keys(tenant, label="second")
        assert dispatch_event_deliveries() == 1
        wait_for(lambda: len(receiver.accepted_events()) >= head_seq(tenant), timeout=60, what="the dispatched one")
        assert [e["seq"] for e in receiver.accepted_events()] == list(range(1, head_seq(tenant) + 1))
        assert signature_valid(receiver.requests[0], secret)
    finally:
        receiver.close()
