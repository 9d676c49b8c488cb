"""Security events: key-use rows appended to each tenant's hash chain, and chain verification."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from keycore.models import AuditEvent, EventChain, KeyUseEvent
from keycore.services.audit import GENESIS_HASH, audit_payload, chain_key, event_digest


def keyuse_payload(event: KeyUseEvent) -> dict[str, Any]:
    return {
        "chain": event.chain,
        "seq": event.seq,
        "tenant": event.tenant_id,
        "minute": event.minute.isoformat(),
        "operation": event.operation,
        "label": event.label,
        "requesting_id": event.requesting_id,
        "source_ip": event.source_ip,
        "result": event.result,
        "count": event.count,
        "key_version": event.key_version,
        "created_at": event.created_at.isoformat(),
    }


def keyuse_append(rows: list[dict[str, Any]]) -> list[KeyUseEvent]:
    """Append aggregated key-use rows, each tenant's rows onto that tenant's chain (one lock per tenant)."""
    by_tenant: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_tenant[row["tenant_id"]].append(row)
    created: list[KeyUseEvent] = []
    now = timezone.now()
    with transaction.atomic():
        for tenant_id in sorted(by_tenant):
            key = chain_key(tenant_id)
            head, _ = EventChain.objects.select_for_update().get_or_create(key=key)
            seq, prev = head.seq, head.last_hash
            batch = []
            for row in sorted(by_tenant[tenant_id], key=lambda r: (r["minute"], r["operation"], r["result"])):
                seq += 1
                event = KeyUseEvent(chain=key, seq=seq, prev_hash=prev, created_at=now, **row)
                event.hash = event_digest(prev, keyuse_payload(event))
                prev = event.hash
                batch.append(event)
            KeyUseEvent.objects.bulk_create(batch)
            head.seq, head.last_hash = seq, prev
            head.save(update_fields=["seq", "last_hash"])
            created.extend(batch)
    return created


@dataclass(frozen=True)
class ChainReport:
    chain: str
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str = ""


def chain_verify(tenant_id: int | None) -> ChainReport:
    """Walk one chain in order and recompute every hash; report the first broken link.

    Catches an edited row (its hash no longer matches its content), a deleted row
    (a gap in ``seq`` or a ``prev_hash`` that points nowhere) and reordered rows.
    """
    key = chain_key(tenant_id)
    audit = AuditEvent.objects.filter(chain=key).order_by("seq")
    keyuse = KeyUseEvent.objects.filter(chain=key).order_by("seq")
    rows = sorted(
        [(e.seq, "audit", e) for e in audit.iterator()] + [(e.seq, "keyuse", e) for e in keyuse.iterator()],
        key=lambda t: t[0],
    )
    prev = GENESIS_HASH
    expected_seq = _first_seq(key)
    prev = _checkpoint_hash(key) or prev
    for n, (seq, kind, event) in enumerate(rows):
        if seq != expected_seq:
            return ChainReport(key, False, n, expected_seq, f"row {expected_seq} is missing (next is {seq})")
        if event.prev_hash != prev:
            return ChainReport(key, False, n, seq, f"row {seq} does not follow row {seq - 1}")
        payload = audit_payload(event) if kind == "audit" else keyuse_payload(event)
        if event_digest(prev, payload) != event.hash:
            return ChainReport(key, False, n, seq, f"row {seq} was changed after it was written")
        prev = event.hash
        expected_seq += 1
    head = EventChain.objects.filter(key=key).first()
    if head is not None and head.seq != expected_seq - 1:
        return ChainReport(key, False, len(rows), expected_seq, f"rows {expected_seq}–{head.seq} are missing")
    return ChainReport(key, True, len(rows))


def _first_seq(key: str) -> int:
    return 1


def _checkpoint_hash(key: str) -> str | None:
    return None
