"""Forwarding a tenant's security events to its SIEM: webhooks and syslog, in chain order.

Each destination keeps a cursor on the tenant's chain. A delivery run takes a
lease on the destination (one deliverer at a time, whatever the number of
workers), reads the next batch of events after the cursor, sends it, and moves
the cursor in the same transaction that records the attempt. A failed batch is
retried with exponential backoff; after ``KEYCORE_EVENT_DELIVERY_MAX_ATTEMPTS``
its events become dead letters (which the tenant sees and can replay) and the
cursor moves on, so one bad batch never blocks the stream for good.

What goes over the wire — the webhook request and its signature, the syslog message
and its framing — is keycore/services/siem_wire.py.

Delivery is at-least-once: a batch whose fate is unknown (a timeout after the
server got it, a TCP connection that drops mid-batch) is sent again. Every event
carries a stable ``id`` (``<chain>:<seq>``) for the receiver to de-duplicate.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from keycore import egress, errors
from keycore.models import EventChain, Tenant
from keycore.models.events import DeadLetter, DestinationKind, EventDelivery, EventDestination, ReplayState
from keycore.sealing import root_keyring
from keycore.services.audit import Actor, audit_record, chain_key, compact, diff
from keycore.services.events import chain_anchor, chain_rows, event_document
from keycore.services.siem_wire import (
    DEFAULT_FACILITY,
    SECRET_PURPOSE,
    SYSLOG_FACILITIES,
    SendResult,
    load_client_certificate,
    send,
)
from keycore.services.sovereignty import guard

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 16
LEASE_SECONDS = 120


# --- configuration ------------------------------------------------------------------------------


def _invalid(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, field_errors={field: [message]})


def _allow_private() -> bool:
    return settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE


def clean_webhook_settings(raw: dict[str, Any]) -> dict[str, Any]:
    url = str(raw.get("url") or "").strip()
    if not url:
        raise _invalid("url", "Give the webhook's URL.")
    if len(url) > 500:
        raise _invalid("url", "The URL is too long (at most 500 characters).")
    parts = urllib.parse.urlsplit(url)
    allowed = ("https", "http") if _allow_private() else ("https",)
    if parts.scheme not in allowed:
        raise _invalid("url", "The webhook URL must use https.")
    if not parts.hostname:
        raise _invalid("url", "The URL has no host.")
    if parts.username or parts.password:
        raise _invalid("url", "Put no credentials in the URL; requests are signed with the destination's secret.")
    if parts.fragment:
        raise _invalid("url", "A webhook URL has no #fragment.")
    _check_host(parts.hostname, "url")
    return {"url": url}


def clean_syslog_settings(raw: dict[str, Any]) -> dict[str, Any]:
    host = str(raw.get("host") or "").strip()
    if not host or len(host) > 253 or any(c.isspace() for c in host):
        raise _invalid("host", "Give the syslog server's host name or address.")
    try:
        port = int(raw.get("port") or (6514 if raw.get("tls") else 514))
    except (TypeError, ValueError):
        raise _invalid("port", "The port is a number from 1 to 65535.") from None
    if not 1 <= port <= 65535:
        raise _invalid("port", "The port is a number from 1 to 65535.")
    tls = bool(raw.get("tls"))
    ca_bundle = str(raw.get("ca_bundle") or "").strip()
    if ca_bundle:
        if not tls:
            raise _invalid("ca_bundle", "A CA bundle is only used with TLS.")
        try:
            ssl.create_default_context(cadata=ca_bundle)
        except (ssl.SSLError, ValueError):
            raise _invalid("ca_bundle", "The CA bundle is not valid PEM certificates.") from None
    client_cert = str(raw.get("client_cert") or "").strip()
    if client_cert:
        if not tls:
            raise _invalid("client_cert", "A client certificate is only used with TLS.")
        try:
            certificates = x509.load_pem_x509_certificates(client_cert.encode())
        except ValueError:
            raise _invalid("client_cert", "The client certificate is not valid PEM certificates.") from None
        client_cert = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)
    server_name = str(raw.get("server_name") or "").strip()
    hostname = str(raw.get("hostname") or "").strip()
    if hostname and (len(hostname) > 255 or not all(33 <= ord(c) <= 126 for c in hostname)):
        raise _invalid("hostname", "The HOSTNAME is 1–255 printable ASCII characters without spaces.")
    try:
        facility = int(raw.get("facility") or DEFAULT_FACILITY)
    except (TypeError, ValueError):
        facility = -1
    if facility not in SYSLOG_FACILITIES:
        raise _invalid("facility", "Choose a facility from the list.")
    app_name = str(raw.get("app_name") or "keycore").strip()
    if not app_name or len(app_name) > 48 or not all(33 <= ord(c) <= 126 for c in app_name):
        raise _invalid("app_name", "The app name is 1–48 printable ASCII characters without spaces.")
    _check_host(host, "host")
    return {
        "host": host,
        "port": port,
        "tls": tls,
        "ca_bundle": ca_bundle,
        "client_cert": client_cert,
        "server_name": server_name,
        "hostname": hostname,
        "facility": facility,
        "app_name": app_name,
    }


def clean_settings(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    if kind == DestinationKind.WEBHOOK:
        return clean_webhook_settings(raw)
    if kind == DestinationKind.SYSLOG:
        return clean_syslog_settings(raw)
    raise _invalid("kind", "Choose a webhook or a syslog destination.")


def _check_host(host: str, field: str) -> None:
    """Refuse loopback, private, link-local and other internal addresses (SSRF), unless allowed.

    Here only literal addresses and loopback names; every connection resolves the name
    once and checks the addresses it connects to (keycore/egress.py).
    """
    try:
        egress.check_literal_host(host, egress.event_destination_policy())
    except errors.EgressDenied:
        raise _invalid(field, "Internal addresses are not allowed as destinations.") from None


def _seal(destination: EventDestination, secret: str) -> None:
    destination.sealed_secret = root_keyring().seal(
        secret.encode(), purpose=SECRET_PURPOSE, context=str(destination.uid)
    )


def _clean_secret(secret: str | None) -> str | None:
    if secret is None or secret == "":
        return None
    secret = secret.strip()
    if len(secret) < MIN_SECRET_LENGTH or len(secret) > 200:
        raise _invalid("secret", f"A signing secret is {MIN_SECRET_LENGTH}–200 characters.")
    return secret


def _clean_client_key(clean: dict[str, Any], client_key: str | None, *, sealed: bool) -> str | None:
    """The PEM private key of a TLS syslog destination's client certificate, checked to match it.

    Given with a certificate (and only then); an edited destination keeps its sealed key unless a new
    one is given. Returns the key to seal, or None to keep (or have) none.
    """
    client_key = (client_key or "").strip() or None
    cert = clean.get("client_cert", "")
    if client_key and not cert:
        raise _invalid("client_key", "A client key goes with a client certificate.")
    if cert and not client_key:
        if sealed:
            return None
        raise _invalid("client_key", "Give the private key of the client certificate.")
    if client_key:
        try:
            load_client_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert, client_key)
        except (ssl.SSLError, ValueError, OSError):
            raise _invalid(
                "client_key", "The client key is not an unencrypted PEM private key of this certificate."
            ) from None
    return client_key


def _audited_settings(settings_: dict[str, Any]) -> dict[str, Any]:
    """A destination's settings as its events show them: certificates by their digest (audit.compact)."""
    return compact(settings_)


def _clean_name(name: str, kind: str) -> str:
    name = " ".join((name or "").split())[:120]
    return name or DestinationKind(kind).label.split(" (")[0]


def _tenant_only(actor: Actor, tenant: Tenant, attempted: str) -> None:
    """SIEM destinations are the tenant's own: the vendor neither adds, changes nor silences them."""
    guard(
        actor=actor,
        tenant=tenant,
        attempted=attempted,
        reason=f"Where {tenant.name}'s security events go is {tenant.name}'s decision alone.",
    )


def destination_create(
    *,
    tenant: Tenant,
    kind: str,
    name: str,
    settings_: dict[str, Any],
    actor: Actor,
    secret: str | None = None,
    client_key: str | None = None,
    from_beginning: bool = False,
) -> tuple[EventDestination, str | None]:
    """Add a destination. A webhook gets a signing secret: the one given, or a generated one,
    which is returned (to be shown once) — it is stored only sealed. A TLS syslog destination
    may present a client certificate: its key (``client_key``) is stored only sealed.

    Delivery starts with the next event, or with the oldest retained one (``from_beginning``).
    """
    _tenant_only(actor, tenant, "event_destination.create")
    clean = clean_settings(kind, settings_)
    shown: str | None = None
    if kind == DestinationKind.WEBHOOK:
        secret = _clean_secret(secret)
        if secret is None:
            secret = shown = secrets.token_urlsafe(32)
    else:
        secret = _clean_client_key(clean, client_key, sealed=False)
    with transaction.atomic():
        head = EventChain.objects.filter(key=chain_key(tenant.pk)).first()
        start = (head.checkpoint_seq if head else 0) if from_beginning else (head.seq if head else 0)
        destination = EventDestination(
            tenant=tenant,
            kind=kind,
            name=_clean_name(name, kind),
            settings=clean,
            cursor_seq=start,
            created_by=actor.user if actor.user is not None and actor.user.pk else None,
        )
        if secret:
            _seal(destination, secret)
        destination.save()
        audit_record(
            actor=actor,
            action="event_destination.created",
            tenant=tenant,
            target=destination,
            changes={
                "kind": [None, kind],
                "settings": [None, _audited_settings(clean)],
                ("signing_secret" if kind == DestinationKind.WEBHOOK else "client_key"): [
                    None,
                    "(set)" if secret else None,
                ],
                "starts_after_seq": [None, start],
            },
        )
    return destination, shown


def destination_update(
    *,
    destination: EventDestination,
    actor: Actor,
    name: str | None = None,
    settings_: dict[str, Any] | None = None,
    client_key: str | None = None,
) -> EventDestination:
    """Rename or re-point a destination. A webhook's secret is changed only by :func:`destination_rotate_secret`;
    a syslog destination's client key with its certificate, here (kept when none is given)."""
    _tenant_only(actor, destination.tenant, "event_destination.update")
    with transaction.atomic():
        destination = (
            EventDestination.objects.select_for_update(no_key=True, of=("self",))
            .select_related("tenant")
            .get(pk=destination.pk)
        )
        before = {"name": destination.name, "settings": _audited_settings(destination.settings)}
        if name is not None:
            destination.name = _clean_name(name, destination.kind)
        if settings_ is not None:
            destination.settings = clean_settings(destination.kind, {**destination.settings, **settings_})
        after = {"name": destination.name, "settings": _audited_settings(destination.settings)}
        delta = diff(before, after)
        if destination.kind == DestinationKind.SYSLOG:
            sealed = destination.has_secret and before["settings"].get("client_cert") == after["settings"].get(
                "client_cert"
            )
            key = _clean_client_key(destination.settings, client_key, sealed=sealed)
            if key is not None:
                _seal(destination, key)
                delta["client_key"] = ["(set)" if destination.has_secret else None, "(replaced)"]
            elif not destination.settings.get("client_cert") and destination.has_secret:
                destination.sealed_secret = None
                delta["client_key"] = ["(set)", None]
        if delta:
            destination.save(update_fields=["name", "settings", "sealed_secret", "updated_at"])
            audit_record(
                actor=actor,
                action="event_destination.updated",
                tenant=destination.tenant,
                target=destination,
                changes=delta,
            )
    return destination


def destination_rotate_secret(*, destination: EventDestination, actor: Actor, secret: str | None = None) -> str | None:
    """Replace a webhook's signing secret; returns the new one when KeyCore generated it (shown once)."""
    _tenant_only(actor, destination.tenant, "event_destination.rotate_secret")
    if destination.kind != DestinationKind.WEBHOOK:
        raise errors.Conflict("Only webhooks have a signing secret.")
    secret = _clean_secret(secret)
    shown = None
    if secret is None:
        secret = shown = secrets.token_urlsafe(32)
    with transaction.atomic():
        destination = (
            EventDestination.objects.select_for_update(no_key=True, of=("self",))
            .select_related("tenant")
            .get(pk=destination.pk)
        )
        _seal(destination, secret)
        destination.save(update_fields=["sealed_secret", "updated_at"])
        audit_record(
            actor=actor,
            action="event_destination.secret_rotated",
            tenant=destination.tenant,
            target=destination,
            changes={"signing_secret": ["(set)", "(replaced)"]},
        )
    return shown


def destination_set_enabled(*, destination: EventDestination, enabled: bool, actor: Actor) -> EventDestination:
    """Pause or resume forwarding. Resuming retries at once; events kept meanwhile are delivered in order."""
    _tenant_only(actor, destination.tenant, "event_destination.set_enabled")
    with transaction.atomic():
        destination = (
            EventDestination.objects.select_for_update(no_key=True, of=("self",))
            .select_related("tenant")
            .get(pk=destination.pk)
        )
        if destination.enabled == enabled:
            raise errors.Conflict(f"{destination.name} is already {'enabled' if enabled else 'disabled'}.")
        destination.enabled = enabled
        destination.failures = 0
        destination.next_attempt_at = None
        destination.save(update_fields=["enabled", "failures", "next_attempt_at", "updated_at"])
        audit_record(
            actor=actor,
            action="event_destination.enabled" if enabled else "event_destination.disabled",
            tenant=destination.tenant,
            target=destination,
            changes={"enabled": [not enabled, enabled]},
        )
        if enabled:
            _enqueue_delivery(destination)
    return destination


def destination_delete(*, destination: EventDestination, actor: Actor) -> None:
    _tenant_only(actor, destination.tenant, "event_destination.delete")
    with transaction.atomic():
        destination = (
            EventDestination.objects.select_for_update(no_key=True, of=("self",))
            .select_related("tenant")
            .get(pk=destination.pk)
        )
        audit_record(
            actor=actor,
            action="event_destination.deleted",
            tenant=destination.tenant,
            target=destination,
            changes={"kind": [destination.kind, None], "settings": [_audited_settings(destination.settings), None]},
        )
        destination.delete()


# --- testing a destination ----------------------------------------------------------------------------


def destination_test(*, destination: EventDestination, actor: Actor) -> SendResult:
    """Send one synthetic event (kind "test", not part of the chain) and say what happened."""
    document = {
        "id": f"test:{uuid.uuid4().hex}",
        "chain": "test",
        "seq": 0,
        "tenant": destination.tenant.external_id,
        "time": timezone.now().isoformat(),
        "kind": "test",
        "action": "event_destination.test",
        "actor": actor.label,
        "result": "ok",
    }
    result = send(destination, [document])
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="event_destination.tested",
            tenant=destination.tenant,
            target=destination,
            changes={"result": [None, "ok" if result.ok else result.detail]},
        )
    return result


# --- delivering ---------------------------------------------------------------------------------------


def backoff_seconds(failures: int) -> float:
    """Exponential: base, 2·base, 4·base … capped (failures counts from 1)."""
    base = settings.KEYCORE_EVENT_DELIVERY_BACKOFF
    return min(settings.KEYCORE_EVENT_DELIVERY_BACKOFF_MAX, base * 2 ** max(0, failures - 1))


def _claim(destination_id: int, now: datetime) -> str | None:
    token = uuid.uuid4().hex
    claimed = (
        EventDestination.objects.filter(pk=destination_id)
        .filter(_lease_free(now))
        .update(lease_until=now + timedelta(seconds=LEASE_SECONDS), lease_token=token)
    )
    return token if claimed else None


def _lease_free(now: datetime) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def _release(destination_id: int, token: str) -> None:
    EventDestination.objects.filter(pk=destination_id, lease_token=token).update(lease_until=None, lease_token="")


@dataclass(frozen=True)
class DeliveryOutcome:
    delivered: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    busy: bool = False
    more: bool = False
    retry_at: datetime | None = None


def deliver_pending(
    destination_id: int, *, now: datetime | None = None, max_batches: int = 50, batch_size: int | None = None
) -> DeliveryOutcome:
    """Deliver a destination's events after its cursor, in chain order, until caught up or failing.

    Returns what happened; ``retry_at`` says when a failing destination is due again and
    ``more`` whether events are still waiting (the task then runs again).
    """
    clock = (lambda: now) if now is not None else timezone.now
    batch_size = batch_size or settings.KEYCORE_EVENT_DELIVERY_BATCH
    token = _claim(destination_id, clock())
    if token is None:
        return DeliveryOutcome(busy=True)
    delivered = dead = failed = 0
    try:
        for _ in range(max_batches):
            destination = EventDestination.objects.select_related("tenant").get(pk=destination_id)
            if not destination.enabled:
                return DeliveryOutcome(delivered, dead, failed)
            if destination.next_attempt_at and destination.next_attempt_at > clock():
                return DeliveryOutcome(delivered, dead, failed, retry_at=destination.next_attempt_at, more=True)
            key = chain_key(destination.tenant_id)
            # seqs have no gaps above the checkpoint: the next batch is the next batch_size numbers
            after = destination.cursor_seq
            pruned_upto = EventChain.objects.filter(key=key).values_list("checkpoint_seq", flat=True).first() or 0
            if after < pruned_upto:
                # a disabled destination's events were pruned past retention before it was enabled again:
                # say so where the tenant looks (its events), and go on with what is left
                with transaction.atomic():
                    moved = EventDestination.objects.filter(pk=destination_id, cursor_seq=after).update(
                        cursor_seq=pruned_upto
                    )
                    if moved:
                        audit_record(
                            actor=Actor.system("event-forwarding"),
                            action="event_destination.skipped_pruned",
                            tenant=destination.tenant,
                            target=destination,
                            changes={"cursor_seq": [after, pruned_upto], "skipped": [None, pruned_upto - after]},
                        )
                continue
            rows = list(chain_rows(key, after=after, upto=after + batch_size, chunk_size=batch_size))
            if not rows:
                return DeliveryOutcome(delivered, dead, failed)
            documents = [event_document(row, destination.tenant.external_id) for row in rows]
            result = send(destination, documents, head=chain_anchor(key))
            first, last = documents[0]["seq"], documents[-1]["seq"]
            with transaction.atomic():
                current = EventDestination.objects.select_for_update(no_key=True).get(pk=destination_id)
                if current.lease_token != token or current.cursor_seq != destination.cursor_seq:
                    return DeliveryOutcome(delivered, dead, failed)  # our lease ran out and another took over
                EventDelivery.objects.create(
                    destination=current,
                    tenant_id=current.tenant_id,
                    first_seq=first,
                    last_seq=last,
                    count=len(documents),
                    ok=result.ok,
                    status_code=result.status_code,
                    error="" if result.ok else result.detail,
                    duration_ms=result.duration_ms,
                    attempted_at=clock(),
                )
                if result.ok:
                    EventDestination.objects.filter(pk=destination_id).update(
                        cursor_seq=last,
                        failures=0,
                        next_attempt_at=None,
                        delivered_total=F("delivered_total") + len(documents),
                        last_success_at=clock(),
                        last_error="",
                        lease_until=clock() + timedelta(seconds=LEASE_SECONDS),
                    )
                    delivered += len(documents)
                    continue
                failed += 1
                failures = current.failures + 1
                if failures >= settings.KEYCORE_EVENT_DELIVERY_MAX_ATTEMPTS:
                    DeadLetter.objects.bulk_create(
                        [
                            DeadLetter(
                                destination=current,
                                tenant_id=current.tenant_id,
                                seq=doc["seq"],
                                event=json.loads(json.dumps(doc, default=str)),
                                attempts=failures,
                                last_error=result.detail,
                            )
                            for doc in documents
                        ],
                        ignore_conflicts=True,
                    )
                    retry_at = clock() + timedelta(seconds=backoff_seconds(1))
                    EventDestination.objects.filter(pk=destination_id).update(
                        cursor_seq=last,
                        failures=0,
                        next_attempt_at=retry_at,
                        dead_lettered_total=F("dead_lettered_total") + len(documents),
                        last_failure_at=clock(),
                        last_error=result.detail,
                    )
                    dead += len(documents)
                    log.warning(
                        "destination %s: events %s–%s dead-lettered after %s attempts: %s",
                        current.uid,
                        first,
                        last,
                        failures,
                        result.detail,
                    )
                    return DeliveryOutcome(delivered, dead, failed, retry_at=retry_at, more=True)
                retry_at = clock() + timedelta(seconds=backoff_seconds(failures))
                EventDestination.objects.filter(pk=destination_id).update(
                    failures=failures, next_attempt_at=retry_at, last_failure_at=clock(), last_error=result.detail
                )
                return DeliveryOutcome(delivered, dead, failed, retry_at=retry_at, more=True)
        return DeliveryOutcome(delivered, dead, failed, more=True)
    finally:
        _release(destination_id, token)


def destinations_due(now: datetime | None = None) -> list[int]:
    """Enabled destinations with events after their cursor that may be attempted now."""
    now = now or timezone.now()
    candidates = list(
        EventDestination.objects.filter(enabled=True)
        .filter(_lease_free(now))
        .exclude(next_attempt_at__gt=now)
        .values_list("pk", "tenant_id", "cursor_seq")
    )
    if not candidates:
        return []
    heads = dict(EventChain.objects.filter(key__in={chain_key(t) for _, t, _ in candidates}).values_list("key", "seq"))
    return [pk for pk, tenant_id, cursor in candidates if heads.get(chain_key(tenant_id), 0) > cursor]


def _enqueue_delivery(destination: EventDestination) -> None:
    from keycore.event_tasks import deliver_events

    pk = destination.pk
    transaction.on_commit(lambda: deliver_events.delay(pk))


# --- dead letters -----------------------------------------------------------------------------------


def dead_letters_replay(*, destination: EventDestination, actor: Actor, ids: list[int] | None = None) -> int:
    """Queue dead letters (the given ones, or all not yet replayed) to be sent again, in seq order."""
    from keycore.event_tasks import replay_dead_letters

    with transaction.atomic():
        letters = DeadLetter.objects.for_tenant(destination.tenant).filter(destination=destination)
        letters = letters.exclude(replay_state__in=[ReplayState.DELIVERED, ReplayState.QUEUED])
        if ids is not None:
            letters = letters.filter(pk__in=ids)
        count = letters.update(replay_state=ReplayState.QUEUED, replay_error="")
        if not count:
            raise errors.Conflict("Nothing to replay: these dead letters were replayed already.")
        audit_record(
            actor=actor,
            action="event_destination.replay_requested",
            tenant=destination.tenant,
            target=destination,
            changes={"dead_letters": [None, count]},
        )
        pk = destination.pk
        transaction.on_commit(lambda: replay_dead_letters.delay(pk))
    return count


def dead_letters_deliver(destination_id: int, *, batch_size: int | None = None, now: datetime | None = None) -> int:
    """Send queued dead letters in seq order; returns how many were delivered. Failures are marked
    (the tenant may replay again); a disabled destination leaves them queued."""
    clock = (lambda: now) if now is not None else timezone.now
    batch_size = batch_size or settings.KEYCORE_EVENT_DELIVERY_BATCH
    token = _claim(destination_id, clock())
    if token is None:
        return 0
    delivered = 0
    try:
        while True:
            destination = EventDestination.objects.select_related("tenant").get(pk=destination_id)
            if not destination.enabled:
                return delivered
            letters = list(
                DeadLetter.objects.filter(destination=destination, replay_state=ReplayState.QUEUED).order_by("seq")[
                    :batch_size
                ]
            )
            if not letters:
                return delivered
            head = chain_anchor(chain_key(destination.tenant_id))
            result = send(destination, [letter.event for letter in letters], head=head)
            ids = [letter.pk for letter in letters]
            with transaction.atomic():
                EventDelivery.objects.create(
                    destination=destination,
                    tenant_id=destination.tenant_id,
                    first_seq=letters[0].seq,
                    last_seq=letters[-1].seq,
                    count=len(letters),
                    ok=result.ok,
                    replay=True,
                    status_code=result.status_code,
                    error="" if result.ok else result.detail,
                    duration_ms=result.duration_ms,
                    attempted_at=clock(),
                )
                if result.ok:
                    DeadLetter.objects.filter(pk__in=ids).update(
                        replay_state=ReplayState.DELIVERED, replayed_at=clock(), replay_error=""
                    )
                    delivered += len(ids)
                else:
                    DeadLetter.objects.filter(pk__in=ids).update(
                        replay_state=ReplayState.FAILED, replay_error=result.detail, attempts=F("attempts") + 1
                    )
                    return delivered
    finally:
        _release(destination_id, token)
