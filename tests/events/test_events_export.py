"""Export: CSV and JSON Lines of a filtered range, in chain order, streamed — rows are read from the
database a chunk at a time while the response is consumed, never all at once."""

from __future__ import annotations

import csv
import io
import itertools
import json

import pytest
from django.urls import reverse

from keycore.models import AuditEvent, KeyUseEvent
from keycore.services import event_export as event_services
from keycore.services.event_export import ExportFilter, export_csv, export_documents, export_jsonl
from tests.events.conftest import use_keys

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(tenant, recorder, admin_actor):
    from keycore.services.tenants import tenant_update

    use_keys(tenant, encrypts=4, decrypts=2, label="invoices", who="billing-svc")
    tenant_update(tenant=tenant, actor=admin_actor, name='=HYPERLINK("http://evil.example")')
    use_keys(tenant, encrypts=1, decrypts=1, label="payroll", who="hr-svc")
    return tenant


def export(client, tenant, **params):
    url = reverse("tenant:events_export", kwargs={"tenant": tenant.external_id})
    return client.get(url, params)


def body(response) -> str:
    assert response.streaming, "exports are streamed"
    return b"".join(response.streaming_content).decode()


def test_csv_has_a_header_and_every_event_in_chain_order(client, member, history):
    client.force_login(member)
    response = export(client, history, format="csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment;" in response["Content-Disposition"] and ".csv" in response["Content-Disposition"]
    assert response["Cache-Control"] == "no-store"
    *rows, head = csv.DictReader(io.StringIO(body(response)))
    assert head["kind"] == "chain_head" and head["id"] == f"tenant:{history.pk}:head"
    assert json.loads(head["head"])["seq"] == int(rows[-1]["seq"]) and head["hash"] == rows[-1]["hash"]
    seqs = [int(r["seq"]) for r in rows]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    kinds = {r["kind"] for r in rows}
    assert kinds == {"admin", "key_use"}
    uses = [r for r in rows if r["kind"] == "key_use"]
    assert sum(int(r["count"]) for r in uses if r["operation"] == "encrypt") == 5
    assert {r["requesting_id"] for r in uses} == {"billing-svc", "hr-svc"}
    renamed = next(r for r in rows if r["action"] == "tenant.updated")
    assert json.loads(renamed["changes"])["name"][1].startswith("=HYPERLINK")
    # a cell a spreadsheet would run as a formula is defused
    assert all(not cell.startswith("=") for r in rows for cell in r.values())


def test_json_lines_carry_the_chain_links(client, member, history):
    client.force_login(member)
    response = export(client, history, format="jsonl")
    assert response["Content-Type"].startswith("application/x-ndjson")
    *documents, head = [json.loads(line) for line in body(response).splitlines()]
    assert (head["kind"], head["seq"], head["hash"]) == ("chain_head", documents[-1]["seq"], documents[-1]["hash"])
    assert set(head) == {"kind", "chain", "seq", "hash", "time", "key_id", "signature"}
    assert [d["seq"] for d in documents] == list(range(1, len(documents) + 1))
    for earlier, later in itertools.pairwise(documents):
        assert later["prev_hash"] == earlier["hash"]
    assert all(d["tenant"] == "acme" for d in documents)


def events_of(response) -> list[dict]:
    """The exported events, without the signed head every export ends with."""
    *documents, head = [json.loads(line) for line in body(response).splitlines()]
    assert head["kind"] == "chain_head"
    return documents


def test_filters_choose_the_range_and_kind(client, member, history):
    client.force_login(member)
    documents = events_of(export(client, history, format="jsonl", label="payroll"))
    assert documents and all(d["kind"] == "key_use" and d["label"] == "payroll" for d in documents)
    documents = events_of(export(client, history, format="jsonl", action="tenant."))
    assert [d["action"] for d in documents] == ["tenant.created", "tenant.updated"]
    documents = events_of(export(client, history, format="jsonl", who="hr-"))
    assert {d["requesting_id"] for d in documents} == {"hr-svc"}
    documents = events_of(export(client, history, format="jsonl", kind="admin"))
    assert {d["kind"] for d in documents} == {"admin"}
    future = export(client, history, format="jsonl", since="2999-01-01T00:00")
    assert events_of(future) == [], "no event, and still the head"


def test_every_export_is_audited(client, member, history):
    client.force_login(member)
    body(export(client, history, format="csv", label="payroll"))
    event = AuditEvent.objects.filter(action="events.exported").latest("id")
    assert event.actor_user_id == member.pk and event.tenant_id == history.pk
    assert event.changes == {"format": [None, "csv"], "filters": [None, {"label": "payroll"}]}


def test_an_unknown_format_is_404_and_another_tenant_is_404(client, member, outsider, history):
    client.force_login(member)
    assert export(client, history, format="xlsx").status_code == 404
    client.force_login(outsider)
    assert export(client, history, format="csv").status_code == 404


def test_the_export_streams_a_chunk_at_a_time(tenant, monkeypatch):
    """6,000 rows, chunks of 200: after the first lines only the first chunk was loaded; after the last, every
    row was loaded once. (The size of the export does not change what this shows.)"""
    from datetime import UTC, datetime

    from keycore.services.events import keyuse_append

    rows = [
        {
            "tenant_id": tenant.pk,
            "minute": datetime(2026, 1, 1, 0, i % 60, tzinfo=UTC),
            "operation": "decrypt",
            "label": f"label-{i}",
            "requesting_id": "svc",
            "source_ip": "",
            "result": "ok",
            "count": 1,
            "key_version": 1,
        }
        for i in range(6_000)
    ]
    keyuse_append(rows)
    built = {"n": 0}
    real_from_db = KeyUseEvent.from_db.__func__

    def counting_from_db(cls, db, field_names, values):
        built["n"] += 1
        return real_from_db(cls, db, field_names, values)

    monkeypatch.setattr(KeyUseEvent, "from_db", classmethod(counting_from_db))
    lines = export_jsonl(export_documents(tenant, ExportFilter(kind="key_use"), chunk_size=200))
    first = [next(lines) for _ in range(10)]
    assert len(first) == 10
    assert built["n"] <= 200, f"{built['n']} rows were built to produce 10 lines"
    rest = sum(1 for _ in lines)
    assert rest + 10 == 6_000
    assert built["n"] == 6_000


def test_the_csv_writer_holds_one_row_at_a_time(tenant):
    documents = ({"id": f"x:{i}", "seq": i, "kind": "key_use", "count": 1} for i in range(1, 100_001))
    chunks = export_csv(documents)
    header = next(chunks)
    assert header.startswith("id,seq,kind")
    assert next(chunks).startswith("x:1,1,key_use")
    assert max(len(next(chunks)) for _ in range(1000)) < 200, "each yield is one row, not an accumulated buffer"
    assert event_services.EXPORT_COLUMNS[0] == "id"
