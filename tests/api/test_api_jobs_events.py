"""Rekey jobs, key-use events and the audit trail through the vendor bridge."""

from __future__ import annotations

import json

import pytest

from keycore.models import AuditEvent, RekeyJob
from keycore.services.keyuse import recorder

pytestmark = pytest.mark.django_db


def test_a_rekey_job_is_started_read_cancelled_and_retried(api, tenant, other_tenant):
    started = api.post("/api/v1/tenants/acme/rekey-jobs/")
    assert started.status == 202
    job = started.json
    assert job["state"] == "pending" and job["tenant"] == "acme" and job["total"] == 1
    assert job["started_by"] == "api-key:test key"
    assert api.get(f"/api/v1/rekey-jobs/{job['uid']}/").json == job
    api.post("/api/v1/tenants/globex/rekey-jobs/")

    assert len(api.get("/api/v1/rekey-jobs/").json["results"]) == 2
    assert [j["uid"] for j in api.get("/api/v1/rekey-jobs/?tenant=acme").json["results"]] == [job["uid"]]
    assert [j["uid"] for j in api.get("/api/v1/tenants/acme/rekey-jobs/").json["results"]] == [job["uid"]]

    cancelled = api.post(f"/api/v1/rekey-jobs/{job['uid']}/cancel/")
    assert cancelled.status == 200 and cancelled.json["state"] == "cancelled"
    assert api.post(f"/api/v1/rekey-jobs/{job['uid']}/cancel/").status == 409
    assert [j["uid"] for j in api.get("/api/v1/rekey-jobs/?state=cancelled").json["results"]] == [job["uid"]]
    retried = api.post(f"/api/v1/rekey-jobs/{job['uid']}/retry/")
    assert retried.status == 200 and retried.json["state"] == "pending"
    assert AuditEvent.objects.filter(action="rekey_job.cancelled", actor_label="api-key:test key").exists()


def test_unknown_jobs_are_not_found(api):
    missing = "00000000-0000-4000-8000-000000000000"
    for answer in (api.get(f"/api/v1/rekey-jobs/{missing}/"), api.post(f"/api/v1/rekey-jobs/{missing}/cancel/")):
        assert answer.status == 404 and answer.problem_type == "not-found"
    assert api.post("/api/v1/tenants/nobody/rekey-jobs/").problem_type == "tenant-not-found"
    assert not RekeyJob.objects.exists()


def test_key_use_events_show_who_asked_for_what_and_from_where(api, tenant, other_tenant):
    body = {"fields": {"a": "AA=="}, "requesting_id": "billing", "label": "invoices", "source_ip": "203.0.113.9"}
    for _ in range(3):
        api.post("/api/v1/crypto/encrypt", {"tenant": "acme", **body})
    api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {}, "requesting_id": "crm"})
    api.post("/api/v1/crypto/encrypt", {"tenant": "globex", **body})
    recorder.flush()

    events = api.get("/api/v1/tenants/acme/events/").json["results"]
    billing = [e for e in events if e["requesting_id"] == "billing"]
    assert len(billing) == 1 and billing[0]["count"] == 3
    assert billing[0]["operation"] == "encrypt" and billing[0]["result"] == "ok"
    assert billing[0]["label"] == "invoices" and billing[0]["source_ip"] == "203.0.113.9"
    crm = [e for e in events if e["requesting_id"] == "crm"]
    assert crm[0]["source_ip"] == "", "no address claimed: none recorded as claimed"
    assert {e["peer_ip"] for e in events} == {"127.0.0.1"}, "the address the calls really came from"
    assert {e["requesting_id"] for e in api.get("/api/v1/tenants/acme/events/?requesting_id=crm").json["results"]} == {
        "crm"
    }
    assert api.get("/api/v1/tenants/acme/events/?operation=decrypt").json["results"] == []
    assert sum(e["count"] for e in api.get("/api/v1/tenants/globex/events/").json["results"]) == 1


def test_key_use_names_the_api_key_and_peer_beside_what_the_caller_claims(api, make_key, tenant):
    """A stolen crypto key claiming to be billing-service from a chosen address is still shown for what it is."""
    from keycore.models import ApiKey

    thief = make_key(["crypto"], name="ci runner")
    claimed = {"requesting_id": "billing-service", "label": "invoices", "source_ip": "198.51.100.77"}
    answer = api.client.post(
        "/api/v1/crypto/encrypt",
        data=json.dumps({"tenant": "acme", "fields": {"a": "AA=="}, **claimed}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {thief}",
        REMOTE_ADDR="192.0.2.44",
    )
    assert answer.status_code == 200
    api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, **claimed})
    recorder.flush()

    stolen = ApiKey.objects.get(name="ci runner")
    rows = api.get(f"/api/v1/tenants/acme/events/?api_key=kc_{stolen.prefix}_").json["results"]
    assert len(rows) == 1
    (row,) = rows
    assert row["api_key"] == {"id": str(stolen.uid), "prefix": stolen.prefix, "name": "ci runner"}
    assert row["peer_ip"] == "192.0.2.44", "the peer address, not the claimed one"
    assert (row["requesting_id"], row["label"], row["source_ip"]) == ("billing-service", "invoices", "198.51.100.77")
    by_id = api.get(f"/api/v1/tenants/acme/events/?api_key={stolen.uid}").json["results"]
    assert [r["seq"] for r in by_id] == [row["seq"]]
    everyone = api.get("/api/v1/tenants/acme/events/").json["results"]
    assert {r["api_key"]["name"] for r in everyone} == {"ci runner", "test key"}


def test_the_audit_trail_is_filtered_by_tenant_and_action(api, tenant, other_tenant):
    api.patch("/api/v1/tenants/acme/", {"name": "Acme Corp."})
    events = api.get("/api/v1/audit/?tenant=acme&action=tenant.").json["results"]
    assert [e["action"] for e in events] == ["tenant.updated", "tenant.created"]
    assert events[0]["changes"] == {"name": ["Acme Corporation", "Acme Corp."]}
    assert events[0]["actor"] == "api-key:test key" and events[0]["tenant"] == "acme"
    assert len(events[0]["hash"]) == 64
    assert all(e["tenant"] == "globex" for e in api.get("/api/v1/audit/?tenant=globex").json["results"])
    assert api.get("/api/v1/audit/?since=yesterday").status == 400
    # offsets Python accepts but PostgreSQL does not, and dates that overflow in UTC: 400 or answered, never 500
    assert api.get("/api/v1/audit/?since=0353-10-21T12:48:26-18:53").status == 200
    assert api.get("/api/v1/tenants/acme/events/?until=0001-01-01T00:00:00%2B05:00").status == 400
