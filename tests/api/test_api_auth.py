"""Who may call what: API keys, scopes, and errors as problem details on every route.

The route table below is checked against keycore.api.urls, so a new endpoint
without a row here fails this module; each row is walked with no key (401), with
every scope but the one it needs (403), and with only that scope (neither).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import URLPattern, get_resolver
from django.utils import timezone

from keycore.models import ApiKey, Invitation, KmsConfig, RekeyJob
from keycore.services.apikeys import api_key_revoke
from keycore.services.audit import Actor
from keycore.services.jobs import job_start_rewrap
from keycore.services.tenants import invitation_create
from keycore.services.vendor_keys import vendor_key_create
from tests.api.conftest import ALL_SCOPES, ApiClient

pytestmark = pytest.mark.django_db

# (method, path template, scope, body)
ROUTES = [
    ("GET", "/api/v1/tenants/", "tenants:read", None),
    ("POST", "/api/v1/tenants/", "tenants:write", {"external_id": "initech", "name": "Initech"}),
    ("POST", "/api/v1/tenants/bulk/", "tenants:write", {"tenants": [{"external_id": "hooli", "name": "Hooli"}]}),
    ("GET", "/api/v1/tenants/acme/", "tenants:read", None),
    ("PATCH", "/api/v1/tenants/acme/", "tenants:write", {"name": "Acme Corp."}),
    ("POST", "/api/v1/tenants/acme/suspend/", "tenants:write", {}),
    ("POST", "/api/v1/tenants/acme/reactivate/", "tenants:write", {}),
    ("POST", "/api/v1/tenants/acme/offboard/", "tenants:write", {}),
    ("GET", "/api/v1/tenants/acme/invitations/", "tenants:read", None),
    ("POST", "/api/v1/tenants/acme/invitations/", "tenants:write", {"email": "new@acme.example"}),
    ("POST", "/api/v1/tenants/acme/invitations/{invitation}/revoke/", "tenants:write", None),
    ("POST", "/api/v1/tenants/acme/invitations/{invitation}/resend/", "tenants:write", None),
    ("GET", "/api/v1/tenants/acme/kms-configs/", "tenants:read", None),
    ("POST", "/api/v1/tenants/acme/kms-configs/", "keys:write", {"provider": "local"}),
    ("GET", "/api/v1/tenants/acme/kms-configs/{config}/", "tenants:read", None),
    ("POST", "/api/v1/tenants/acme/kms-configs/{config}/make-primary/", "keys:write", None),
    ("POST", "/api/v1/tenants/acme/kms-configs/{config}/decrypt-only/", "keys:write", None),
    ("POST", "/api/v1/tenants/acme/kms-configs/{config}/retire/", "keys:write", None),
    ("GET", "/api/v1/tenants/acme/key-history/", "tenants:read", None),
    ("GET", "/api/v1/tenants/acme/key-versions/", "tenants:read", None),
    ("GET", "/api/v1/tenants/acme/rekey-jobs/", "tenants:read", None),
    ("POST", "/api/v1/tenants/acme/rekey-jobs/", "jobs:write", None),
    ("GET", "/api/v1/tenants/acme/events/", "events:read", None),
    ("GET", "/api/v1/rekey-jobs/", "tenants:read", None),
    ("GET", "/api/v1/rekey-jobs/{job}/", "tenants:read", None),
    ("POST", "/api/v1/rekey-jobs/{job}/cancel/", "jobs:write", None),
    ("POST", "/api/v1/rekey-jobs/{job}/retry/", "jobs:write", None),
    ("GET", "/api/v1/vendor-keys/", "tenants:read", None),
    ("POST", "/api/v1/vendor-keys/", "keys:write", {"provider": "local", "name": "EU key"}),
    ("GET", "/api/v1/vendor-keys/{vendor_key}/", "tenants:read", None),
    ("PATCH", "/api/v1/vendor-keys/{vendor_key}/", "keys:write", {"secrets": {}}),
    ("POST", "/api/v1/vendor-keys/{vendor_key}/check/", "keys:write", None),
    ("POST", "/api/v1/vendor-keys/{vendor_key}/make-default/", "keys:write", None),
    ("POST", "/api/v1/vendor-keys/{vendor_key}/assign/", "jobs:write", {"tenants": ["acme"]}),
    ("POST", "/api/v1/vendor-keys/{vendor_key}/retire/", "keys:write", None),
    ("GET", "/api/v1/audit/", "events:read", None),
    ("POST", "/api/v1/crypto/encrypt", "crypto", {"tenant": "acme", "fields": {}, "requesting_id": "t"}),
    ("POST", "/api/v1/crypto/decrypt", "crypto", {"tenant": "acme", "edek": "", "fields": {}, "requesting_id": "t"}),
    ("POST", "/api/v1/crypto/rekey", "crypto", {"tenant": "acme", "edeks": ["AA=="], "requesting_id": "t"}),
    (
        "POST",
        "/api/v1/crypto/batch-encrypt",
        "crypto",
        {"items": [{"tenant": "acme", "fields": {}}], "requesting_id": "t"},
    ),
    (
        "POST",
        "/api/v1/crypto/batch-decrypt",
        "crypto",
        {"items": [{"tenant": "acme", "edek": "", "fields": {}}], "requesting_id": "t"},
    ),
    # the in-process SDK's API and deterministic encryption (docs/sdk.md)
    ("POST", "/api/v1/crypto/leases", "crypto", {"tenant": "acme", "process": "p"}),
    (
        "POST",
        "/api/v1/crypto/leases/derive",
        "crypto",
        {"tenant": "acme", "process": "p", "key_version": 1, "lease_id": "AAAAAAAAAAAAAAAAAAAAAA=="},
    ),
    ("GET", "/api/v1/crypto/epoch", "crypto", None),
    ("POST", "/api/v1/crypto/usage", "crypto", {"reports": [{"tenant": "acme", "operation": "encrypt", "count": 1}]}),
    (
        "POST",
        "/api/v1/crypto/deterministic/encrypt",
        "crypto",
        {"tenant": "acme", "field": "email", "value": "eA==", "requesting_id": "t"},
    ),
    (
        "POST",
        "/api/v1/crypto/deterministic/decrypt",
        "crypto",
        {"tenant": "acme", "field": "email", "ciphertext": "eA==", "requesting_id": "t"},
    ),
    (
        "POST",
        "/api/v1/crypto/search-terms",
        "crypto",
        {"tenant": "acme", "field": "email", "value": "eA==", "requesting_id": "t"},
    ),
]


@pytest.fixture
def objects(tenant):
    """One of everything the routes name: an invitation, a second vendor config, a rekey job."""
    from keycore.models.keys import ConfigOwner
    from keycore.services.keys import ConfigInput, kms_config_create

    actor = Actor.system("tests")
    invitation, _ = invitation_create(tenant=tenant, email="it@acme.example", role="owner", actor=actor, send=False)
    config = kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.VENDOR,
        data=ConfigInput(provider="local", name="Second local key", settings={}, secrets={}),
        actor=actor,
    )
    primary = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    job = job_start_rewrap(tenant=tenant, source=None, target=primary, actor=actor)
    vendor_key = vendor_key_create(name="US key", provider="local", settings_={}, secrets={}, actor=actor)
    return {"invitation": invitation.uid, "config": config.uid, "job": job.uid, "vendor_key": vendor_key.uid}


def test_the_route_table_covers_every_api_endpoint():
    resolver = get_resolver("keycore.api.urls")
    patterns = {str(p.pattern) for p in resolver.url_patterns if isinstance(p, URLPattern)}
    patterns -= {"schema/", "docs/", "docs/redoc.js", r"^[\s\S]*\Z"}

    def shape(path: str) -> str:
        return path.removeprefix("/api/v1/").replace("acme", "<str:external_id>")

    table = {shape(path) for _, path, _, _ in ROUTES}
    table = {
        t.replace("{invitation}", "<uuid:uid>")
        .replace("{config}", "<uuid:uid>")
        .replace("{job}", "<uuid:uid>")
        .replace("{vendor_key}", "<uuid:uid>")
        for t in table
    }
    assert table == patterns


@pytest.mark.parametrize(("method", "path", "scope", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_every_route_wants_a_key_and_its_scope(api, make_key, objects, method, path, scope, body):
    path = path.format(**objects)
    anonymous = api.request(method, path, body, key=None)
    assert anonymous.status == 401 and anonymous.problem_type == "not-authenticated"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")

    others = make_key([s for s in ALL_SCOPES if s != scope])
    refused = api.request(method, path, body, key=others)
    assert refused.status == 403 and refused.problem_type == "forbidden"
    assert f"'{scope}'" in refused.json["detail"]

    only = make_key([scope])
    allowed = api.request(method, path, body, key=only)
    assert allowed.status not in (401, 403), allowed.json


def test_it_refuses_a_malformed_an_unknown_a_revoked_and_an_expired_key(api, make_key, tenant):
    assert api.get("/api/v1/tenants/", key="not-a-key").problem_type == "authentication-failed-api-key"
    assert api.get("/api/v1/tenants/", key="kc_000000000000_guessed").status == 401
    raw = make_key(["tenants:read"])
    forged = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")
    assert api.get("/api/v1/tenants/", key=forged).status == 401

    expired = make_key(["tenants:read"], expires_at=timezone.now() + timedelta(seconds=1))
    assert api.get("/api/v1/tenants/", key=expired).status == 200
    ApiKey.objects.filter(prefix=expired.split("_")[1]).update(expires_at=timezone.now() - timedelta(seconds=1))
    time.sleep(1.1)  # past the in-process cache
    answer = api.get("/api/v1/tenants/", key=expired)
    assert answer.status == 401 and "expired" in answer.json["detail"]

    basic = api.request("GET", "/api/v1/tenants/", key=None, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status == 401 and "Bearer" in basic.json["detail"]


def test_a_revoked_key_stops_working_within_two_seconds(api, make_key, tenant):
    raw = make_key(["crypto"])
    body = {"tenant": "acme", "fields": {"a": "AA=="}, "requesting_id": "t"}
    assert api.post("/api/v1/crypto/encrypt", body, key=raw).status == 200  # now cached in this process
    api_key_revoke(key=ApiKey.objects.get(prefix=raw.split("_")[1]), actor=Actor.system("tests"))
    deadline = time.monotonic() + 2.0
    while api.post("/api/v1/crypto/encrypt", body, key=raw).status == 200:
        assert time.monotonic() < deadline, "a revoked key still worked after two seconds"
        time.sleep(0.05)
    answer = api.post("/api/v1/crypto/encrypt", body, key=raw)
    assert answer.status == 401 and "revoked" in answer.json["detail"]


def test_it_records_when_a_key_was_last_used(api, make_key, tenant):
    raw = make_key(["tenants:read"])
    key = ApiKey.objects.get(prefix=raw.split("_")[1])
    assert key.last_used_at is None
    api.get("/api/v1/tenants/", key=raw)
    key.refresh_from_db()
    assert key.last_used_at is not None and timezone.now() - key.last_used_at < timedelta(seconds=5)


def test_unknown_urls_and_methods_are_problems_not_html_pages(api, tenant):
    paths = (
        "/api/v1/",
        "/api/v1/nothing-here",
        "/api/v1/tenants/acme/nothing/",
        "/api/v1/rekey-jobs/not-a-uuid/",
        "/api/v1/tenants/a%0Ab/invitations/x%0A/resend/",
    )
    for path in paths:
        answer = api.get(path)
        assert answer.status == 404 and answer.problem_type == "not-found", path
    assert api.post("/api/v1/nothing", {"a": 1}, key=None).status == 404
    answer = api.request("DELETE", "/api/v1/tenants/acme/")
    assert answer.status == 405 and answer.problem_type == "method-not-allowed"
    answer = api.request("PUT", "/api/v1/crypto/encrypt", {"tenant": "acme"})
    assert answer.status == 405
    assert api.request("OPTIONS", "/api/v1/tenants/").status == 405


def test_a_browser_asking_for_html_still_gets_json(api, tenant):
    answer = api.get("/api/v1/tenants/", headers={"Accept": "text/html"})
    assert answer.status == 200 and answer.json["results"][0]["external_id"] == "acme"
    answer = api.get("/api/v1/tenants/nope/", headers={"Accept": "text/html"})
    assert answer.status == 404 and answer.problem_type == "tenant-not-found"


def test_it_explains_malformed_json_and_the_wrong_content_type(api, tenant):
    for path in ("/api/v1/tenants/", "/api/v1/crypto/encrypt"):
        answer = api.post(path, raw='{"tenant": ')
        assert answer.status == 400 and answer.problem_type == "malformed-request", path
        assert "JSON" in answer.json["detail"]
        answer = api.post(path, raw="tenant=acme", content_type="application/x-www-form-urlencoded")
        assert answer.status == 415 and answer.problem_type == "unsupported-media-type", path
        answer = api.post(path, raw="[1, 2]")
        assert answer.status == 400, path
        answer = api.post(path, raw="[" * 200_000, headers={"Idempotency-Key": "deep"})
        assert answer.status == 400 and answer.json["detail"] == "The body is nested too deeply.", path


def test_a_body_over_the_size_limit_is_a_413_problem(api, tenant, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = {"tenant": "acme", "fields": {"a": "QUFB" * 1000}, "requesting_id": "t"}
    answer = api.post("/api/v1/crypto/encrypt", big)
    assert answer.status == 413 and answer.problem_type == "request-too-large"


def test_each_key_is_throttled_on_its_own_with_retry_after(api, make_key, tenant, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "5/min"}}
    first, second = make_key(["tenants:read"]), make_key(["tenants:read"])
    statuses = [api.get("/api/v1/tenants/", key=first).status for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    answer = api.get("/api/v1/tenants/", key=first)
    assert answer.problem_type == "throttled" and 1 <= int(answer.headers["Retry-After"]) <= 61
    assert api.get("/api/v1/tenants/", key=second).status == 200


def test_an_invitation_a_config_and_a_job_of_another_tenant_are_not_found(api, objects, other_tenant):
    assert api.post(f"/api/v1/tenants/globex/invitations/{objects['invitation']}/revoke/").status == 404
    assert api.get(f"/api/v1/tenants/globex/kms-configs/{objects['config']}/").status == 404
    assert api.post(f"/api/v1/tenants/globex/kms-configs/{objects['config']}/retire/").status == 404
    assert Invitation.objects.get(uid=objects["invitation"]).revoked_at is None
    assert RekeyJob.objects.filter(uid=objects["job"]).exists()


def test_bearer_keys_need_no_csrf_token_and_cookies_grant_nothing(api, make_key, tenant, vendor_admin):
    strict = ApiClient(Client(enforce_csrf_checks=True), make_key())
    assert strict.post("/api/v1/tenants/", {"external_id": "initech", "name": "Initech"}).status == 201
    assert strict.post("/api/v1/nothing", {"a": 1}).status == 404
    # a signed-in portal session is not an API credential
    strict.client.force_login(vendor_admin)
    assert strict.get("/api/v1/tenants/", key=None).status == 401
