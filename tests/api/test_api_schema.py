"""The OpenAPI document and its reference page: complete, with examples, and served without a CDN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "patch", "put", "delete")


@pytest.fixture
def schema(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    return json.loads(response.content)


def _operations(schema):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_the_schema_is_generated_without_warnings_or_errors():
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    SchemaGenerator().get_schema(request=None, public=True)
    assert not GENERATOR_STATS._warn_cache and not GENERATOR_STATS._error_cache


def test_every_operation_has_a_summary_a_scope_examples_and_problem_responses(schema):
    operations = list(_operations(schema))
    assert len(operations) >= 30
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        assert operation.get("security") == [{"apiKey": []}], where
        ok = [code for code in operation["responses"] if code.startswith("2")]
        assert ok, where
        examples = [
            content.get("examples")
            for code in ok
            for content in operation["responses"][code].get("content", {}).values()
        ]
        assert any(examples), f"{where} has no response example"
        if "requestBody" in operation:
            body = operation["requestBody"]["content"]["application/json"]
            assert body.get("examples"), f"{where} has no request example"
        for code in ("401", "403", "429"):
            assert "application/problem+json" in operation["responses"][code]["content"], where


def test_creating_posts_document_the_idempotency_key_header(schema):
    documented = {
        (path, method)
        for path, method, operation in _operations(schema)
        if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
    }
    assert documented == {
        ("/api/v1/tenants/", "post"),
        ("/api/v1/tenants/bulk/", "post"),
        ("/api/v1/tenants/{external_id}/invitations/", "post"),
        ("/api/v1/tenants/{external_id}/kms-configs/", "post"),
        ("/api/v1/tenants/{external_id}/kms-configs/{uid}/make-primary/", "post"),
        ("/api/v1/tenants/{external_id}/rekey-jobs/", "post"),
        ("/api/v1/vendor-keys/", "post"),
        ("/api/v1/vendor-keys/{uid}/assign/", "post"),
    }


def test_no_schema_offers_a_place_for_a_secret_to_come_back(schema):
    components = schema["components"]["schemas"]
    assert "secrets" in components["KmsConfigCreateRequest"]["properties"]
    for name, component in components.items():
        if name.endswith("Request"):
            continue
        properties = component.get("properties", {})
        assert not {"secrets", "sealed_secrets", "key_hash", "token_hash", "wrapped"} & set(properties), name


def test_the_schema_is_json_unless_yaml_is_asked_for(client):
    assert client.get("/api/v1/schema/")["Content-Type"].startswith("application/vnd.oai.openapi+json")
    yaml = client.get("/api/v1/schema/", HTTP_ACCEPT="application/yaml")
    assert yaml["Content-Type"].startswith("application/yaml") and yaml.content.startswith(b"openapi:")


def test_the_reference_page_loads_redoc_from_our_static_files_under_a_strict_policy(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<redoc spec-url="/api/v1/schema/"' in page
    assert '<script src="/api/v1/docs/redoc.js">' in page
    assert "https://" not in page and "<script>" not in page and "style=" not in page
    assert finders.find("drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy and "frame-ancestors 'none'" in policy


def test_redoc_is_served_without_its_one_url_on_another_host(client):
    """The sidecar's Redoc asks Redocly's CDN for a footer logo; ours asks no other host for anything."""
    from keycore.api.docs import REDOC_CDN_LOGO, REDOC_SCRIPT

    original = Path(finders.find(REDOC_SCRIPT)).read_text(encoding="utf-8")
    assert REDOC_CDN_LOGO in original  # else this test no longer tests anything: see keycore/api/docs.py
    response = client.get("/api/v1/docs/redoc.js")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/javascript")
    served = response.content.decode()
    assert REDOC_CDN_LOGO not in served and "cdn.redoc.ly" not in served
    assert len(served) > 0.99 * len(original)
