"""Idempotency-Key: a retried POST gets the first result; a reused key with another request is refused."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from keycore.models import IdempotencyRecord, Invitation, RekeyJob, Tenant
from tests.api.conftest import ApiClient

pytestmark = pytest.mark.django_db

INITECH = {"external_id": "initech", "name": "Initech"}


def test_a_retry_with_the_same_key_replays_the_first_response(api):
    first = api.post("/api/v1/tenants/", INITECH, headers={"Idempotency-Key": "k-1"})
    again = api.post(
        "/api/v1/tenants/", {"name": "Initech", "external_id": "initech"}, headers={"Idempotency-Key": "k-1"}
    )
    assert first.status == again.status == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert Tenant.objects.filter(external_id="initech").count() == 1
    # without the header, the second create is a real one, and a conflict
    assert api.post("/api/v1/tenants/", INITECH).status == 409


def test_the_same_key_with_another_body_or_endpoint_is_refused(api, tenant):
    api.post("/api/v1/tenants/", INITECH, headers={"Idempotency-Key": "k-2"})
    other = api.post("/api/v1/tenants/", {"external_id": "hooli", "name": "Hooli"}, headers={"Idempotency-Key": "k-2"})
    assert other.status == 422 and other.problem_type == "idempotency-key-reused"
    elsewhere = api.post(
        "/api/v1/tenants/acme/invitations/", {"email": "a@acme.example"}, headers={"Idempotency-Key": "k-2"}
    )
    assert elsewhere.status == 422
    assert not Tenant.objects.filter(external_id="hooli").exists()
    assert not Invitation.objects.filter(email="a@acme.example").exists()


def test_keys_belong_to_their_api_key(api, make_key):
    mine = api.post("/api/v1/tenants/", INITECH, headers={"Idempotency-Key": "shared"})
    theirs = api.post(
        "/api/v1/tenants/",
        {"external_id": "hooli", "name": "Hooli"},
        key=make_key(),
        headers={"Idempotency-Key": "shared"},
    )
    assert mine.status == theirs.status == 201 and theirs.json["external_id"] == "hooli"


def test_a_failed_request_does_not_bind_its_key(api, tenant):
    answer = api.post("/api/v1/tenants/", {"external_id": "acme", "name": "Dup"}, headers={"Idempotency-Key": "k-3"})
    assert answer.status == 409
    assert not IdempotencyRecord.objects.filter(key="k-3").exists()
    Tenant.objects.filter(external_id="acme").update(external_id="acme-old")
    answer = api.post("/api/v1/tenants/", {"external_id": "acme", "name": "Dup"}, headers={"Idempotency-Key": "k-3"})
    assert answer.status == 201


def test_a_request_still_running_answers_409_and_one_that_died_is_taken_over(api, make_key):
    from keycore.api.idempotency import request_hash
    from keycore.models import ApiKey

    raw = make_key()
    key = ApiKey.objects.get(prefix=raw.split("_")[1])
    digest = request_hash("POST", "/api/v1/tenants/", b'{"external_id":"initech","name":"Initech"}')
    record = IdempotencyRecord.objects.create(
        api_key=key, key="k-4", method="POST", path="/api/v1/tenants/", request_hash=digest, status_code=0
    )
    running = api.post("/api/v1/tenants/", INITECH, key=raw, headers={"Idempotency-Key": "k-4"})
    assert running.status == 409 and running.problem_type == "idempotency-key-in-progress"
    assert running.headers["Retry-After"]
    IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - timedelta(hours=1))
    taken = api.post("/api/v1/tenants/", INITECH, key=raw, headers={"Idempotency-Key": "k-4"})
    assert taken.status == 201 and Tenant.objects.filter(external_id="initech").exists()


def test_every_creating_post_honours_the_header(api, tenant):
    from keycore.models import KmsConfig

    calls = [
        ("/api/v1/tenants/bulk/", {"tenants": [{"external_id": "b1", "name": "B1"}]}),
        ("/api/v1/tenants/acme/invitations/", {"email": "x@acme.example"}),
        ("/api/v1/tenants/acme/kms-configs/", {"provider": "local", "name": "Another"}),
        ("/api/v1/tenants/acme/rekey-jobs/", None),
    ]
    for path, body in calls:
        first = api.post(path, body, headers={"Idempotency-Key": path})
        again = api.post(path, body, headers={"Idempotency-Key": path})
        assert first.status < 300 and again.json == first.json, path
    assert Tenant.objects.filter(external_id="b1").count() == 1
    assert Invitation.objects.filter(email="x@acme.example").count() == 1
    assert KmsConfig.objects.filter(name="Another").count() == 1
    assert RekeyJob.objects.filter(tenant=tenant).count() == 1
    config = KmsConfig.objects.get(name="Another")
    path = f"/api/v1/tenants/acme/kms-configs/{config.uid}/make-primary/"
    first = api.post(path, headers={"Idempotency-Key": "mp"})
    again = api.post(path, headers={"Idempotency-Key": "mp"})
    assert first.status == again.status == 202 and first.json["uid"] == again.json["uid"]
    assert RekeyJob.objects.filter(tenant=tenant).count() == 2


def test_an_unusable_header_is_refused(api):
    answer = api.post("/api/v1/tenants/", INITECH, headers={"Idempotency-Key": "x" * 201})
    assert answer.status == 400 and "Idempotency-Key" in answer.json["errors"]
    assert not Tenant.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_create_once(make_key):
    """Eight requests with one key at the same moment: one tenant, the others replay it or are told to wait."""
    raw = make_key()
    barrier = threading.Barrier(8)
    answers = []

    def call():
        client = ApiClient(Client(), raw)
        barrier.wait()
        try:
            answers.append(client.post("/api/v1/tenants/", INITECH, headers={"Idempotency-Key": "race"}))
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Tenant.objects.filter(external_id="initech").count() == 1
    statuses = sorted(a.status for a in answers)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}, statuses
    created = [a.json for a in answers if a.status == 201]
    assert all(body == created[0] for body in created)
    assert all(a.problem_type == "idempotency-key-in-progress" for a in answers if a.status == 409)
