"""Vendor keys through the vendor bridge: named keys in the vendor's KMS (moto's AWS KMS here), the default for new
tenants and per request, tenants moved onto a key by filter, and a tenant that owns its key never moved."""

from __future__ import annotations

import pytest

from keycore.models import AuditEvent, KmsConfig, VendorKey
from keycore.models.keys import ConfigOwner
from keycore.services.audit import Actor
from keycore.services.jobs import job_run
from keycore.services.keys import ConfigInput, kms_config_create, kms_config_make_primary

pytestmark = pytest.mark.django_db


@pytest.fixture
def eu_aws(api, moto):
    settings, secrets = moto.provider_settings(moto.create_key())
    created = api.post(
        "/api/v1/vendor-keys/",
        {"provider": "aws", "name": "EU AWS key", "settings": settings, "secrets": secrets, "make_default": True},
    )
    assert created.status == 201, created.json
    return created.json


def test_a_vendor_key_is_created_tested_and_shown_without_its_secrets(api, eu_aws):
    assert eu_aws["health"] == "ok" and eu_aws["is_default"] and eu_aws["provider"] == "aws"
    assert sorted(eu_aws["secret_fields_set"]) == ["access_key_id", "secret_access_key"]
    assert "arn:aws:kms" in eu_aws["where"]
    assert AuditEvent.objects.filter(action="vendor_key.created", tenant__isnull=True).count() == 1


def test_a_vendor_key_whose_kms_refuses_is_not_saved(api, moto):
    settings, secrets = moto.provider_settings("arn:aws:kms:eu-west-1:123456789012:key/" + "0" * 36)
    answer = api.post(
        "/api/v1/vendor-keys/", {"provider": "aws", "name": "Broken", "settings": settings, "secrets": secrets}
    )
    assert answer.status == 400
    assert not VendorKey.objects.exists()


def test_new_tenants_use_the_default_or_the_key_they_name_one_by_one_and_in_bulk(api, eu_aws):
    local = api.post("/api/v1/vendor-keys/", {"provider": "local", "name": "US key"}).json
    assert api.post("/api/v1/tenants/", {"external_id": "a", "name": "A"}).status == 201
    assert api.post("/api/v1/tenants/", {"external_id": "b", "name": "B", "vendor_key": "US key"}).status == 201
    bulk = api.post(
        "/api/v1/tenants/bulk/",
        {"vendor_key": local["uid"], "tenants": [{"external_id": "c", "name": "C"}, {"external_id": "d", "name": "D"}]},
    )
    assert bulk.json["created"] == 2
    unknown = api.post("/api/v1/tenants/", {"external_id": "e", "name": "E", "vendor_key": "Mars key"})
    assert unknown.status == 400 and "vendor_key" in str(unknown.json)

    def served(external_id):
        return KmsConfig.objects.get(tenant__external_id=external_id, is_primary=True).vendor_key.name

    assert [served(x) for x in "abcd"] == ["EU AWS key", "US key", "US key", "US key"]
    listed = {k["name"]: k for k in api.get("/api/v1/vendor-keys/").json["results"]}
    assert listed["EU AWS key"]["tenants"] == 1 and listed["US key"]["tenants"] == 3
    assert listed["US key"]["key_versions"] == 3
    tenants = api.get(f"/api/v1/tenants/?vendor_key={local['uid']}").json["results"]
    assert sorted(t["external_id"] for t in tenants) == ["b", "c", "d"]


def test_tenants_chosen_by_a_filter_are_moved_by_a_rekey_job(api, eu_aws):
    api.post("/api/v1/vendor-keys/", {"provider": "local", "name": "US key", "make_default": True})
    for name in ("us-1", "us-2", "other"):
        api.post("/api/v1/tenants/", {"external_id": name, "name": name})
    moved = api.post(f"/api/v1/vendor-keys/{eu_aws['uid']}/assign/", {"filter": {"q": "us-"}})
    assert moved.status == 202 and moved.json["refused"] == []
    job = moved.json["job"]
    assert job["kind"] == "vendor_key_move" and job["total"] == 2
    job_run(_job_pk(job["uid"]))
    after = api.get(f"/api/v1/rekey-jobs/{job['uid']}/").json
    assert after["state"] == "succeeded" and after["done"] == 2
    listed = {k["name"]: k for k in api.get("/api/v1/vendor-keys/").json["results"]}
    assert listed["EU AWS key"]["tenants"] == 2 and listed["US key"]["tenants"] == 1


def _job_pk(uid):
    from keycore.models import RekeyJob

    return RekeyJob.objects.get(uid=uid).pk


def test_a_tenant_that_owns_its_key_is_refused_and_told(api, eu_aws, tenant, moto):
    settings, secrets = moto.provider_settings(moto.create_key())
    own = kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.TENANT,
        data=ConfigInput(provider="aws", name="Acme's AWS key", settings=settings, secrets=secrets),
        actor=Actor.system("tenant-portal"),
    )
    job_run(kms_config_make_primary(config=own, actor=Actor.system("tenant-portal")).pk)
    refused = api.post(f"/api/v1/vendor-keys/{eu_aws['uid']}/assign/", {"tenants": ["acme"]})
    assert refused.status == 403 and refused.problem_type == "tenant-sovereignty"
    assert AuditEvent.objects.filter(tenant=tenant, action="vendor.refused").count() == 1
    assert KmsConfig.objects.get(tenant=tenant, is_primary=True) == own


def test_retiring_a_key_that_still_serves_tenants_is_a_conflict(api, eu_aws):
    api.post("/api/v1/tenants/", {"external_id": "a", "name": "A"})
    assert api.post(f"/api/v1/vendor-keys/{eu_aws['uid']}/retire/").status == 409
    check = api.post(f"/api/v1/vendor-keys/{eu_aws['uid']}/check/")
    assert check.status == 200 and check.json["health"] == "ok"


def test_a_retried_create_with_the_same_idempotency_key_creates_one_key(api, moto):
    settings, secrets = moto.provider_settings(moto.create_key())
    body = {"provider": "aws", "name": "EU AWS key", "settings": settings, "secrets": secrets}
    first = api.post("/api/v1/vendor-keys/", body, headers={"Idempotency-Key": "vk-1"})
    again = api.post("/api/v1/vendor-keys/", dict(reversed(body.items())), headers={"Idempotency-Key": "vk-1"})
    assert first.status == again.status == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert VendorKey.objects.count() == 1
    assert AuditEvent.objects.filter(action="vendor_key.created").count() == 1
    # the same key for another key's creation is refused, not answered with the first key
    other = api.post(
        "/api/v1/vendor-keys/", {"provider": "local", "name": "US key"}, headers={"Idempotency-Key": "vk-1"}
    )
    assert other.status == 422 and other.problem_type == "idempotency-key-reused"
    assert list(VendorKey.objects.values_list("name", flat=True)) == ["EU AWS key"]


def test_a_retried_move_with_the_same_idempotency_key_starts_one_job(api, eu_aws):
    from keycore.models import RekeyJob

    api.post("/api/v1/vendor-keys/", {"provider": "local", "name": "US key", "make_default": True})
    api.post("/api/v1/tenants/", {"external_id": "us-1", "name": "us-1"})
    path = f"/api/v1/vendor-keys/{eu_aws['uid']}/assign/"
    first = api.post(path, {"tenants": ["us-1"]}, headers={"Idempotency-Key": "move-1"})
    again = api.post(path, {"tenants": ["us-1"]}, headers={"Idempotency-Key": "move-1"})
    assert first.status == again.status == 202 and again.json == first.json
    assert RekeyJob.objects.filter(kind="vendor_key_move").count() == 1
