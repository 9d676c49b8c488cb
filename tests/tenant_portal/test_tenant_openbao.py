"""Bringing an OpenBao / Vault Transit key in the tenant portal: the setup help with the exact policy for this
tenant, the token write-only, test connection and save against a real OpenBao server."""

from __future__ import annotations

import base64
import html

import pytest

from keycore.models import KmsConfig
from keycore.models.keys import ConfigOwner
from keycore.providers.openbao import tenant_context
from tests.tenant_portal.conftest import url

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def openbao_form(server, key: str, token: str, **overrides) -> dict:
    data = {
        "config_name": "Acme OpenBao key",
        "address": server.url,
        "mount": "transit",
        "key_name": key,
        "namespace": "",
        "auth_method": "token",
        "approle_mount": "",
        "ca_bundle": server.pki.ca_pem,
        "token": token,
        "role_id": "",
        "secret_id": "",
        "config_rate_limit": "0",
    }
    data.update(overrides)
    return data


def test_it_is_offered_to_tenants(owner_client, tenant):
    page = owner_client.get(url("key_new", tenant)).content.decode()
    assert url("key_create", tenant, provider="openbao") in page


def test_the_form_shows_the_transit_policy_for_this_tenant_and_takes_the_token_write_only(owner_client, tenant):
    page = html.unescape(owner_client.get(url("key_create", tenant, provider="openbao")).content.decode())
    context = base64.b64encode(tenant_context(tenant.uid.hex)).decode()
    assert 'path "transit/encrypt/keycore-acme"' in page and 'path "transit/decrypt/keycore-acme"' in page
    assert f'"context" = ["{context}"]' in page
    assert "bao write -f transit/keys/keycore-acme type=aes256-gcm96 derived=true" in page
    assert 'type="password" name="token"' in page and 'type="password" name="secret_id"' in page
    assert '<textarea name="ca_bundle"' in page


def test_test_connection_and_save_reach_the_real_server_and_never_echo_the_token(owner_client, tenant, openbao_server):
    key = openbao_server.create_key()
    token = openbao_server.grant(key)
    form = openbao_form(openbao_server, key, token)
    tested = owner_client.post(url("key_test", tenant, provider="openbao"), form, **HTMX).content.decode()
    assert "Connection works" in tested and f"transit/keys/{key}" in tested
    assert token not in tested
    assert not KmsConfig.objects.for_tenant(tenant).filter(owner=ConfigOwner.TENANT).exists()
    response = owner_client.post(url("key_create", tenant, provider="openbao"), form)
    config = KmsConfig.objects.for_tenant(tenant).get(owner=ConfigOwner.TENANT)
    assert response["Location"] == url("key", tenant, config=config.uid)
    assert (config.provider, config.health) == ("openbao", "ok")
    assert token not in owner_client.get(url("key", tenant, config=config.uid)).content.decode()


def test_a_token_without_the_policy_is_refused_with_the_reason(owner_client, tenant, openbao_server):
    key = openbao_server.create_key()
    token = openbao_server.token(policies=["default"])
    form = openbao_form(openbao_server, key, token)
    response = owner_client.post(url("key_create", tenant, provider="openbao"), form)
    assert response.status_code == 400
    assert f"may not read transit/keys/{key}" in html.unescape(response.content.decode())
    assert token not in response.content.decode()
    assert not KmsConfig.objects.for_tenant(tenant).filter(owner=ConfigOwner.TENANT).exists()
