"""The crypto API: one code path for every tenant, errors a caller can act on, and tenant-limited keys.

AWS KMS (for the outage) is moto's real server in this process, stopped mid-test.
"""

from __future__ import annotations

import base64

import pytest

from keycore.models import KeyUseEvent, KmsConfig
from keycore.models.keys import ConfigOwner
from keycore.services.audit import Actor
from keycore.services.keyring import clear_caches
from keycore.services.keys import (
    ConfigInput,
    kms_config_create,
    kms_config_make_primary,
    kms_config_revoke,
    tenant_key_create,
)
from keycore.services.keyuse import recorder

pytestmark = pytest.mark.django_db


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


DOC = {"ssn": b"123-45-6789", "note": "café ☕".encode(), "empty": b""}


def encrypt(api, tenant="acme", fields=DOC, **extra):
    return api.post(
        "/api/v1/crypto/encrypt",
        {"tenant": tenant, "fields": {k: b64(v) for k, v in fields.items()}, "requesting_id": "crm", **extra},
    )


def decrypt(api, tenant, edek, fields, **extra):
    return api.post(
        "/api/v1/crypto/decrypt", {"tenant": tenant, "edek": edek, "fields": fields, "requesting_id": "crm", **extra}
    )


def test_a_document_round_trips_and_each_field_can_be_read_alone(api, tenant):
    sealed = encrypt(api, label="customer", object_id="c/1", request_id="r-1", custom={"region": "eu", "n": 3})
    assert sealed.status == 200
    assert set(sealed.json["fields"]) == set(DOC)
    assert all(unb64(c) != DOC[n] for n, c in sealed.json["fields"].items())
    opened = decrypt(api, "acme", sealed.json["edek"], sealed.json["fields"])
    assert opened.status == 200
    assert {n: unb64(v) for n, v in opened.json["fields"].items()} == DOC
    one = decrypt(api, "acme", sealed.json["edek"], {"ssn": sealed.json["fields"]["ssn"]})
    assert one.json == {"fields": {"ssn": b64(b"123-45-6789")}}


def test_data_of_one_tenant_does_not_open_as_another_or_after_tampering(api, tenant, other_tenant):
    sealed = encrypt(api).json
    foreign = decrypt(api, "globex", sealed["edek"], sealed["fields"])
    assert foreign.status == 422 and foreign.problem_type == "authentication-failed"
    blob = bytearray(unb64(sealed["fields"]["ssn"]))
    blob[-1] ^= 1
    tampered = decrypt(api, "acme", sealed["edek"], {"ssn": b64(bytes(blob))})
    assert tampered.status == 422 and tampered.problem_type == "authentication-failed"
    swapped = decrypt(api, "acme", sealed["edek"], {"note": sealed["fields"]["ssn"]})
    assert swapped.status == 422


def test_malformed_base64_and_malformed_ciphertext_are_400s_that_say_where(api, tenant):
    answer = api.post(
        "/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "not base64!"}, "requesting_id": "x"}
    )
    assert answer.status == 400 and answer.problem_type == "invalid-input"
    assert answer.json["errors"] == {"fields.a": ["Expected standard base64 with padding."]}
    answer = decrypt(api, "acme", "AAAA", {})
    assert answer.status == 400 and answer.problem_type == "malformed-data"
    sealed = encrypt(api).json
    answer = decrypt(api, "acme", sealed["edek"], {"ssn": b64(b"plain text, not a field")})
    assert answer.status == 400 and answer.problem_type == "malformed-data"
    answer = decrypt(api, "acme", "AAA", {})
    assert answer.status == 400 and "edek" in answer.json["errors"]
    answer = api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": [], "requesting_id": "x"})
    assert answer.status == 400 and "fields" in answer.json["errors"]
    answer = api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {}, "requesting_id": "x", "tenat": 1})
    assert answer.status == 400 and answer.json["errors"] == {"tenat": ["Unknown member."]}


def test_every_call_must_say_who_asks(api, tenant):
    for requesting_id in (None, "", "   ", 7, "x" * 201):
        body = {"tenant": "acme", "fields": {}}
        if requesting_id is not None:
            body["requesting_id"] = requesting_id
        answer = api.post("/api/v1/crypto/encrypt", body)
        assert answer.status == 400 and "requesting_id" in answer.json["errors"], requesting_id
    answer = api.post(
        "/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {}, "requesting_id": "x", "source_ip": "not an ip"}
    )
    assert answer.status == 400 and "source_ip" in answer.json["errors"]
    answer = api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {}, "label": 5, "custom": [1]})
    assert set(answer.json["errors"]) == {"label", "custom", "requesting_id"}  # every problem at once


def test_an_unknown_tenant_is_a_404_and_an_inactive_one_a_409(api, tenant, django_capture_on_commit_callbacks):
    answer = encrypt(api, tenant="nobody")
    assert answer.status == 404 and answer.problem_type == "tenant-not-found"
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/tenants/acme/suspend/")
    answer = encrypt(api)
    assert answer.status == 409 and answer.problem_type == "tenant-inactive"


def test_a_revoked_key_is_its_own_problem_type(api, tenant, django_capture_on_commit_callbacks):
    sealed = encrypt(api).json
    primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    with django_capture_on_commit_callbacks(execute=True):  # the revocation empties this process's caches
        kms_config_revoke(config=primary, actor=Actor.system("tenant-portal"))
    for answer in (encrypt(api), decrypt(api, "acme", sealed["edek"], sealed["fields"])):
        assert answer.status == 409 and answer.problem_type == "key-revoked"
        assert "revoked" in answer.json["detail"]


def test_an_unreachable_kms_is_a_503_with_retry_after(api, tenant, moto, django_capture_on_commit_callbacks):
    settings, secrets = moto.provider_settings(moto.create_key())
    actor = Actor.system("tenant-portal")
    own = kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.TENANT,
        data=ConfigInput(provider="aws", name="Acme AWS", settings=settings, secrets=secrets),
        actor=actor,
    )
    with django_capture_on_commit_callbacks(execute=True):
        kms_config_make_primary(config=own, actor=actor)
        tenant_key_create(tenant=tenant, actor=actor)  # v2, wrapped only under the tenant's AWS key
    sealed = encrypt(api)
    assert sealed.status == 200
    moto.stop()
    clear_caches()  # as after the cache TTL: the next use must unwrap through the KMS
    answer = encrypt(api)
    assert answer.status == 503 and answer.problem_type == "kms-unreachable"
    assert int(answer.headers["Retry-After"]) >= 1
    batch = api.post(
        "/api/v1/crypto/batch-encrypt", {"requesting_id": "x", "items": [{"tenant": "acme", "fields": {}}]}
    )
    assert batch.status == 200 and batch.json["results"][0]["error"]["status"] == 503


def test_rekey_moves_documents_to_the_current_key_or_to_another_tenant(api, tenant, other_tenant):
    sealed = encrypt(api).json
    with_version = api.post(
        "/api/v1/crypto/rekey", {"tenant": "acme", "edeks": [sealed["edek"], "AAAA", "@@"], "requesting_id": "mig"}
    )
    assert with_version.status == 200
    edeks, problems = with_version.json["edeks"], with_version.json["errors"]
    assert edeks[0] and edeks[1] is None and edeks[2] is None
    assert [(p["index"], p["type"].rsplit("/", 1)[1]) for p in problems] == [
        (1, "malformed-data"),
        (2, "invalid-input"),
    ]
    assert decrypt(api, "acme", edeks[0], sealed["fields"]).status == 200

    moved = api.post(
        "/api/v1/crypto/rekey",
        {"tenant": "acme", "edeks": [sealed["edek"]], "new_tenant": "globex", "requesting_id": "mig"},
    ).json["edeks"][0]
    assert decrypt(api, "globex", moved, sealed["fields"]).status == 200
    assert decrypt(api, "acme", moved, sealed["fields"]).status == 422
    answer = api.post("/api/v1/crypto/rekey", {"tenant": "acme", "edeks": [], "requesting_id": "mig"})
    assert answer.status == 400


def test_batches_report_each_item_in_order(api, tenant, other_tenant):
    items = [
        {"tenant": "acme", "fields": {"a": b64(b"one")}, "object_id": "1"},
        {"tenant": "nobody", "fields": {"a": b64(b"two")}},
        {"tenant": "globex", "fields": {"a": "###"}},
        {"tenant": "globex", "fields": {"a": b64(b"four")}, "requesting_id": "someone-else"},
        "not an object",
    ]
    answer = api.post("/api/v1/crypto/batch-encrypt", {"requesting_id": "import", "label": "docs", "items": items})
    assert answer.status == 200 and (answer.json["succeeded"], answer.json["failed"]) == (2, 3)
    results = answer.json["results"]
    assert [("edek" in r, r.get("error", {}).get("status")) for r in results] == [
        (True, None),
        (False, 404),
        (False, 400),
        (True, None),
        (False, 400),
    ]
    to_open = [
        {"tenant": "acme", "edek": results[0]["edek"], "fields": results[0]["fields"]},
        {"tenant": "acme", "edek": results[3]["edek"], "fields": results[3]["fields"]},
        {"tenant": "globex", "edek": results[3]["edek"], "fields": results[3]["fields"]},
    ]
    opened = api.post("/api/v1/crypto/batch-decrypt", {"requesting_id": "export", "items": to_open}).json["results"]
    assert unb64(opened[0]["fields"]["a"]) == b"one"
    assert opened[1]["error"]["type"].endswith("/authentication-failed")
    assert unb64(opened[2]["fields"]["a"]) == b"four"
    recorder.flush()
    who = set(KeyUseEvent.objects.filter(tenant=other_tenant).values_list("requesting_id", "label"))
    assert who == {("someone-else", "docs"), ("export", "")}


def test_a_batch_is_at_most_a_thousand_items(api, tenant):
    too_many = {"requesting_id": "x", "items": [{"tenant": "acme", "fields": {}}] * 1001}
    for path in ("/api/v1/crypto/batch-encrypt", "/api/v1/crypto/batch-decrypt"):
        answer = api.post(path, too_many)
        assert answer.status == 400 and "items" in answer.json["errors"]
    assert api.post("/api/v1/crypto/batch-encrypt", {"requesting_id": "x", "items": []}).status == 400


def test_a_key_limited_to_some_tenants_finds_no_other(api, make_key, tenant, other_tenant):
    """For a limited key another tenant is exactly like a tenant that does not exist: 404, everywhere."""
    limited = make_key(["crypto"], tenants=[tenant])
    mine = api.post(
        "/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, "requesting_id": "x"}, key=limited
    )
    assert mine.status == 200
    theirs = encrypt(api, tenant="globex").json  # sealed with a key that may use globex

    def not_found(answer, name="globex"):
        assert answer.status == 404 and answer.problem_type == "tenant-not-found", answer.json
        assert answer.json["detail"] == f"No tenant has the external id {name!r}."

    not_found(api.post("/api/v1/crypto/encrypt", {"tenant": "globex", "fields": {}, "requesting_id": "x"}, key=limited))
    not_found(
        api.post("/api/v1/crypto/encrypt", {"tenant": "nobody", "fields": {}, "requesting_id": "x"}, key=limited),
        "nobody",
    )
    not_found(
        api.post(
            "/api/v1/crypto/decrypt",
            {"tenant": "globex", "edek": theirs["edek"], "fields": {}, "requesting_id": "x"},
            key=limited,
        )
    )
    not_found(
        api.post(
            "/api/v1/crypto/rekey", {"tenant": "globex", "edeks": [theirs["edek"]], "requesting_id": "x"}, key=limited
        )
    )
    not_found(
        api.post(
            "/api/v1/crypto/rekey",
            {"tenant": "acme", "edeks": [mine.json["edek"]], "new_tenant": "globex", "requesting_id": "x"},
            key=limited,
        )
    )
    batch = api.post(
        "/api/v1/crypto/batch-encrypt",
        {"requesting_id": "x", "items": [{"tenant": "acme", "fields": {}}, {"tenant": "globex", "fields": {}}]},
        key=limited,
    ).json["results"]
    assert "edek" in batch[0] and batch[1]["error"]["type"].endswith("/tenant-not-found")
    batch = api.post(
        "/api/v1/crypto/batch-decrypt",
        {"requesting_id": "x", "items": [{"tenant": "globex", "edek": theirs["edek"], "fields": theirs["fields"]}]},
        key=limited,
    ).json["results"]
    assert (
        batch[0]["error"]["status"] == 404 and batch[0]["error"]["detail"] == "No tenant has the external id 'globex'."
    )
    recorder.flush()
    assert not KeyUseEvent.objects.filter(tenant=other_tenant, requesting_id="x").exists()


def test_crypto_answers_are_never_cached(api, tenant):
    sealed = encrypt(api)
    assert sealed.headers["Cache-Control"] == "no-store"
