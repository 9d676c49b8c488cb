"""Tamper evidence: every tenant's events form one hash chain, and verification points at the first
broken link — an edited, deleted, reordered, duplicated or inserted row, on admin and key-use rows alike."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection

from keycore.models import AuditEvent, EventChain, KeyUseEvent
from keycore.services.audit import audit_record, chain_key
from keycore.services.events import chain_verify
from tests.events.conftest import use_keys

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(tenant, admin_actor, recorder):
    """acme's chain: its creation events, key use, and more admin events after it (interleaved tables)."""
    use_keys(tenant)
    audit_record(actor=admin_actor, action="tenant.updated", tenant=tenant, target=tenant, changes={"name": ["a", "b"]})
    use_keys(tenant, label="payroll", who="hr-svc")
    audit_record(actor=admin_actor, action="member.role_changed", tenant=tenant, target=tenant)
    return tenant


def rows(tenant):
    key = chain_key(tenant.pk)
    audit = {e.seq: e for e in AuditEvent.objects.filter(chain=key)}
    keyuse = {e.seq: e for e in KeyUseEvent.objects.filter(chain=key)}
    return audit, keyuse


def test_an_untouched_chain_verifies_and_interleaves_admin_and_key_use_rows(chain):
    audit, keyuse = rows(chain)
    assert audit and keyuse
    seqs = sorted([*audit, *keyuse])
    assert seqs == list(range(1, len(seqs) + 1)), "one gap-free sequence across both tables"
    report = chain_verify(chain.pk)
    assert report.ok, report.problem
    assert report.checked == len(seqs) == report.head_seq


def test_each_row_carries_the_hash_of_the_one_before_it(chain):
    audit, keyuse = rows(chain)
    merged = {**audit, **keyuse}
    for seq in range(2, len(merged) + 1):
        assert merged[seq].prev_hash == merged[seq - 1].hash


@pytest.mark.parametrize("table", ["audit", "keyuse"])
def test_it_catches_an_edited_row(chain, table):
    audit, keyuse = rows(chain)
    if table == "audit":
        victim = audit[max(audit)]
        AuditEvent.objects.filter(pk=victim.pk).update(actor_label="someone-else@example.com")
    else:
        victim = keyuse[min(keyuse)]
        KeyUseEvent.objects.filter(pk=victim.pk).update(count=victim.count + 1000)
    report = chain_verify(chain.pk)
    assert not report.ok
    assert report.first_broken_seq == victim.seq
    assert "changed" in report.problem


@pytest.mark.parametrize("table", ["audit", "keyuse"])
def test_it_catches_a_deleted_row(chain, table):
    audit, keyuse = rows(chain)
    source = audit if table == "audit" else keyuse
    inner = [seq for seq in source if 1 < seq < max([*audit, *keyuse])]
    victim = source[inner[0]]
    type(victim).objects.filter(pk=victim.pk).delete()
    report = chain_verify(chain.pk)
    assert not report.ok
    assert report.first_broken_seq == victim.seq
    assert "missing" in report.problem


@pytest.mark.parametrize("table", ["audit", "keyuse"])
def test_it_catches_the_deletion_of_the_last_row(chain, table, admin_actor, recorder):
    if table == "keyuse":
        use_keys(chain)
    audit, keyuse = rows(chain)
    last = max([*audit, *keyuse])
    victim = (audit if table == "audit" else keyuse)[last]
    type(victim).objects.filter(pk=victim.pk).delete()
    report = chain_verify(chain.pk)
    assert not report.ok and report.first_broken_seq == last


@pytest.mark.parametrize("table", ["audit", "keyuse"])
def test_it_catches_reordered_rows(chain, table):
    audit, keyuse = rows(chain)
    source = audit if table == "audit" else keyuse
    first, second = sorted(source)[:2]
    model = AuditEvent if table == "audit" else KeyUseEvent
    # swap their positions (through a free seq: (chain, seq) is unique)
    model.objects.filter(pk=source[first].pk).update(seq=-1)
    model.objects.filter(pk=source[second].pk).update(seq=first)
    model.objects.filter(pk=source[first].pk).update(seq=second)
    report = chain_verify(chain.pk)
    assert not report.ok
    assert report.first_broken_seq == first
    assert "does not follow" in report.problem


def test_it_catches_a_rewritten_tail_even_when_every_hash_was_recomputed(chain):
    from keycore.services.audit import audit_payload, event_digest
    from keycore.services.events import keyuse_payload

    audit, keyuse = rows(chain)
    merged = {**audit, **keyuse}
    start = max(audit)  # rewrite the last admin event and everything after it, consistently
    prev = merged[start - 1].hash
    for seq in range(start, len(merged) + 1):
        row = merged[seq]
        if isinstance(row, AuditEvent):
            row.actor_label = "nobody@example.com"
        row.prev_hash = prev
        row.hash = event_digest(prev, audit_payload(row) if isinstance(row, AuditEvent) else keyuse_payload(row))
        type(row).objects.filter(pk=row.pk).update(
            prev_hash=row.prev_hash,
            hash=row.hash,
            **({"actor_label": row.actor_label} if isinstance(row, AuditEvent) else {}),
        )
        prev = row.hash
    EventChain.objects.filter(key=chain_key(chain.pk)).update(last_hash=prev)
    report = chain_verify(chain.pk)
    assert not report.ok
    assert "signature" in report.problem


def test_it_catches_a_row_inserted_past_the_head(chain):
    audit, _ = rows(chain)
    forged = audit[max(audit)]
    forged.pk = None
    forged.seq = forged.seq + 50
    forged.save()
    report = chain_verify(chain.pk)
    assert not report.ok and report.first_broken_seq == forged.seq and "inserted" in report.problem


def test_it_catches_a_row_that_appears_in_both_tables(chain):
    audit, keyuse = rows(chain)
    seq = min(keyuse)
    twin = audit[max(audit)]
    twin.pk, twin.seq = None, seq
    twin.save()
    report = chain_verify(chain.pk)
    assert not report.ok and report.first_broken_seq == seq


def test_each_tenant_has_its_own_chain(chain, other_tenant, admin_actor):
    audit_record(actor=admin_actor, action="tenant.updated", tenant=other_tenant, target=other_tenant)
    AuditEvent.objects.filter(tenant=chain).update(user_agent="edited")
    assert not chain_verify(chain.pk).ok
    assert chain_verify(other_tenant.pk).ok


def test_the_command_verifies_one_tenant_or_all_and_points_at_the_broken_link(chain, other_tenant):
    out = io.StringIO()
    call_command("verify_event_chain", "--tenant", "acme", stdout=out)
    assert "intact" in out.getvalue()
    audit, _ = rows(chain)
    victim = audit[max(audit)]
    AuditEvent.objects.filter(pk=victim.pk).update(changes={"name": ["x", "y"]})
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("verify_event_chain", "--all", stdout=out, stderr=err)
    assert exit_info.value.code == 1
    text = out.getvalue() + err.getvalue()
    assert f"BROKEN at row {victim.seq}" in text and "acme" in text
    assert "globex" in text and "vendor" in text


def test_the_command_refuses_an_unknown_tenant(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No tenant"):
        call_command("verify_event_chain", "--tenant", "nope")


def test_verification_streams_rows_instead_of_loading_the_chain(chain, django_assert_max_num_queries):
    # a handful of queries whatever the length: two cursors and the head, not one query per row
    with django_assert_max_num_queries(12):
        assert chain_verify(chain.pk).ok
    assert connection.vendor in ("sqlite", "postgresql")
