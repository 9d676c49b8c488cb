"""The vendor bridge for tenants and invitations: what the vendor portal does, for onboarding pipelines."""

from __future__ import annotations

import pytest
from django.core import mail

from keycore.models import AuditEvent, Invitation, KmsConfig, Tenant, TenantKey
from keycore.models.tenants import TenantStatus

pytestmark = pytest.mark.django_db


def test_it_creates_a_tenant_with_a_working_key_and_invites_its_admins(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        answer = api.post(
            "/api/v1/tenants/",
            {"external_id": "initech", "name": "Initech", "admins": [{"email": "it@initech.example"}]},
        )
    assert answer.status == 201
    assert answer.json["external_id"] == "initech" and answer.json["status"] == "active"
    assert answer.json["key_ownership"] == "vendor"
    tenant = Tenant.objects.get(external_id="initech")
    assert KmsConfig.objects.for_tenant(tenant).filter(is_primary=True, owner="vendor").exists()
    assert TenantKey.objects.for_tenant(tenant).count() == 1
    assert Invitation.objects.for_tenant(tenant).get().email == "it@initech.example"
    assert [m.to for m in mail.outbox] == [["it@initech.example"]]
    event = AuditEvent.objects.filter(action="tenant.created", tenant=tenant).get()
    assert event.actor_label == "api-key:test key" and event.actor_api_key is not None
    encrypted = api.post("/api/v1/crypto/encrypt", {"tenant": "initech", "fields": {}, "requesting_id": "t"})
    assert encrypted.status == 200


def test_it_reports_invalid_and_duplicate_tenants_field_by_field(api, tenant):
    answer = api.post("/api/v1/tenants/", {"external_id": "no spaces!", "name": ""})
    assert answer.status == 400 and answer.problem_type == "invalid-input"
    assert set(answer.json["errors"]) == {"external_id", "name"}
    answer = api.post("/api/v1/tenants/", {"external_id": "acme", "name": "Another Acme"})
    assert answer.status == 409 and answer.json["errors"] == {"external_id": ["Already in use."]}
    answer = api.post("/api/v1/tenants/", {"external_id": "x1", "name": "X", "admins": [{"email": "nope"}]})
    assert answer.status == 400 and "admins[0].email" in answer.json["errors"]
    assert not Tenant.objects.filter(external_id="x1").exists()


def test_it_reads_and_changes_a_tenant_but_never_its_external_id(api, tenant):
    assert api.get("/api/v1/tenants/acme/").json["name"] == "Acme Corporation"
    answer = api.patch("/api/v1/tenants/acme/", {"name": "Acme Corp.", "key_rotation_days": 90})
    assert answer.status == 200 and answer.json["name"] == "Acme Corp." and answer.json["key_rotation_days"] == 90
    answer = api.patch("/api/v1/tenants/acme/", {"external_id": "acme2"})
    assert answer.status == 200 and answer.json["external_id"] == "acme"
    answer = api.patch("/api/v1/tenants/acme/", {"event_retention_days": 0})
    assert answer.status == 400 and "event_retention_days" in answer.json["errors"]
    assert api.get("/api/v1/tenants/nobody/").problem_type == "tenant-not-found"


def test_suspend_reactivate_and_offboard_follow_the_tenant_lifecycle(api, tenant, django_capture_on_commit_callbacks):
    body = {"tenant": "acme", "fields": {"a": "AA=="}, "requesting_id": "t"}
    with django_capture_on_commit_callbacks(execute=True):
        answer = api.post("/api/v1/tenants/acme/suspend/", {"reason": "unpaid invoices"})
    assert answer.status == 200 and answer.json["status"] == "suspended"
    assert api.post("/api/v1/crypto/encrypt", body).problem_type == "tenant-inactive"
    again = api.post("/api/v1/tenants/acme/suspend/")
    assert again.status == 409 and again.problem_type == "conflict"
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/tenants/acme/reactivate/").json["status"] == "active"
    assert api.post("/api/v1/crypto/encrypt", body).status == 200
    answer = api.post("/api/v1/tenants/acme/offboard/")
    assert answer.json["status"] == "offboarding" and answer.json["shred_after"] is not None
    event = AuditEvent.objects.filter(action="tenant.suspend").get()
    assert event.changes["reason"] == [None, "unpaid invoices"]


def test_bulk_creates_the_valid_tenants_and_reports_the_others_in_order(api, tenant):
    items = [
        {"external_id": "t-1", "name": "One"},
        {"external_id": "bad id", "name": "Two"},
        {"external_id": "acme", "name": "Duplicate"},
        "not an object",
        {"external_id": "t-5", "name": "Five", "admins": [{"email": "root@five.example", "role": "admin"}]},
    ]
    answer = api.post("/api/v1/tenants/bulk/", {"tenants": items})
    assert answer.status == 400  # the envelope itself: every item must be an object
    del items[3]
    answer = api.post("/api/v1/tenants/bulk/", {"tenants": items})
    assert answer.status == 200
    assert (answer.json["created"], answer.json["failed"]) == (2, 2)
    results = answer.json["results"]
    assert [r["status"] for r in results] == [201, 400, 409, 201]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert results[0]["tenant"]["external_id"] == "t-1"
    assert results[1]["error"]["type"].endswith("/invalid-input") and "external_id" in results[1]["error"]["errors"]
    assert results[2]["error"]["type"].endswith("/conflict")
    assert set(Tenant.objects.values_list("external_id", flat=True)) == {"acme", "t-1", "t-5"}
    assert Invitation.objects.get(email="root@five.example").role == "admin"


def test_bulk_places_each_tenant_under_the_call_or_item_vendor_key_and_counts_it(api, tenant):
    from keycore.services.summary import tenant_counts, tenant_counts_recompute

    us = api.post("/api/v1/vendor-keys/", {"provider": "local", "name": "US key"}).json
    api.post("/api/v1/vendor-keys/", {"provider": "local", "name": "EU key"})
    answer = api.post(
        "/api/v1/tenants/bulk/",
        {
            "vendor_key": us["uid"],
            "tenants": [
                {"external_id": "u-1", "name": "U1"},
                {"external_id": "e-1", "name": "E1", "vendor_key": "EU key"},
                {"external_id": "m-1", "name": "M1", "vendor_key": "Mars key"},
                {"external_id": "u-2", "name": "U2"},
            ],
        },
    )
    assert answer.status == 200
    results = answer.json["results"]
    assert [r["status"] for r in results] == [201, 201, 400, 201]
    assert "vendor_key" in results[2]["error"]["errors"]
    assert all(results[i]["tenant"]["key_status"] == "healthy" for i in (0, 1, 3))

    def served(external_id):
        return KmsConfig.objects.get(tenant__external_id=external_id, is_primary=True).vendor_key.name

    assert [served(x) for x in ("u-1", "e-1", "u-2")] == ["US key", "EU key", "US key"]
    assert not Tenant.objects.filter(external_id="m-1").exists()
    assert tenant_counts()["key_status"]["healthy"] == 4  # acme and the three new ones
    assert tenant_counts_recompute() == []


def test_bulk_takes_at_most_a_thousand(api):
    answer = api.post(
        "/api/v1/tenants/bulk/", {"tenants": [{"external_id": f"t{i}", "name": "T"} for i in range(1001)]}
    )
    assert answer.status == 400 and "tenants" in answer.json["errors"]
    assert api.post("/api/v1/tenants/bulk/", {"tenants": []}).status == 400
    assert not Tenant.objects.exists()


def test_the_tenant_list_is_paginated_by_cursor_and_filtered_like_the_portal(api, tenant, other_tenant):
    from tests.factories import make_tenant

    for i in range(5):
        make_tenant(f"acme-sub-{i}", f"Acme Subsidiary {i}")
    Tenant.objects.filter(external_id="globex").update(status=TenantStatus.SUSPENDED)
    seen, path = [], "/api/v1/tenants/?page_size=3"
    while path:
        page = api.get(path).json
        assert len(page["results"]) <= 3
        seen += [t["external_id"] for t in page["results"]]
        path = page["next"] and page["next"].split("testserver", 1)[1]
    assert len(seen) == len(set(seen)) == 7
    assert {t["external_id"] for t in api.get("/api/v1/tenants/?q=acme").json["results"]} == {
        "acme",
        *(f"acme-sub-{i}" for i in range(5)),
    }
    assert [t["external_id"] for t in api.get("/api/v1/tenants/?q=globex").json["results"]] == ["globex"]
    assert [t["external_id"] for t in api.get("/api/v1/tenants/?status=suspended").json["results"]] == ["globex"]
    assert [t["external_id"] for t in api.get("/api/v1/tenants/?q=sidiary&match=contains").json["results"]] == [
        f"acme-sub-{i}" for i in reversed(range(5))
    ]
    answer = api.get("/api/v1/tenants/?status=sleeping")
    assert answer.status == 400 and "status" in answer.json["errors"]
    answer = api.get("/api/v1/tenants/?cursor=garbage")
    assert answer.status == 400 and answer.json["errors"] == {"cursor": ["Invalid cursor."]}


def test_invitations_are_created_listed_resent_and_revoked(api, tenant):
    answer = api.post("/api/v1/tenants/acme/invitations/", {"email": "SecOps@Acme.example", "role": "admin"})
    assert answer.status == 201
    invitation = answer.json
    assert invitation["email"] == "secops@acme.example" and invitation["state"] == "pending"
    assert set(invitation) >= {"uid", "role", "expires_at"} and "token" not in str(invitation).lower()
    listed = api.get("/api/v1/tenants/acme/invitations/").json["results"]
    assert [i["uid"] for i in listed] == [invitation["uid"]]
    assert api.post(f"/api/v1/tenants/acme/invitations/{invitation['uid']}/resend/").status == 200
    answer = api.post(f"/api/v1/tenants/acme/invitations/{invitation['uid']}/revoke/")
    assert answer.status == 200 and answer.json["state"] == "revoked"
    assert api.post(f"/api/v1/tenants/acme/invitations/{invitation['uid']}/revoke/").status == 409
    answer = api.post("/api/v1/tenants/acme/invitations/", {"email": "x@acme.example", "role": "operator"})
    assert answer.status == 400 and "role" in answer.json["errors"]


def test_an_existing_member_cannot_be_invited_again(api, owner):
    answer = api.post("/api/v1/tenants/acme/invitations/", {"email": owner.email})
    assert answer.status == 409 and answer.json["errors"] == {"email": ["Already a member."]}


def test_a_revoked_tenant_reads_revoked_not_ok_and_the_list_filters_on_it(api, tenant, other_tenant):
    """The API once answered `health: ok` for a tenant whose data was dark; key_status says what matters."""
    from keycore.services import keys
    from keycore.services.audit import Actor

    fresh = api.get("/api/v1/tenants/acme/").json
    assert (fresh["key_status"], fresh["health"]) == ("healthy", "ok")
    assert fresh["key_status_detail"].startswith("Healthy:")
    # acme's own key (a local one relabelled: the rule is about who owns the key), made primary, then revoked
    own = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Own", {}, {}), actor=Actor.system("t")
    )
    KmsConfig.objects.filter(pk=own.pk).update(owner="tenant")
    keys.kms_config_make_primary(config=KmsConfig.objects.get(pk=own.pk), actor=Actor.system("t"))
    keys.kms_config_revoke(config=KmsConfig.objects.get(pk=own.pk), actor=Actor.system("t"))
    answer = api.get("/api/v1/tenants/acme/").json
    assert answer["key_status"] == "revoked"
    assert answer["key_status_detail"].startswith("Revoked by the tenant: its data cannot be")
    assert answer["health"] == "ok", "health stays the KMS's last check, for old clients"
    dark = api.get("/api/v1/tenants/?key_status=dark").json["results"]
    assert [t["external_id"] for t in dark] == ["acme"]
    assert [t["external_id"] for t in api.get("/api/v1/tenants/?key_status=healthy").json["results"]] == ["globex"]
    assert api.get("/api/v1/tenants/?key_status=fine").status == 400
    suspended = api.post("/api/v1/tenants/globex/suspend/", {"reason": "unpaid"}).json
    assert suspended["key_status"] == "suspended", "the status change answers with the new key status"
