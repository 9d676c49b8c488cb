"""Retention: rows past a tenant's retention period are pruned behind a signed checkpoint, and the
rest of the chain still verifies; a forged checkpoint, a broken prefix or an unforwarded event stops it."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from keycore.models import AuditEvent, EventChain, KeyUseEvent
from keycore.services.audit import Actor, audit_record, chain_key
from keycore.services.events import chain_verify, events_prune
from tests.events.conftest import use_keys

pytestmark = pytest.mark.django_db


def age(tenant, days: int) -> None:
    """Make every row of the tenant's chain written ``days`` ago (as if time had passed)."""
    then = timezone.now() - timedelta(days=days)
    AuditEvent.objects.filter(chain=chain_key(tenant.pk)).update(created_at=then)
    KeyUseEvent.objects.filter(chain=chain_key(tenant.pk)).update(created_at=then)


def rehash(tenant) -> None:
    """Recompute hashes after ``age`` (created_at is hashed), as if the rows had been written then."""
    from keycore.services.audit import advance_head, event_digest, lock_chain
    from keycore.services.events import chain_rows, row_payload

    key = chain_key(tenant.pk if tenant is not None else None)
    head = EventChain.objects.get(key=key)
    prev = head.checkpoint_hash
    for row in list(chain_rows(key, after=head.checkpoint_seq)):
        row.prev_hash = prev
        row.hash = event_digest(prev, row_payload(row))
        type(row).objects.filter(pk=row.pk).update(prev_hash=row.prev_hash, hash=row.hash)
        prev = row.hash
    advance_head(lock_chain(key), head.seq, prev)


@pytest.fixture
def old_and_new(tenant, recorder, admin_actor):
    """acme: rows written 400 days ago, then rows written now."""
    use_keys(tenant)
    age(tenant, 400)
    rehash(tenant)
    old_head = EventChain.objects.get(key=chain_key(tenant.pk)).seq
    audit_record(actor=admin_actor, action="tenant.updated", tenant=tenant, target=tenant)
    use_keys(tenant, label="fresh")
    assert chain_verify(tenant.pk).ok
    return old_head


def test_rows_past_retention_go_and_the_rest_still_verifies(tenant, old_and_new):
    assert tenant.event_retention_days == 365
    result = events_prune(tenant=tenant)
    assert result.checkpoint_seq == old_and_new
    assert result.pruned == old_and_new
    key = chain_key(tenant.pk)
    assert not AuditEvent.objects.filter(chain=key, seq__lte=old_and_new).exists()
    assert not KeyUseEvent.objects.filter(chain=key, seq__lte=old_and_new).exists()
    head = EventChain.objects.get(key=key)
    assert head.checkpoint_seq == old_and_new and head.checkpoint_mac and head.pruned_total == old_and_new
    report = chain_verify(tenant.pk)
    assert report.ok, report.problem
    assert report.checkpoint_seq == old_and_new
    # the prune is itself an audited event on the same chain
    pruned = AuditEvent.objects.get(chain=key, action="events.pruned")
    assert pruned.changes["pruned"] == [None, old_and_new]


def test_a_second_prune_has_nothing_to_do(tenant, old_and_new):
    events_prune(tenant=tenant)
    assert events_prune(tenant=tenant).pruned == 0
    assert chain_verify(tenant.pk).ok


def test_a_shorter_retention_prunes_more(tenant, old_and_new):
    tenant.event_retention_days = 1
    result = events_prune(tenant=tenant, now=timezone.now() + timedelta(days=2))
    assert result.pruned > old_and_new
    assert chain_verify(tenant.pk).ok


def test_a_forged_checkpoint_is_caught(tenant, old_and_new):
    events_prune(tenant=tenant)
    key = chain_key(tenant.pk)
    # move the checkpoint further (hiding more rows) without the signing key
    first_kept = min(AuditEvent.objects.filter(chain=key).values_list("seq", flat=True))
    row = AuditEvent.objects.get(chain=key, seq=first_kept)
    EventChain.objects.filter(key=key).update(checkpoint_seq=first_kept, checkpoint_hash=row.hash)
    AuditEvent.objects.filter(pk=row.pk).delete()
    report = chain_verify(tenant.pk)
    assert not report.ok and report.first_broken_seq == first_kept
    assert "checkpoint" in report.problem


def test_deleting_the_row_after_the_checkpoint_is_caught(tenant, old_and_new):
    events_prune(tenant=tenant)
    key = chain_key(tenant.pk)
    AuditEvent.objects.filter(chain=key, seq=old_and_new + 1).delete()
    KeyUseEvent.objects.filter(chain=key, seq=old_and_new + 1).delete()
    report = chain_verify(tenant.pk)
    assert not report.ok and report.first_broken_seq == old_and_new + 1


def test_a_broken_chain_is_never_pruned(tenant, old_and_new):
    key = chain_key(tenant.pk)
    AuditEvent.objects.filter(chain=key, seq=1).update(action="tenant.deleted")
    result = events_prune(tenant=tenant)
    assert result.pruned == 0 and "broken" in result.problem
    assert AuditEvent.objects.filter(chain=key, seq=1).exists()


def test_events_not_yet_forwarded_to_an_enabled_destination_are_kept(tenant, old_and_new, admin_actor, settings):
    from keycore.models import EventDestination
    from keycore.services.forwarding import destination_create

    settings.KEYCORE_EVENT_DESTINATIONS_ALLOW_PRIVATE = True
    destination, _ = destination_create(
        tenant=tenant,
        kind="webhook",
        name="SIEM",
        settings_={"url": "http://127.0.0.1:9/hook"},
        actor=admin_actor,
        from_beginning=True,
    )
    EventDestination.objects.filter(pk=destination.pk).update(cursor_seq=2)
    result = events_prune(tenant=tenant)
    assert result.checkpoint_seq == 2
    assert chain_verify(tenant.pk).ok


def test_the_vendor_chain_has_its_own_retention(db, settings):
    actor = Actor.system("tests")
    audit_record(actor=actor, action="staff.created", target_type="staff", target_id="1")
    AuditEvent.objects.filter(chain="vendor").update(created_at=timezone.now() - timedelta(days=40))
    rehash(None)
    audit_record(actor=actor, action="staff.created", target_type="staff", target_id="2")
    settings.KEYCORE_VENDOR_EVENT_RETENTION_DAYS = 60
    assert events_prune(tenant=None).pruned == 0
    settings.KEYCORE_VENDOR_EVENT_RETENTION_DAYS = 30
    assert events_prune(tenant=None).pruned == 1
    assert chain_verify(None).ok
    settings.KEYCORE_VENDOR_EVENT_RETENTION_DAYS = 0
    assert events_prune(tenant=None).problem == "retention is unlimited"


def test_the_command_prunes_and_reports(tenant, old_and_new):
    out = io.StringIO()
    call_command("prune_events", "--tenant", "acme", stdout=out)
    assert f"pruned {old_and_new} row(s); checkpoint at {old_and_new}" in out.getvalue()
    out = io.StringIO()
    call_command("prune_events", stdout=out)
    assert "vendor" in out.getvalue()
    assert chain_verify(tenant.pk).ok


def test_a_checkpoint_survives_a_root_key_rotation(tenant, old_and_new, settings):
    import base64
    import os

    from keycore.sealing import root_keyring
    from keycore.services.audit import chain_mac_keys
    from keycore.services.events import chain_resign_checkpoint

    events_prune(tenant=tenant)
    old = settings.KEYCORE_ROOT_KEY
    settings.KEYCORE_ROOT_KEY = base64.b64encode(os.urandom(32)).decode()
    settings.KEYCORE_ROOT_KEY_PREVIOUS = [old]
    chain_mac_keys.cache_clear()
    root_keyring.cache_clear()  # as a restart with the new settings would: the MAC keys derive from the keyring
    try:
        assert chain_verify(tenant.pk).ok, "the old root key still verifies what it signed"
        assert chain_resign_checkpoint(chain_key(tenant.pk))
        settings.KEYCORE_ROOT_KEY_PREVIOUS = []
        chain_mac_keys.cache_clear()
        root_keyring.cache_clear()
        report = chain_verify(tenant.pk)
        # the checkpoint moved to the new key; the head was signed by the old one and is re-signed on next append
        assert "head is signed with root key" in report.problem
        audit_record(actor=Actor.system("tests"), action="tenant.updated", tenant=tenant, target=tenant)
        assert chain_verify(tenant.pk).ok
    finally:
        settings.KEYCORE_ROOT_KEY = old
        settings.KEYCORE_ROOT_KEY_PREVIOUS = []
        chain_mac_keys.cache_clear()
        root_keyring.cache_clear()


def test_a_disabled_destination_skips_what_was_pruned_meanwhile(tenant, old_and_new, admin_actor):
    from keycore.services.forwarding import deliver_pending, destination_create, destination_set_enabled
    from tests.events.receivers import WebhookReceiver

    receiver = WebhookReceiver(status=200)
    try:
        destination, _ = destination_create(
            tenant=tenant,
            kind="webhook",
            name="SIEM",
            settings_={"url": receiver.url},
            actor=admin_actor,
            from_beginning=True,
        )
        destination_set_enabled(destination=destination, enabled=False, actor=admin_actor)
        assert events_prune(tenant=tenant).checkpoint_seq == old_and_new, "a disabled destination does not hold it"
        destination_set_enabled(destination=destination, enabled=True, actor=admin_actor)
        deliver_pending(destination.pk)
        destination.refresh_from_db()
        seqs = [e["seq"] for e in receiver.accepted_events()]
        head = EventChain.objects.get(key=chain_key(tenant.pk)).seq
        assert seqs == list(range(old_and_new + 1, head + 1))
        skipped = AuditEvent.objects.get(action="event_destination.skipped_pruned")
        assert skipped.changes == {"cursor_seq": [0, old_and_new], "skipped": [None, old_and_new]}
        assert skipped.actor_label == "system:event-forwarding" and skipped.target_id == str(destination.uid)
    finally:
        receiver.close()
