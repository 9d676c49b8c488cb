"""The SDK's API: leases, re-derivation, the epoch, usage reports and deterministic encryption.

What an attacker with a stolen or limited ``crypto`` key could try is tested first: leasing another
tenant's key, leasing after a revocation, reporting uses into another tenant's trail, making a
version look drained by a claimed rekey.
"""

from __future__ import annotations

import base64

import pytest

from keycore.crypto.envelope import LeaseKey, decrypt_with_lease, encrypt_with_lease
from keycore.models import AuditEvent, KeyUseEvent, KmsConfig, TenantKey
from keycore.services.audit import Actor
from keycore.services.keys import kms_config_revoke, tenant_key_create
from keycore.services.keyuse import recorder

pytestmark = pytest.mark.django_db


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def lease(api, tenant="acme", process="web-1", **kw):
    return api.post("/api/v1/crypto/leases", {"tenant": tenant, "process": process}, **kw)


def lease_key(body: dict) -> LeaseKey:
    return LeaseKey(
        bytes.fromhex(body["tenant_uid"]), body["key_version"], unb64(body["lease_id"]), unb64(body["lease_key"])
    )


def test_a_lease_encrypts_locally_and_the_rest_api_decrypts_it_and_back(api, tenant):
    answer = lease(api)
    assert answer.status == 200, answer.json
    body = answer.json
    assert body["tenant_uid"] == tenant.uid.hex and body["ttl_seconds"] == 300
    mine = lease_key(body)
    edek, fields = encrypt_with_lease(mine, {"ssn": b"123-45-6789"})
    opened = api.post(
        "/api/v1/crypto/decrypt",
        {"tenant": "acme", "edek": b64(edek), "fields": {"ssn": b64(fields["ssn"])}, "requesting_id": "t"},
    )
    assert opened.status == 200 and unb64(opened.json["fields"]["ssn"]) == b"123-45-6789"
    # and the server's EDEK through the lease its process wrapped it under, re-derived on request
    server = api.post(
        "/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": b64(b"by the server")}, "requesting_id": "t"}
    ).json
    server_lease = unb64(server["edek"])[6:22]
    derived = api.post(
        "/api/v1/crypto/leases/derive",
        {"tenant": "acme", "process": "web-1", "key_version": body["key_version"], "lease_id": b64(server_lease)},
    )
    assert derived.status == 200
    plain = decrypt_with_lease(lease_key(derived.json), unb64(server["edek"]), {"a": unb64(server["fields"]["a"])})
    assert plain == {"a": b"by the server"}


def test_every_lease_is_on_the_tenants_audit_trail_with_the_api_key_and_process(api, tenant):
    body = lease(api, process="billing-worker-7").json
    event = AuditEvent.objects.filter(tenant=tenant, action="sdk.lease_issued").latest("seq")
    assert event.actor_api_key is not None
    assert event.changes["process"] == "billing-worker-7"
    assert event.changes["lease_id"] == unb64(body["lease_id"]).hex()
    assert event.changes["ttl_seconds"] == 300
    assert body["lease_key"] not in str(event.changes)


def test_the_tenants_own_bound_shortens_leases(api, tenant):
    tenant.key_cache_seconds = 30
    tenant.save(update_fields=["key_cache_seconds"])
    from keycore.services.keyring import clear_caches

    clear_caches()
    assert lease(api).json["ttl_seconds"] == 30


def test_a_limited_key_cannot_lease_another_tenant_nor_learn_it_exists(api, make_key, tenant, other_tenant):
    limited = make_key(["crypto"], tenants=[tenant])
    for name in ("globex", "nobody"):
        answer = lease(api, name, key=limited)
        assert answer.status == 404 and answer.problem_type == "tenant-not-found"
        derived = api.post(
            "/api/v1/crypto/leases/derive",
            {"tenant": name, "process": "p", "key_version": 1, "lease_id": b64(bytes(16))},
            key=limited,
        )
        assert derived.status == 404
    assert lease(api, "acme", key=limited).status == 200


def test_other_scopes_cannot_lease(api, make_key, tenant):
    answer = lease(api, key=make_key(["tenants:read", "events:read"]))
    assert answer.status == 403
    assert api.get("/api/v1/crypto/epoch", key=make_key(["tenants:read"])).status == 403
    assert api.get("/api/v1/crypto/epoch", key=None).status == 401


def test_a_revoked_key_is_never_leased_even_before_the_next_poll(api, tenant):
    assert lease(api).status == 200
    before = api.get("/api/v1/crypto/epoch").json["epoch"]
    primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    # no on-commit callbacks run here: this process's caches are not emptied by the revocation itself
    kms_config_revoke(config=primary, actor=Actor.system("tenant-portal"))
    assert api.get("/api/v1/crypto/epoch").json["epoch"] > before
    answer = lease(api)
    assert answer.status == 409 and answer.problem_type == "key-revoked"
    derived = api.post(
        "/api/v1/crypto/leases/derive", {"tenant": "acme", "process": "p", "key_version": 1, "lease_id": b64(bytes(16))}
    )
    assert derived.status == 409 and derived.problem_type == "key-revoked"


def test_an_inactive_tenant_is_not_leased(api, tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/tenants/acme/suspend/")
    assert lease(api).problem_type == "tenant-inactive"


def test_derive_refuses_a_version_that_does_not_exist(api, tenant):
    answer = api.post(
        "/api/v1/crypto/leases/derive",
        {"tenant": "acme", "process": "p", "key_version": 99, "lease_id": b64(bytes(16))},
    )
    assert answer.status == 422
    bad = api.post(
        "/api/v1/crypto/leases/derive", {"tenant": "acme", "process": "p", "key_version": 1, "lease_id": b64(b"x")}
    )
    assert bad.status == 400


def test_usage_reports_become_key_use_events_attributed_to_the_reporting_key(api, tenant):
    body = lease(api).json
    answer = api.post(
        "/api/v1/crypto/usage",
        {
            "reports": [
                {
                    "tenant": "acme",
                    "operation": "encrypt",
                    "count": 40,
                    "key_version": body["key_version"],
                    "label": "invoices",
                    "requesting_id": "billing",
                },
                {"tenant": "acme", "operation": "decrypt", "count": 2, "key_version": body["key_version"]},
            ]
        },
    )
    assert answer.status == 200 and answer.json == {"recorded": 42, "skipped": []}
    recorder.flush()
    rows = KeyUseEvent.objects.filter(tenant=tenant)
    encrypted = rows.get(operation="encrypt")
    assert encrypted.count == 40 and encrypted.label == "invoices" and encrypted.requesting_id == "billing"
    assert encrypted.api_key_prefix and encrypted.peer_ip == "127.0.0.1"
    # the per-version document counts move exactly as for server-side encrypts
    assert TenantKey.objects.get(tenant=tenant, version=body["key_version"]).documents == 40


def test_a_claimed_report_cannot_drain_a_version_or_reach_another_tenant(api, make_key, tenant, other_tenant):
    for bad in (
        {"tenant": "acme", "operation": "rekey", "count": 5, "key_version": 1},
        {"tenant": "acme", "operation": "rekey_in", "count": 5, "key_version": 1},
        {"tenant": "acme", "operation": "encrypt", "count": -5, "key_version": 1},
        {"tenant": "acme", "operation": "encrypt", "count": 0},
        {"tenant": "acme", "operation": "encrypt", "count": 1, "label": "x\u0000"},
        {"tenant": "acme", "operation": "encrypt", "count": 1, "key_version": 2**31},
    ):
        answer = api.post("/api/v1/crypto/usage", {"reports": [bad]})
        assert answer.status == 400, bad
    limited = make_key(["crypto"], tenants=[tenant])
    reports = [{"tenant": name, "operation": "encrypt", "count": 1} for name in ("globex", "nobody")]
    answer = api.post("/api/v1/crypto/usage", {"reports": reports}, key=limited)
    assert answer.status == 200 and answer.json == {"recorded": 0, "skipped": [0, 1]}  # the same for both
    recorder.flush()
    assert not KeyUseEvent.objects.exists()


def test_deterministic_encryption_is_equal_for_equal_values_and_searchable_across_rotation(api, tenant, actor):
    def det(value: bytes, field="email"):
        return api.post(
            "/api/v1/crypto/deterministic/encrypt",
            {"tenant": "acme", "field": field, "value": b64(value), "requesting_id": "t"},
        )

    first = det(b"ada@example.com")
    assert first.status == 200
    assert det(b"ada@example.com").json == first.json
    assert det(b"ada@example.com", "other").json != first.json
    back = api.post(
        "/api/v1/crypto/deterministic/decrypt",
        {"tenant": "acme", "field": "email", "ciphertext": first.json["ciphertext"], "requesting_id": "t"},
    )
    assert unb64(back.json["value"]) == b"ada@example.com"
    # same bytes as the lease's deterministic base gives locally (the SDK's path)
    from keycore.crypto.envelope import DeterministicKey

    body = lease(api).json
    base = {d["key_version"]: unb64(d["key"]) for d in body["deterministic"]}
    local = DeterministicKey(tenant.uid.bytes, body["key_version"], base[body["key_version"]])
    assert b64(local.encrypt("email", b"ada@example.com")) == first.json["ciphertext"]
    recorder.flush()  # the det encrypts count as documents of the version
    # rotate: a new version; the old one still holds data, so search gives both terms, newest first
    tenant_key_create(tenant=tenant, actor=actor)
    from keycore.services.keyring import clear_caches

    clear_caches()
    terms = api.post(
        "/api/v1/crypto/search-terms",
        {"tenant": "acme", "field": "email", "value": b64(b"ada@example.com"), "requesting_id": "t"},
    ).json["terms"]
    assert len(terms) == 2 and terms[1] == first.json["ciphertext"]
    assert det(b"ada@example.com").json["ciphertext"] == terms[0]
    # once the old version holds nothing (drained) it is not searched any more
    TenantKey.objects.filter(tenant=tenant, version=body["key_version"]).update(documents=0)
    terms = api.post(
        "/api/v1/crypto/search-terms",
        {"tenant": "acme", "field": "email", "value": b64(b"ada@example.com"), "requesting_id": "t"},
    ).json["terms"]
    assert len(terms) == 1
