"""Security events: each tenant's hash chain of admin and key-use events; verification, retention, documents.

One chain per tenant (``tenant:<id>``) and one for vendor-wide events (``vendor``).
A chain interleaves two tables — :class:`AuditEvent` (admin actions) and
:class:`KeyUseEvent` (aggregated key use) — ordered by ``seq``. Each row stores
the hash of the row before it and the SHA-256 of (that hash, its own canonical
content); the chain's head signs the last (seq, hash) with a key derived from the
root key. Pruning replaces a prefix by a signed checkpoint. Exporting a tenant's events
is keycore/services/event_export.py. See docs/events.md.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Min, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from keycore import errors
from keycore.models import AuditEvent, ChainVerification, EventChain, KeyUseEvent, Tenant, TenantKey
from keycore.models.audit import GENESIS_HASH, KEYUSE_PAYLOAD_VERSION
from keycore.models.events import DeadLetter, EventDelivery, EventDestination, VerificationState
from keycore.services.audit import (
    Actor,
    advance_head,
    audit_payload,
    audit_record,
    chain_key,
    chain_mac_keys,
    chain_sign,
    chain_signature_valid,
    event_digest,
    lock_chain,
)
from keycore.services.bulk_writes import insert_rows

log = logging.getLogger(__name__)

#: rows fetched per database round trip when walking or exporting a chain
CHUNK_SIZE = 2000

Row = AuditEvent | KeyUseEvent


def keyuse_payload(event: KeyUseEvent) -> dict[str, Any]:
    """The content a key-use row's hash covers; verification recomputes it from the stored row.

    Versioned (``payload_version``): a row is hashed as it was written, so rows written before
    version 2 (without API key, peer address and details) keep verifying, and turning a
    version-2 row into a version-1 one changes its payload.
    """
    payload = {
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
    if event.payload_version != 1:
        payload.update(
            v=event.payload_version,
            api_key=str(event.api_key_uid) if event.api_key_uid else None,
            api_key_prefix=event.api_key_prefix,
            api_key_name=event.api_key_name,
            peer_ip=event.peer_ip,
            # the listed operations by their digest: the same evidence, without escaping kilobytes of JSON again
            details_sha256=hashlib.sha256(event.details.encode()).hexdigest() if event.details else "",
        )
    return payload


def row_payload(row: Row) -> dict[str, Any]:
    return audit_payload(row) if isinstance(row, AuditEvent) else keyuse_payload(row)


# --- appending key use -----------------------------------------------------------------------


#: what an operation that worked does to the documents counted under its tenant-key version
DOCUMENT_DELTAS = {"encrypt": 1, "det_encrypt": 1, "rekey_in": 1, "rekey": -1}


def _count_versions(tenant_id: int, rows: list[dict[str, Any]]) -> None:
    """Move each version's document count and last decrypt, in the transaction that records the uses.

    Runs before the tenant's chain head is locked: a retirement locks the version row and then
    the chain, so taking them in the same order never deadlocks.
    """
    deltas: dict[int, int] = defaultdict(int)
    decrypted: dict[int, datetime] = {}
    for row in rows:
        version = row["key_version"]
        if row["result"] != "ok" or version is None:
            continue
        deltas[version] += DOCUMENT_DELTAS.get(row["operation"], 0) * row["count"]
        if row["operation"] == "decrypt":
            decrypted[version] = max(decrypted.get(version, row["minute"]), row["minute"])
    for version in sorted(set(deltas) | set(decrypted)):
        fields: dict[str, Any] = {}
        if deltas.get(version):
            fields["documents"] = F("documents") + deltas[version]
        if version in decrypted:
            at = decrypted[version]
            fields["last_decrypt_at"] = Greatest(Coalesce(F("last_decrypt_at"), Value(at)), Value(at))
        if fields:
            TenantKey.objects.filter(tenant_id=tenant_id, version=version).update(**fields)


class _KeyUseRow(dict):
    """A key-use row as attname → value, readable as attributes by :func:`keyuse_payload`."""

    __getattr__ = dict.get


#: what a row given to :func:`keyuse_append` may leave out
_KEYUSE_DEFAULTS = {
    "label": "",
    "requesting_id": "",
    "source_ip": "",
    "key_version": None,
    "api_key_uid": None,
    "api_key_prefix": "",
    "api_key_name": "",
    "peer_ip": "",
    "details": "",
    "payload_version": KEYUSE_PAYLOAD_VERSION,
}


def _chain_order(row: dict[str, Any]) -> tuple:
    return (row["minute"], row["operation"], row["result"], row.get("label", ""), row.get("requesting_id", ""))


def keyuse_append(rows: list[dict[str, Any]]) -> int:
    """Append aggregated key-use rows, each tenant's rows onto that tenant's chain; returns how many.

    One transaction; chain heads are locked in tenant order, so concurrent flushes of
    several processes never deadlock and never fork a chain. Rows of tenants that no
    longer exist are dropped (logged), so one deleted tenant cannot block everyone's counts.
    The same transaction moves the documents counted per tenant-key version, so the
    counts are exactly what the chain records.
    Rows go in set-based (``COPY`` on PostgreSQL): a detailed tenant's flush may be many rows.
    """
    by_tenant: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_tenant[row["tenant_id"]].append(row)
    appended = 0
    with transaction.atomic():
        existing = set(Tenant.objects.filter(pk__in=list(by_tenant)).values_list("pk", flat=True))
        for tenant_id in sorted(by_tenant):
            if tenant_id not in existing:
                dropped = sum(r["count"] for r in by_tenant[tenant_id])
                log.warning("dropping %d key uses of tenant %s, which no longer exists", dropped, tenant_id)
                continue
            _count_versions(tenant_id, by_tenant[tenant_id])
            key = chain_key(tenant_id)
            head = lock_chain(key)
            now = timezone.now()
            seq, prev = head.seq, head.last_hash
            batch = []
            ordered = sorted(
                by_tenant[tenant_id],
                key=lambda r: (
                    r["minute"],
                    r["operation"],
                    r["result"],
                    r.get("label", ""),
                    r.get("requesting_id", ""),
                ),
            )  # stable: a bucket's detailed rows stay in the order of their operations
            for row in ordered:
                seq += 1
                event = _KeyUseRow(_KEYUSE_DEFAULTS, **row, chain=key, seq=seq, prev_hash=prev, created_at=now)
                event["hash"] = prev = event_digest(prev, keyuse_payload(event))
                batch.append(event)
            insert_rows(KeyUseEvent, batch)
            advance_head(head, seq, prev)
            appended += len(batch)
    return appended


# --- reading a chain in order --------------------------------------------------------------------


def chain_rows(key: str, *, after: int = 0, upto: int | None = None, chunk_size: int = CHUNK_SIZE) -> Iterator[Row]:
    """Every row of a chain with ``after < seq <= upto``, in seq order, streamed from both tables."""
    audit = AuditEvent.objects.filter(chain=key, seq__gt=after)
    keyuse = KeyUseEvent.objects.filter(chain=key, seq__gt=after)
    if upto is not None:
        audit, keyuse = audit.filter(seq__lte=upto), keyuse.filter(seq__lte=upto)
    return heapq.merge(
        audit.order_by("seq").iterator(chunk_size=chunk_size),
        keyuse.order_by("seq").iterator(chunk_size=chunk_size),
        key=lambda row: row.seq,
    )


# --- the signed head, kept outside the database -------------------------------------------------------


def chain_anchor(key: str) -> dict[str, Any] | None:
    """The chain's head as a signed document to keep outside KeyCore: ``{"kind": "chain_head", "chain",
    "seq", "hash", "time", "key_id", "signature"}`` — at ``time``, the chain had reached ``seq``, whose
    hash is ``hash``. Exports and SIEM deliveries carry it; verification given a kept one refuses a chain
    that ends before it (a rollback of the database). None while the chain is empty, or if its head's own
    signature does not hold (KeyCore never vouches for a head it did not write).
    """
    head = EventChain.objects.filter(key=key).first()
    if head is None or not head.seq:
        return None
    if not chain_signature_valid("head", key, head.seq, head.last_hash, key_id=head.head_key_id, mac=head.head_mac):
        log.error("chain %s: the head's signature does not hold; no signed head is issued", key)
        return None
    time = timezone.now().isoformat(timespec="milliseconds")
    key_id, mac = chain_sign("anchor", key, head.seq, f"{head.last_hash}\n{time}")
    return {
        "kind": "chain_head",
        "chain": key,
        "seq": head.seq,
        "hash": head.last_hash,
        "time": time,
        "key_id": key_id,
        "signature": mac,
    }


def anchor_parse(value: Any) -> dict[str, Any]:
    """A kept head (a document from :func:`chain_anchor`, or its JSON text; the last line of a JSON Lines
    export is one) checked for shape; ``InvalidInput`` otherwise."""
    if isinstance(value, str):
        lines = [line for line in value.strip().splitlines() if line.strip()]
        try:
            value = json.loads(lines[-1]) if lines else None
        except ValueError:
            value = None
    problem = "Give the chain head as KeyCore issued it: the JSON document of kind chain_head."
    if not isinstance(value, dict) or value.get("kind", "chain_head") != "chain_head":
        raise errors.InvalidInput(problem, field_errors={"known_head": [problem]})
    try:
        anchor = {
            "kind": "chain_head",
            "chain": str(value["chain"]),
            "seq": int(value["seq"]),
            "hash": str(value["hash"]),
            "time": str(value["time"]),
            "key_id": str(value["key_id"]),
            "signature": str(value["signature"]),
        }
    except (KeyError, TypeError, ValueError):
        raise errors.InvalidInput(problem, field_errors={"known_head": [problem]}) from None
    if anchor["seq"] < 1 or len(anchor["hash"]) != 64:
        raise errors.InvalidInput(problem, field_errors={"known_head": [problem]})
    return anchor


def _anchor_problem(key: str, anchor: dict[str, Any], head: EventChain) -> tuple[int, str] | None:
    """(first broken seq, why) when the chain does not reach, or does not contain, a head it had reached."""
    if anchor["chain"] != key:
        return 0, f"the kept head is of chain {anchor['chain']}, not {key}"
    valid = chain_signature_valid(
        "anchor",
        key,
        anchor["seq"],
        f"{anchor['hash']}\n{anchor['time']}",
        key_id=anchor["key_id"],
        mac=anchor["signature"],
    )
    if valid is None:
        return 0, f"the kept head is signed with root key {anchor['key_id']}, not configured"
    if not valid:
        return 0, "the kept head was not issued by this KeyCore, or was altered"
    seq = anchor["seq"]
    if head.seq < seq:
        return head.seq + 1, (
            f"the chain ends at {head.seq}, before the head kept at {anchor['time']} ({seq}): "
            f"events {head.seq + 1}–{seq} were removed (the database was rolled back)"
        )
    if seq < head.checkpoint_seq:
        return None  # pruned past it since: the chain went on beyond the kept head
    if _hash_at(key, seq, head.checkpoint_seq)[1] != anchor["hash"]:
        return seq, f"event {seq} is not the one the head kept at {anchor['time']} names: the chain was rewritten"
    return None


# --- verification -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainReport:
    """The outcome of walking a chain: ``first_broken_seq`` points at the first broken link."""

    chain: str
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str = ""
    head_seq: int = 0
    checkpoint_seq: int = 0
    last_hash: str = GENESIS_HASH


def chain_verify(
    tenant_id: int | None = None,
    *,
    key: str | None = None,
    progress: Callable[[int], None] | None = None,
    upto_created: datetime | None = None,
    known_head: dict[str, Any] | None = None,
) -> ChainReport:
    """Walk one chain in order and recompute every hash; report the first broken link.

    Catches an edited row (its hash no longer matches its content), a deleted row
    (a gap in ``seq``, or a head that no longer matches the last row), reordered
    rows (a row whose ``prev_hash`` is not the hash of the row before it), a row
    inserted twice, a forged or moved checkpoint, and a rewritten tail whose
    hashes were recomputed (the head's signature no longer matches). The walk
    streams rows; memory does not grow with the chain.

    ``upto_created`` stops the walk before the first row written at or after it
    (pruning verifies only the prefix it is about to replace by a checkpoint).

    What no chain inside the database can show by itself is a rollback of the whole database
    to an earlier, consistent state. ``known_head`` — a signed head kept outside KeyCore
    (:func:`chain_anchor`; exports and SIEM deliveries carry one) — closes that gap: a chain
    that ends before it, or does not contain it, is broken.
    """
    key = key or chain_key(tenant_id)
    head = EventChain.objects.filter(key=key).first()
    if head is None:
        if known_head is not None:
            return ChainReport(key, False, 0, 1, "the chain is empty, but a head of it was kept: it was removed")
        return ChainReport(key, True, 0)
    start, prev = head.checkpoint_seq, head.checkpoint_hash
    base = {"head_seq": head.seq, "checkpoint_seq": start}

    def broken(checked: int, seq: int | None, problem: str) -> ChainReport:
        return ChainReport(key, False, checked, seq, problem, **base)

    if start:
        valid = chain_signature_valid(
            "checkpoint", key, start, prev, key_id=head.checkpoint_key_id, mac=head.checkpoint_mac
        )
        if valid is None:
            return broken(0, start, f"the checkpoint is signed with root key {head.checkpoint_key_id}, not configured")
        if not valid:
            return broken(0, start, f"the signed checkpoint of the pruned rows up to {start} was altered")
    expected = start + 1
    checked = 0
    for row in chain_rows(key, after=start, upto=head.seq):
        seq = row.seq
        if upto_created is not None and row.created_at >= upto_created:
            return ChainReport(key, True, checked, None, "", last_hash=prev, **{**base, "head_seq": seq - 1})
        if seq < expected:
            return broken(checked, seq, f"row {seq} appears twice")
        if seq != expected:
            return broken(checked, expected, f"row {expected} is missing (the next row is {seq})")
        if row.prev_hash != prev:
            detail = f"row {seq} does not follow row {seq - 1}: rows were reordered, replaced or removed"
            return broken(checked, seq, detail)
        if event_digest(prev, row_payload(row)) != row.hash:
            return broken(checked, seq, f"row {seq} was changed after it was written")
        prev = row.hash
        expected += 1
        checked += 1
        if progress is not None and checked % 10000 == 0:
            progress(checked)
    if upto_created is not None:
        return ChainReport(key, True, checked, None, "", last_hash=prev, **{**base, "head_seq": expected - 1})
    if expected - 1 != head.seq:
        if expected == head.seq:
            return broken(checked, expected, f"row {expected}, the last one, is missing")
        return broken(checked, expected, f"rows {expected}–{head.seq} are missing")
    if head.last_hash != prev:
        return broken(checked, head.seq, f"the chain's head does not match row {head.seq}")
    with transaction.atomic():
        # rows past the head were not appended through it: forged (appenders hold the head's lock)
        current = lock_chain(key)
        beyond = [
            model.objects.filter(chain=key, seq__gt=current.seq).order_by("seq").values_list("seq", flat=True).first()
            for model in (AuditEvent, KeyUseEvent)
        ]
    forged = min((seq for seq in beyond if seq is not None), default=None)
    if forged is not None:
        return broken(checked, forged, f"row {forged} lies past the chain's head {current.seq}: it was inserted")
    if head.seq:
        valid = chain_signature_valid("head", key, head.seq, head.last_hash, key_id=head.head_key_id, mac=head.head_mac)
        if valid is None:
            return broken(checked, head.seq, f"the head is signed with root key {head.head_key_id}, not configured")
        if not valid:
            return broken(
                checked,
                head.seq,
                "the chain's head signature does not match: rows were rewritten with recomputed hashes, "
                "or the head was moved",
            )
    if known_head is not None:
        problem = _anchor_problem(key, known_head, head)
        if problem is not None:
            return broken(checked, problem[0] or None, problem[1])
    return ChainReport(key, True, checked, last_hash=prev, **base)


def chain_keys_all() -> Iterator[str]:
    """Every chain: the vendor's and each tenant's that has events."""
    yield from EventChain.objects.order_by("key").values_list("key", flat=True).iterator()


def chain_verification_request(
    *, tenant: Tenant | None, actor: Actor, known_head: dict[str, Any] | None = None
) -> ChainVerification:
    """Queue a verification of a tenant's chain (or the vendor's, with ``tenant=None``) on Celery,
    against a head kept outside KeyCore if one is given (:func:`anchor_parse` checked it)."""
    from keycore.event_tasks import run_chain_verification

    key = chain_key(tenant.pk if tenant is not None else None)
    with transaction.atomic():
        running = (
            ChainVerification.objects.filter(
                chain=key, state__in=[VerificationState.PENDING, VerificationState.RUNNING], known_head__isnull=True
            )
            .order_by("-created_at")
            .first()
        )
        if known_head is None and running is not None and running.created_at > timezone.now() - timedelta(minutes=10):
            return running
        verification = ChainVerification.objects.create(
            tenant=tenant, chain=key, requested_by_label=actor.label[:200], known_head=known_head
        )
        transaction.on_commit(lambda: run_chain_verification.delay(verification.pk))
    return verification


def chain_verification_run(verification_id: int) -> ChainVerification:
    """Run a queued verification and store its outcome (the Celery task calls this)."""
    verification = ChainVerification.objects.get(pk=verification_id)
    if verification.is_done:
        return verification
    ChainVerification.objects.filter(pk=verification.pk).update(
        state=VerificationState.RUNNING, started_at=timezone.now()
    )

    def progress(checked: int) -> None:
        ChainVerification.objects.filter(pk=verification.pk).update(checked=checked)

    try:
        report = chain_verify(key=verification.chain, progress=progress, known_head=verification.known_head)
    except Exception as exc:
        log.exception("verifying chain %s failed", verification.chain)
        ChainVerification.objects.filter(pk=verification.pk).update(
            state=VerificationState.ERROR,
            problem=f"verification could not run: {type(exc).__name__}"[:500],
            finished_at=timezone.now(),
        )
        verification.refresh_from_db()
        return verification
    ChainVerification.objects.filter(pk=verification.pk).update(
        state=VerificationState.OK if report.ok else VerificationState.BROKEN,
        checked=report.checked,
        head_seq=report.head_seq,
        checkpoint_seq=report.checkpoint_seq,
        first_broken_seq=report.first_broken_seq,
        problem=report.problem[:500],
        finished_at=timezone.now(),
    )
    verification.refresh_from_db()
    return verification


# --- retention ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneResult:
    chain: str
    pruned: int = 0
    checkpoint_seq: int = 0
    problem: str = ""


def _retention_days(tenant: Tenant | None) -> int:
    if tenant is None:
        return settings.KEYCORE_VENDOR_EVENT_RETENTION_DAYS
    return tenant.event_retention_days


def events_prune(*, tenant: Tenant | None, now: datetime | None = None, actor: Actor | None = None) -> PruneResult:
    """Delete a chain's rows older than its retention period, behind a signed checkpoint.

    The prefix to prune is verified first: a broken chain is never pruned (that would
    launder the tampering into a valid checkpoint). The prefix stops at the first row
    still inside the retention period and at the oldest cursor of the tenant's enabled
    SIEM destinations, so nothing is pruned before it was forwarded (or dead-lettered).
    Delivery attempts, dead letters and verification runs past retention go too.
    """
    actor = actor or Actor.system("retention")
    key = chain_key(tenant.pk if tenant is not None else None)
    days = _retention_days(tenant)
    now = now or timezone.now()
    if not days:
        return PruneResult(key, problem="retention is unlimited")
    cutoff = now - timedelta(days=days)
    _delete_pruned_leftovers(key)
    report = chain_verify(key=key, upto_created=cutoff)
    if not report.ok:
        log.error("not pruning chain %s: %s", key, report.problem)
        return PruneResult(key, problem=f"not pruned: the chain is broken at {report.first_broken_seq}")
    last_seq, last_hash = report.head_seq, report.last_hash
    if tenant is not None:
        lowest = EventDestination.objects.for_tenant(tenant).filter(enabled=True).aggregate(c=Min("cursor_seq"))["c"]
        if lowest is not None and lowest < last_seq:
            last_seq, last_hash = _hash_at(key, lowest, report.checkpoint_seq)
    if last_seq <= report.checkpoint_seq:
        _prune_side_tables(tenant, cutoff)
        return PruneResult(key, checkpoint_seq=report.checkpoint_seq)
    with transaction.atomic():
        head = lock_chain(key)
        if head.checkpoint_seq != report.checkpoint_seq:
            return PruneResult(key, problem="another prune ran at the same time")
        pruned = _count_upto(key, last_seq) - _count_upto(key, head.checkpoint_seq)
        head.checkpoint_seq, head.checkpoint_hash = last_seq, last_hash
        head.checkpoint_key_id, head.checkpoint_mac = chain_sign("checkpoint", key, last_seq, last_hash)
        head.checkpoint_at = now
        head.pruned_total += pruned
        head.save(
            update_fields=[
                "checkpoint_seq",
                "checkpoint_hash",
                "checkpoint_key_id",
                "checkpoint_mac",
                "checkpoint_at",
                "pruned_total",
            ]
        )
        audit_record(
            actor=actor,
            action="events.pruned",
            tenant=tenant,
            target_type="event_chain",
            target_id=key,
            target_repr=f"events before {cutoff:%Y-%m-%d %H:%M} UTC",
            changes={"checkpoint_seq": [report.checkpoint_seq, last_seq], "pruned": [None, pruned]},
        )
    _delete_pruned_leftovers(key)
    _prune_side_tables(tenant, cutoff)
    return PruneResult(key, pruned=pruned, checkpoint_seq=last_seq)


def chain_resign_checkpoint(key: str) -> bool:
    """Re-sign a checkpoint under the current root key after a root-key rotation (verifying it first)."""
    with transaction.atomic():
        head = lock_chain(key)
        current_id = next(iter(chain_mac_keys()))
        if not head.checkpoint_seq or head.checkpoint_key_id == current_id:
            return False
        valid = chain_signature_valid(
            "checkpoint",
            key,
            head.checkpoint_seq,
            head.checkpoint_hash,
            key_id=head.checkpoint_key_id,
            mac=head.checkpoint_mac,
        )
        if not valid:
            raise errors.Conflict(f"The checkpoint of chain {key} does not verify; it is not re-signed.")
        head.checkpoint_key_id, head.checkpoint_mac = chain_sign(
            "checkpoint", key, head.checkpoint_seq, head.checkpoint_hash
        )
        head.save(update_fields=["checkpoint_key_id", "checkpoint_mac"])
    return True


def _hash_at(key: str, seq: int, floor: int) -> tuple[int, str]:
    if seq <= floor:
        head = EventChain.objects.get(key=key)
        return head.checkpoint_seq, head.checkpoint_hash
    for model in (AuditEvent, KeyUseEvent):
        digest = model.objects.filter(chain=key, seq=seq).values_list("hash", flat=True).first()
        if digest:
            return seq, digest
    raise errors.Conflict(f"Row {seq} of chain {key} is missing.")


def _count_upto(key: str, seq: int) -> int:
    return (
        AuditEvent.objects.filter(chain=key, seq__lte=seq).count()
        + KeyUseEvent.objects.filter(chain=key, seq__lte=seq).count()
    )


def _delete_pruned_leftovers(key: str, batch: int = 10000) -> None:
    """Delete rows at or below the checkpoint, in batches (a crash between batches loses nothing)."""
    head = EventChain.objects.filter(key=key).first()
    if head is None or not head.checkpoint_seq:
        return
    for model in (AuditEvent, KeyUseEvent):
        while True:
            ids = list(
                model.objects.filter(chain=key, seq__lte=head.checkpoint_seq).values_list("pk", flat=True)[:batch]
            )
            if not ids:
                break
            model.objects.filter(pk__in=ids).delete()


def _prune_side_tables(tenant: Tenant | None, cutoff: datetime) -> None:
    if tenant is None:
        ChainVerification.objects.filter(tenant__isnull=True, created_at__lt=cutoff).delete()
        return
    EventDelivery.objects.for_tenant(tenant).filter(attempted_at__lt=cutoff).delete()
    DeadLetter.objects.for_tenant(tenant).filter(created_at__lt=cutoff).delete()
    ChainVerification.objects.for_tenant(tenant).filter(created_at__lt=cutoff).delete()


def events_prune_all(*, now: datetime | None = None) -> list[PruneResult]:
    """Prune every tenant's chain and the vendor chain (the periodic task and the command)."""
    results = [events_prune(tenant=None, now=now)]
    tenant_ids = [int(k.split(":", 1)[1]) for k in chain_keys_all() if k.startswith("tenant:")]
    for tenant in Tenant.objects.filter(pk__in=tenant_ids).iterator():
        results.append(events_prune(tenant=tenant, now=now))
    return results


# --- documents: one shape for export, webhooks and syslog ------------------------------------------


def actor_type(event: AuditEvent) -> str:
    if event.actor_api_key_id:
        return "api_key"
    if event.actor_user_id:
        return "user"
    if event.actor_label.startswith("system:"):
        return "system"
    return "anonymous"


def event_document(row: Row, tenant_external_id: str | None) -> dict[str, Any]:
    """The stable, documented JSON form of one event (docs/events.md lists the fields)."""
    doc: dict[str, Any] = {
        "id": f"{row.chain}:{row.seq}",
        "chain": row.chain,
        "seq": row.seq,
        "tenant": tenant_external_id,
        "time": row.created_at.isoformat(),
    }
    if isinstance(row, AuditEvent):
        doc.update(
            kind="admin",
            action=row.action,
            actor=row.actor_label,
            actor_type=actor_type(row),
            target_type=row.target_type,
            target_id=row.target_id,
            target=row.target_repr,
            changes=row.changes,
            source_ip=row.source_ip or "",
            user_agent=row.user_agent,
        )
    else:
        doc.update(
            kind="key_use",
            minute=row.minute.isoformat(),
            operation=row.operation,
            label=row.label,
            requesting_id=row.requesting_id,
            source_ip=row.source_ip,
            result=row.result,
            count=row.count,
            key_version=row.key_version,
            api_key=(
                {"id": str(row.api_key_uid), "prefix": row.api_key_prefix, "name": row.api_key_name}
                if row.api_key_uid
                else None
            ),
            peer_ip=row.peer_ip,
        )
        if row.details:
            doc["operations"] = detail_operations(row.details)
    doc.update(prev_hash=row.prev_hash, hash=row.hash)
    return doc


def detail_operations(details: str) -> list[dict[str, Any]]:
    """The operations a detailed row lists, as documents: time, object id, request id, custom values, count."""
    operations = []
    for at_ms, object_id, request_id, custom, count in json.loads(details):
        operations.append(
            {
                "time": datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat(timespec="milliseconds"),
                "object_id": object_id,
                "request_id": request_id,
                "custom": custom or {},
                "count": count,
            }
        )
    return operations
