"""Who really used a key, and each use on its own when a tenant asks for it.

Every key-use event names the API key that made the calls and the address they came from,
beside what the caller claimed (service, data label, end user's address) — in the API, the
tenant portal, exports and forwarded events. A tenant in *detailed* mode also gets each
operation with its time, object id, request id and custom values; the counts stay exact either
way. Rows written before these fields existed keep verifying.
"""

from __future__ import annotations

import json

import pytest
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from keycore.models import ApiKey, AuditEvent, KeyUseEvent
from keycore.services.apikeys import api_key_create
from keycore.services.audit import GENESIS_HASH, Actor, chain_key, chain_sign, event_digest
from keycore.services.crypto import CallMeta, crypto_decrypt, crypto_encrypt
from keycore.services.event_export import ExportFilter, export_csv, export_documents, export_querysets
from keycore.services.events import chain_verify, detail_operations, keyuse_append, keyuse_payload
from keycore.services.forwarding import deliver_pending, destination_create
from keycore.services.keyring import read_epoch
from keycore.services.keyuse import KeyUseRecorder, attribution
from keycore.services.tenants import tenant_update
from tests.events.receivers import WebhookReceiver
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

CLAIMED = {"requesting_id": "billing-service", "label": "invoices", "source_ip": "198.51.100.77"}


def url(name: str, tenant) -> str:
    return reverse(f"tenant:{name}", kwargs={"tenant": tenant.external_id})


def crypto_key(name: str) -> tuple[ApiKey, str]:
    return api_key_create(name=name, scopes=["crypto"], actor=Actor.system("tests"))


def call(client, raw_key: str, path: str, body: dict, peer: str):
    response = client.post(
        f"/api/v1/crypto/{path}",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw_key}",
        REMOTE_ADDR=peer,
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def two_keys(client, tenant, recorder):
    """The real billing key from its server, and a stolen one used from elsewhere, both claiming billing."""
    billing, billing_raw = crypto_key("billing prod")
    stolen, stolen_raw = crypto_key("ci runner")
    for _ in range(3):
        call(client, billing_raw, "encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, **CLAIMED}, "10.0.0.5")
    call(client, stolen_raw, "encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, **CLAIMED}, "192.0.2.44")
    recorder.flush()
    return billing, stolen


def test_the_tenant_sees_the_key_and_the_address_beside_what_was_claimed(client, member, tenant, two_keys):
    _billing, stolen = two_keys
    client.force_login(member)
    page = client.get(url("events", tenant))
    text = page.content.decode()
    assert "(claimed)" in text, "claimed values are labelled as such"
    rows = {(r["api_key_name"], r["peer_ip"]): r for r in page.context["rows"]}
    assert set(rows) == {("billing prod", "10.0.0.5"), ("ci runner", "192.0.2.44")}
    assert rows["ci runner", "192.0.2.44"]["requesting_id"] == "billing-service"
    assert rows["ci runner", "192.0.2.44"]["source_ip"] == "198.51.100.77"
    assert f"kc_{stolen.prefix}" in text and "192.0.2.44" in text
    narrowed = client.get(url("events", tenant), {"api_key": f"kc_{stolen.prefix}_"})
    assert [(r["api_key_name"], r["n"]) for r in narrowed.context["rows"]] == [("ci runner", 1)]


def test_exports_filter_by_api_key_and_carry_it(client, member, tenant, two_keys):
    billing, stolen = two_keys
    client.force_login(member)
    lines = b"".join(
        client.get(url("events_export", tenant), {"format": "jsonl", "kind": "key_use", "api_key": stolen.prefix})
    ).splitlines()
    documents = [json.loads(line) for line in lines if json.loads(line)["kind"] == "key_use"]
    assert [d["count"] for d in documents] == [1]
    (document,) = documents
    assert document["api_key"] == {"id": str(stolen.uid), "prefix": stolen.prefix, "name": "ci runner"}
    assert document["peer_ip"] == "192.0.2.44" and document["requesting_id"] == "billing-service"
    csv_text = b"".join(
        client.get(url("events_export", tenant), {"format": "csv", "kind": "key_use", "api_key": str(billing.uid)})
    ).decode()
    header, *rows, head = csv_text.strip().splitlines()
    assert {"api_key_prefix", "api_key_name", "api_key_id", "peer_ip"} <= set(header.split(","))
    assert len(rows) == 1 and "billing prod" in rows[0] and "10.0.0.5" in rows[0]
    assert "chain_head" in head
    assert AuditEvent.objects.filter(action="events.exported", changes__filters__1__api_key=str(billing.uid)).exists()


def test_admin_events_filter_by_the_acting_key(tenant):
    key, _ = crypto_key("onboarding")
    tenant_update(tenant=tenant, actor=Actor(label="api-key:onboarding", api_key=key), name="Acme 2")
    audit, keyuse = export_querysets(tenant, ExportFilter(api_key=key.prefix))
    assert [e.action for e in audit] == ["tenant.updated"] and not keyuse.exists()


# --- detailed mode ------------------------------------------------------------------------------------------


def detailed_calls(client, raw_key: str) -> None:
    stored = call(
        client,
        raw_key,
        "encrypt",
        {"tenant": "acme", "fields": {"a": "AA=="}, **CLAIMED, "object_id": "inv-1", "request_id": "req-a"},
        "10.0.0.5",
    )
    call(
        client,
        raw_key,
        "decrypt",
        {"tenant": "acme", **stored, **CLAIMED, "object_id": "inv-1", "request_id": "req-b", "custom": {"case": 7}},
        "10.0.0.5",
    )
    call(
        client,
        raw_key,
        "batch-encrypt",
        {
            "requesting_id": "billing-service",
            "label": "invoices",
            "request_id": "req-c",
            "items": [{"tenant": "acme", "fields": {}, "object_id": f"inv-{n}"} for n in (2, 3)],
        },
        "10.0.0.5",
    )


def test_without_detailed_mode_only_counts_are_kept(client, tenant, recorder):
    _key, raw = crypto_key("billing prod")
    detailed_calls(client, raw)
    recorder.flush()
    rows = KeyUseEvent.objects.for_tenant(tenant)
    assert not any(row.details for row in rows)
    assert rows.aggregate(n=Sum("count"))["n"] == 4
    assert all("operations" not in d for d in export_documents(tenant, ExportFilter(kind="key_use")))


def test_the_owner_turns_detailed_mode_on_and_each_operation_is_recorded(client, owner, member, tenant, recorder):
    client.force_login(owner)
    page = client.get(url("events", tenant))
    assert "As counts" in page.content.decode()
    assert client.post(reverse("account_reauthenticate"), {"password": PASSWORD}).status_code == 302
    saved = client.post(
        url("settings_save", tenant), {"event_retention_days": 365, "detailed_events": "on", "require_mfa": ""}
    )
    assert saved.status_code == 302
    tenant.refresh_from_db()
    assert tenant.detailed_events
    changed = AuditEvent.objects.filter(tenant=tenant, action="tenant.updated").latest("seq")
    assert changed.changes["detailed_events"] == [False, True]
    assert "In detail" in client.get(url("events", tenant)).content.decode()

    _key, raw = crypto_key("billing prod")
    detailed_calls(client, raw)
    recorder.flush()
    rows = list(KeyUseEvent.objects.for_tenant(tenant).order_by("seq"))
    assert sum(row.count for row in rows) == 4, "the counts stay exact"
    operations = [
        (row.operation, op["object_id"], op["request_id"], op["custom"], op["count"])
        for row in rows
        for op in detail_operations(row.details)
    ]
    assert sorted(operations) == sorted(
        [
            ("encrypt", "inv-1", "req-a", {}, 1),
            ("decrypt", "inv-1", "req-b", {"case": 7}, 1),
            ("encrypt", "inv-2", "req-c", {}, 1),
            ("encrypt", "inv-3", "req-c", {}, 1),
        ]
    )
    assert {(row.api_key_name, row.peer_ip, row.requesting_id) for row in rows} == {
        ("billing prod", "10.0.0.5", "billing-service")
    }
    assert chain_verify(tenant.pk).ok

    documents = list(export_documents(tenant, ExportFilter(kind="key_use")))
    exported = [op for d in documents for op in d["operations"]]
    assert len(exported) == 4 and all(op["time"].endswith("+00:00") for op in exported)
    assert "inv-3" in "".join(export_csv(iter(documents)))
    client.force_login(member)
    lines = b"".join(client.get(url("events_export", tenant), {"format": "jsonl", "kind": "key_use"})).splitlines()
    assert sum(len(json.loads(line).get("operations", [])) for line in lines) == 4


def test_detailed_events_are_forwarded_like_the_rest(client, tenant, recorder):
    tenant_update(tenant=tenant, actor=Actor.system("tests"), detailed_events=True)
    receiver = WebhookReceiver()
    try:
        destination, _ = destination_create(
            tenant=tenant, kind="webhook", name="siem", settings_={"url": receiver.url}, actor=Actor.system("t")
        )
        key, raw = crypto_key("billing prod")
        detailed_calls(client, raw)
        recorder.flush()
        deliver_pending(destination.pk)
        forwarded = [e for e in receiver.accepted_events() if e["kind"] == "key_use"]
        ids = sorted(op["object_id"] for e in forwarded for op in e["operations"])
        assert ids == ["inv-1", "inv-1", "inv-2", "inv-3"]
        assert {e["api_key"]["prefix"] for e in forwarded} == {key.prefix}
    finally:
        receiver.close()


def test_turning_detailed_mode_on_reaches_a_process_that_cached_the_tenant(
    tenant, recorder, django_capture_on_commit_callbacks
):
    meta = CallMeta(requesting_id="svc", object_id="doc-9")
    crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=meta)  # the tenant is now cached as "counts"
    epoch = read_epoch()
    with django_capture_on_commit_callbacks(execute=True):
        tenant_update(tenant=tenant, actor=Actor.system("tests"), detailed_events=True)
    assert read_epoch() == epoch + 1, "every other process drops its cached tenants within the poll"
    stored = crypto_encrypt(tenant="acme", fields={"f": b"x"}, meta=meta)
    crypto_decrypt(tenant="acme", edek=stored.edek, fields=stored.fields, meta=meta)
    recorder.flush()
    detailed = KeyUseEvent.objects.for_tenant(tenant).exclude(details="")
    assert detailed.aggregate(n=Sum("count"))["n"] == 2


def test_a_long_backlog_of_details_is_kept_as_counts_not_lost(tenant, settings):
    settings.KEYCORE_KEYUSE_DETAIL_BACKLOG = 5
    recorder = KeyUseRecorder()
    via = attribution(None, "10.0.0.5")
    for n in range(12):
        recorder.record_detail(tenant.pk, "decrypt", "ok", "", "svc", "", 1, 1, via, f"doc-{n}", "", None)
    recorder.cut()
    assert recorder.details_folded == 7 and recorder.pending() == 12
    assert recorder.write_pending() == 12
    rows = KeyUseEvent.objects.for_tenant(tenant)
    assert rows.aggregate(n=Sum("count"))["n"] == 12
    assert sum(row.count for row in rows if row.details) == 5
    assert {row.peer_ip for row in rows} == {"10.0.0.5"}


def test_many_operations_are_split_into_rows_of_bounded_size(tenant):
    recorder = KeyUseRecorder()
    for n in range(250):
        recorder.record_detail(tenant.pk, "encrypt", "ok", "", "svc", "", 1, 1, None, f"doc-{n}", "r", {"n": n})
    assert recorder.flush() == 250
    rows = list(KeyUseEvent.objects.for_tenant(tenant).order_by("seq"))
    assert len(rows) == 3 and [row.count for row in rows] == [100, 100, 50]
    assert [op["object_id"] for row in rows for op in json_operations(row)] == [f"doc-{n}" for n in range(250)]


def json_operations(row) -> list[dict]:
    return detail_operations(row.details)


# --- rows of the first payload version ---------------------------------------------------------------------


def test_rows_written_before_attribution_keep_verifying_and_cannot_be_downgraded(tenant):
    keyuse_append(
        [
            {
                "tenant_id": tenant.pk,
                "minute": timezone.now().replace(second=0, microsecond=0),
                "operation": "encrypt",
                "label": "",
                "requesting_id": "old",
                "source_ip": "127.0.0.1",
                "result": "ok",
                "count": 3,
                "key_version": 1,
                "payload_version": 1,
            }
        ]
    )
    old = KeyUseEvent.objects.for_tenant(tenant).get(requesting_id="old")
    assert "api_key" not in keyuse_payload(old), "a version-1 row hashes what it held"
    recorder = KeyUseRecorder()
    recorder.record(tenant.pk, "encrypt", "ok", "", "new", "", 1, 2, attribution(None, "10.0.0.9"))
    recorder.flush()
    assert chain_verify(tenant.pk).ok
    new = KeyUseEvent.objects.for_tenant(tenant).get(requesting_id="new")
    assert new.payload_version == 2 and new.peer_ip == "10.0.0.9"
    KeyUseEvent.objects.filter(pk=new.pk).update(payload_version=1)  # hide the attribution from the hash
    report = chain_verify(tenant.pk)
    assert not report.ok and report.first_broken_seq == new.seq
    KeyUseEvent.objects.filter(pk=new.pk).update(payload_version=2, peer_ip="10.0.0.1")
    assert chain_verify(tenant.pk).first_broken_seq == new.seq, "the peer address is covered by the hash"


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_existing_rows_verifying(tenant):
    """Rows of a database migrated from before attribution are marked version 1, and their chain holds."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    (target,) = [node for node in graph.leaf_nodes() if node[0] == "keycore"]
    (adding,) = [node for node in graph.nodes if node[0] == "keycore" and node[1].endswith("_detailed_events")]
    (before,) = graph.node_map[adding].parents
    executor.migrate([before.key])
    old_apps = executor.loader.project_state([before.key]).apps
    old_model = old_apps.get_model("keycore", "KeyUseEvent")
    chain_model = old_apps.get_model("keycore", "EventChain")

    key = chain_key(tenant.pk)
    head = chain_model.objects.get(key=key)
    row = old_model(
        tenant_id=tenant.pk,
        minute=timezone.now().replace(second=0, microsecond=0),
        operation="decrypt",
        label="legacy",
        requesting_id="old-svc",
        source_ip="",
        result="ok",
        count=5,
        key_version=1,
        chain=key,
        seq=head.seq + 1,
        prev_hash=head.last_hash or GENESIS_HASH,
        created_at=timezone.now(),
    )
    row.hash = event_digest(
        row.prev_hash,
        {
            "chain": row.chain,
            "seq": row.seq,
            "tenant": row.tenant_id,
            "minute": row.minute.isoformat(),
            "operation": row.operation,
            "label": row.label,
            "requesting_id": row.requesting_id,
            "source_ip": row.source_ip,
            "result": row.result,
            "count": row.count,
            "key_version": row.key_version,
            "created_at": row.created_at.isoformat(),
        },
    )
    row.save()
    head.seq, head.last_hash = row.seq, row.hash
    head.head_key_id, head.head_mac = chain_sign("head", key, row.seq, row.hash)
    head.save()
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    migrated = KeyUseEvent.objects.get(requesting_id="old-svc")
    assert migrated.payload_version == 1
    assert chain_verify(tenant.pk).ok
