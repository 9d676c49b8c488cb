"""Bad input is a 400 problem, never a 500 and never HTML: NUL characters and lone surrogates in tenant ids,
path parameters and cursors, an over-long invitation address, an unparseable KMS endpoint (issue 19, item 10).

A NUL cannot be stored by PostgreSQL in text and a lone surrogate cannot be encoded as UTF-8: each used to
reach the database, a parser or the JSON renderer and answer 500 (the bulk endpoint an HTML page)."""

from __future__ import annotations

import base64
import json

import pytest

from keycore.models import Tenant

pytestmark = pytest.mark.django_db

NUL, SURROGATE = "a\x00b", "\ud800"
META = {"requesting_id": "svc"}
BAD = pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])


def raw(body) -> str:
    """JSON with a lone surrogate escaped (``\\ud800``), as a client that sends one does."""
    return json.dumps(body)


def assert_invalid(answer, *fields):
    assert answer.status == 400, (answer.status, answer.json)
    assert answer.problem_type in ("invalid-input", "malformed-request"), answer.json
    for name in fields:
        assert name in answer.json.get("errors", {}), answer.json


@BAD
def test_a_crypto_tenant_with_nul_or_surrogate_is_a_400(api, tenant, bad):
    stored = api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, **META}).json
    calls = {
        "/api/v1/crypto/encrypt": {"tenant": bad, "fields": {"a": "AA=="}, **META},
        "/api/v1/crypto/decrypt": {"tenant": bad, **stored, **META},
        "/api/v1/crypto/rekey": {"tenant": bad, "edeks": [stored["edek"]], **META},
    }
    for path, body in calls.items():
        assert_invalid(api.post(path, raw=raw(body)), "tenant")
    rekey = {"tenant": "acme", "new_tenant": bad, "edeks": [stored["edek"]], **META}
    assert_invalid(api.post("/api/v1/crypto/rekey", raw=raw(rekey)), "new_tenant")
    for path, item in (
        ("/api/v1/crypto/batch-encrypt", {"tenant": bad, "fields": {"a": "AA=="}}),
        ("/api/v1/crypto/batch-decrypt", {"tenant": bad, **stored}),
    ):
        answer = api.post(path, raw=raw({"items": [item, {**item, "tenant": "acme"}], **META}))
        assert answer.status == 200, answer.json
        first, second = answer.json["results"]
        assert first["error"]["status"] == 400 and "tenant" in first["error"]["errors"], first
        assert "error" not in second, second


TENANT_PATHS = [
    "",
    "invitations/",
    "kms-configs/",
    "key-history/",
    "key-versions/",
    "rekey-jobs/",
    "events/",
    "kms-configs/00000000-0000-0000-0000-000000000000/",
]


@pytest.mark.parametrize("sub", TENANT_PATHS)
@pytest.mark.parametrize("bad", ["a%00b", "%ED%A0%80", "a%FFb"], ids=["nul", "surrogate-bytes", "not-utf8"])
def test_a_tenant_path_with_nul_or_undecodable_bytes_is_a_400_or_404_problem(api, tenant, sub, bad):
    answer = api.get(f"/api/v1/tenants/{bad}/{sub}")
    assert answer.status in (400, 404), answer.status


@pytest.mark.parametrize("bad", ["a%00b", "%ED%A0%80"], ids=["nul", "surrogate-bytes"])
@pytest.mark.parametrize("action", ["suspend/", "reactivate/", "offboard/", "invitations/", "kms-configs/"])
def test_a_tenant_action_with_nul_in_the_path_is_a_problem(api, tenant, action, bad):
    answer = api.post(f"/api/v1/tenants/{bad}/{action}", {})
    assert answer.status in (400, 404), answer.status


@pytest.mark.parametrize(
    "path",
    ["/api/v1/tenants/", "/api/v1/audit/", "/api/v1/rekey-jobs/", "/api/v1/tenants/acme/events/"],
)
@pytest.mark.parametrize("decoded", [b"p=\x00", b"p=\xed\xa0\x80", b"\x00"], ids=["nul", "surrogate", "bare-nul"])
def test_a_cursor_that_decodes_to_nul_is_a_400(api, tenant, path, decoded):
    cursor = base64.b64encode(decoded).decode()
    assert_invalid(api.get(f"{path}?cursor={cursor}"), "cursor")
    assert_invalid(api.get(f"{path}?cursor=%00"), "cursor")


def test_an_invitation_address_longer_than_email_allows_is_a_400(api, tenant):
    email = "a" * 250 + "@acme.example"
    assert_invalid(api.post("/api/v1/tenants/acme/invitations/", {"email": email, "role": "admin"}), "email")
    body = {"external_id": "long", "name": "Long", "admins": [{"email": email, "role": "admin"}]}
    assert_invalid(api.post("/api/v1/tenants/", body))


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1]:99999", "http://\x00host", "https://[zz]/"])
def test_a_kms_endpoint_that_is_not_a_url_is_a_400(api, tenant, url):
    settings = {"key_id": "arn:aws:kms:us-east-1:123456789012:key/1", "region": "us-east-1", "endpoint_url": url}
    body = {"provider": "aws", "name": "Bad endpoint", "settings": settings, "secrets": {}}
    assert_invalid(api.post("/api/v1/tenants/acme/kms-configs/", raw=raw(body)))


@BAD
def test_bulk_with_a_bad_external_id_is_a_400_problem_naming_the_member(api, tenant, bad):
    """It used to be an HTML 500: the per-item error echoed the id and the JSON renderer failed on it."""
    body = {"tenants": [{"external_id": "t-ok", "name": "Fine"}, {"external_id": bad, "name": "Bad"}]}
    assert_invalid(api.post("/api/v1/tenants/bulk/", raw=raw(body)), "tenants[1].external_id")
    assert not Tenant.objects.filter(external_id="t-ok").exists(), "nothing of a refused body is done"


@BAD
def test_tenant_create_and_filters_refuse_nul_and_surrogates(api, tenant, bad):
    assert_invalid(api.post("/api/v1/tenants/", raw=raw({"external_id": "ok-id", "name": bad})), "name")
    assert api.get("/api/v1/tenants/?q=a%00b").status == 400
    assert api.get("/api/v1/audit/?action=a%00b").status == 400


def test_nothing_under_api_answers_html(client, settings):
    """Errors Django answers before any API view (no such URL outside /api/v1/, a bad Host, a NUL path)."""
    settings.ALLOWED_HOSTS = ["testserver"]
    answers = [
        client.get("/api/nothing-here/"),
        client.get("/api/v1/tenants/a%00b/"),
        client.get("/api/v1/tenants/", HTTP_HOST="evil.example"),
    ]
    for answer in answers:
        assert answer.status_code in (400, 404), answer.status_code
        assert answer["Content-Type"] == "application/problem+json", answer["Content-Type"]
        assert json.loads(answer.content)["status"] == answer.status_code


@BAD
def test_a_field_name_with_nul_or_surrogate_is_not_a_server_error(api, tenant, bad):
    stored = api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {"a": "AA=="}, **META}).json
    answer = api.post("/api/v1/crypto/encrypt", raw=raw({"tenant": "acme", "fields": {bad: "AA=="}, **META}))
    assert answer.status in (200, 400), answer.json
    body = {"tenant": "acme", "edek": stored["edek"], "fields": {bad: stored["fields"]["a"]}, **META}
    assert api.post("/api/v1/crypto/decrypt", raw=raw(body)).status in (400, 422)
    batch = {"items": [{"tenant": "acme", "fields": {bad: "AA=="}}], **META}
    assert api.post("/api/v1/crypto/batch-encrypt", raw=raw(batch)).status in (200, 400)
