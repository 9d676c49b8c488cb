"""Exporting a tenant's security events (JSON lines or CSV), in chain order, with the chain's signed head.

The documents are those of webhooks and syslog (``events.event_document``); the
export itself is audited (``events.exported``). See docs/events.md.
"""

from __future__ import annotations

import csv
import heapq
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from keycore.filtersets import AuditEventFilterSet, KeyUseEventFilterSet
from keycore.models import AuditEvent, KeyUseEvent, Tenant
from keycore.services.apikeys import api_key_lookup
from keycore.services.audit import (
    Actor,
    audit_record,
    chain_key,
)
from keycore.services.events import CHUNK_SIZE, Row, chain_anchor, event_document

EXPORT_COLUMNS = [
    "id",
    "seq",
    "kind",
    "time",
    "tenant",
    "action",
    "operation",
    "actor",
    "requesting_id",
    "target",
    "label",
    "result",
    "count",
    "key_version",
    "minute",
    "source_ip",
    "api_key_prefix",
    "api_key_name",
    "api_key_id",
    "peer_ip",
    "operations",
    "user_agent",
    "changes",
    "prev_hash",
    "hash",
    "head",
]


@dataclass(frozen=True)
class ExportFilter:
    """What to export: a time range and the portal's filters. Key-use filters leave admin rows out and
    vice versa; ``who`` matches a requesting id (key use) or an actor (admin)."""

    kind: str = "all"  # all | admin | key_use
    since: datetime | None = None
    until: datetime | None = None
    operation: str = ""
    label: str = ""
    result: str = ""
    action: str = ""
    who: str = ""
    api_key: str = ""


def export_querysets(tenant: Tenant, f: ExportFilter) -> tuple[QuerySet | None, QuerySet | None]:
    """(admin rows, key-use rows) of a tenant matching ``f``; None where the filter excludes a kind.

    Each kind is filtered by its FilterSet, the one the API's lists and the portals use."""
    shared = {"since": f.since, "until": f.until, "who": f.who}
    audit = keyuse = None
    if f.kind != "key_use" and not (f.operation or f.label or f.result):
        audit = AuditEventFilterSet({**shared, "action": f.action}, queryset=AuditEvent.objects.for_tenant(tenant)).qs
        if f.api_key:  # the key that acted
            field, value = api_key_lookup(f.api_key)
            audit = audit.filter(**{f"actor_api_key__{field}": value})
    if f.kind != "admin" and not f.action:
        keyuse = KeyUseEventFilterSet(
            {**shared, "operation": f.operation, "label": f.label, "result": f.result, "api_key": f.api_key},
            queryset=KeyUseEvent.objects.for_tenant(tenant),
        ).qs
    return audit, keyuse


def events_export_record(*, tenant: Tenant, actor: Actor, fmt: str, f: ExportFilter) -> None:
    """Audit an export: who took which events out of KeyCore, and in what form."""
    chosen = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(f).items() if v and v != "all"}
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="events.exported",
            tenant=tenant,
            target_type="event_chain",
            target_id=chain_key(tenant.pk),
            target_repr=f"{fmt.upper()} export of security events",
            changes={"format": [None, fmt], "filters": [None, chosen]},
        )


def export_documents(tenant: Tenant, f: ExportFilter, *, chunk_size: int = CHUNK_SIZE) -> Iterator[dict[str, Any]]:
    """The matching events in chain order, streamed: at most ``chunk_size`` rows of each table in memory."""
    audit, keyuse = export_querysets(tenant, f)
    streams: list[Iterable[Row]] = []
    if audit is not None:
        streams.append(audit.order_by("seq").iterator(chunk_size=chunk_size))
    if keyuse is not None:
        streams.append(keyuse.order_by("seq").iterator(chunk_size=chunk_size))
    external_id = tenant.external_id
    for row in heapq.merge(*streams, key=lambda r: r.seq):
        yield event_document(row, external_id)


def export_with_head(tenant: Tenant, f: ExportFilter, *, chunk_size: int = CHUNK_SIZE) -> Iterator[dict[str, Any]]:
    """:func:`export_documents`, then the chain's signed head as it stands when they are out
    (:func:`chain_anchor`): keep it, and verification will refuse a chain rolled back before it."""
    yield from export_documents(tenant, f, chunk_size=chunk_size)
    anchor = chain_anchor(chain_key(tenant.pk))
    if anchor is not None:
        yield anchor


def export_jsonl(documents: Iterable[dict[str, Any]]) -> Iterator[str]:
    """JSON Lines: one event document per line."""
    for doc in documents:
        yield json.dumps(doc, separators=(",", ":"), sort_keys=True, default=str) + "\n"


def export_csv(documents: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV with a header row; ``changes`` is JSON in its cell. Cells that a spreadsheet would run as a
    formula are prefixed with a quote (CSV injection)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        value = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return value

    writer.writerow(EXPORT_COLUMNS)
    yield flush()
    for doc in documents:
        if doc.get("kind") == "chain_head":  # the last row: the signed head, whole, as JSON in its own column
            head = {**doc, "id": f"{doc['chain']}:head"}
            head["head"] = json.dumps(doc, sort_keys=True, separators=(",", ":"))
            doc = head
        cells = []
        api_key = doc.get("api_key") or {}
        for column in EXPORT_COLUMNS:
            value = api_key.get(column[8:], "") if column.startswith("api_key_") else doc.get(column, "")
            if column in ("changes", "operations"):
                value = json.dumps(value, sort_keys=True, default=str) if value else ""
            cells.append(_csv_safe(value))
        writer.writerow(cells)
        yield flush()


def _csv_safe(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
