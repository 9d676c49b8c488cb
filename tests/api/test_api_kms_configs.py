"""KMS configurations through the vendor bridge: vendor-provided keys are tested before they are saved,
secrets are write-only, and the tenant's own keys can be seen but never changed by the vendor.

AWS KMS is moto's real server, in this process."""

from __future__ import annotations

import pytest

from keycore.models import KeyHistoryEntry, KmsConfig, RekeyJob
from keycore.models.keys import ConfigOwner, ConfigState
from keycore.services.audit import Actor
from keycore.services.jobs import job_run
from keycore.services.keys import ConfigInput, kms_config_create, kms_config_make_primary

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenants_own_key(tenant, moto):
    """The tenant brought its own AWS KMS key (through the tenant portal's service), with credentials."""
    settings, secrets = moto.provider_settings(moto.create_key())
    return kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.TENANT,
        data=ConfigInput(provider="aws", name="Acme's AWS key", settings=settings, secrets=secrets),
        actor=Actor.system("tenant-portal"),
    )


def _configs(api) -> dict[str, dict]:
    return {c["name"]: c for c in api.get("/api/v1/tenants/acme/kms-configs/").json["results"]}


def test_configs_are_listed_oldest_first_with_the_names_of_their_secrets_only(api, tenants_own_key):
    listed = api.get("/api/v1/tenants/acme/kms-configs/").json["results"]
    assert [(c["name"], c["is_primary"]) for c in listed] == [("Vendor-provided key", True), ("Acme's AWS key", False)]
    own = listed[1]
    assert own["owner"] == "tenant" and own["provider"] == "aws"
    assert sorted(own["secret_fields_set"]) == ["access_key_id", "secret_access_key"]
    assert "secrets" not in own and "sealed_secrets" not in own
    assert own["settings"]["key_id"].startswith("arn:aws:kms:")
    one = api.get(f"/api/v1/tenants/acme/kms-configs/{own['uid']}/").json
    assert one == own
    assert api.patch(f"/api/v1/tenants/acme/kms-configs/{own['uid']}/", {"settings": {}}).status == 405


def test_a_vendor_provided_aws_key_is_tested_through_the_kms_before_it_is_saved(api, tenant, moto):
    settings, secrets = moto.provider_settings(moto.create_key())
    answer = api.post(
        "/api/v1/tenants/acme/kms-configs/",
        {"provider": "aws", "name": "Vendor AWS key", "settings": settings, "secrets": secrets},
    )
    assert answer.status == 201, answer.json
    assert answer.json["health"] == "ok" and answer.json["owner"] == "vendor" and not answer.json["is_primary"]
    assert "secrets" not in answer.json
    assert KmsConfig.objects.get(uid=answer.json["uid"]).settings["endpoint_url"] == moto.url

    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    answer = api.post(
        "/api/v1/tenants/acme/kms-configs/",
        {"provider": "aws", "name": "Missing key", "settings": {**settings, "key_id": missing}, "secrets": secrets},
    )
    assert answer.status == 400 and answer.json["detail"].startswith("Test connection failed")
    assert not KmsConfig.objects.filter(name="Missing key").exists()


def test_provider_errors_name_the_setting_or_secret_they_are_about(api, tenant):
    answer = api.post("/api/v1/tenants/acme/kms-configs/", {"provider": "aws", "settings": {"key_id": "nope"}})
    assert answer.status == 400 and "settings.key_id" in answer.json["errors"]
    answer = api.post("/api/v1/tenants/acme/kms-configs/", {"provider": "local", "secrets": {"kek": "short"}})
    assert answer.status == 400 and "secrets.kek" in answer.json["errors"]
    answer = api.post("/api/v1/tenants/acme/kms-configs/", {"provider": "vault"})
    assert answer.status == 400 and answer.json["errors"] == {"provider": ["Unknown provider."]}
    assert KmsConfig.objects.count() == 1


def test_the_vendor_cannot_change_the_tenants_own_key(api, tenants_own_key):
    uid = tenants_own_key.uid
    for action in ("make-primary", "decrypt-only", "retire"):
        answer = api.post(f"/api/v1/tenants/acme/kms-configs/{uid}/{action}/")
        assert answer.status == 403 and answer.problem_type == "forbidden", action
        assert "tenant's own key" in answer.json["detail"]
    tenants_own_key.refresh_from_db()
    assert tenants_own_key.state == ConfigState.ACTIVE and not tenants_own_key.is_primary
    assert not RekeyJob.objects.exists()


def test_make_primary_returns_the_rekey_job_and_the_history_shows_it(api, tenant):
    old = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    new = api.post("/api/v1/tenants/acme/kms-configs/", {"provider": "local", "name": "Second key"}).json
    answer = api.post(f"/api/v1/tenants/acme/kms-configs/{new['uid']}/make-primary/")
    assert answer.status == 202
    job = answer.json
    assert job["kind"] == "rewrap" and job["tenant"] == "acme" and job["state"] == "pending"
    assert job["target_config"] == new["uid"] and job["source_config"] == str(old.uid)
    configs = _configs(api)
    assert configs["Second key"]["is_primary"] and configs["Vendor-provided key"]["state"] == "decrypt_only"
    history = api.get("/api/v1/tenants/acme/key-history/").json["results"]
    assert history[0]["action"] == "made_primary" and history[0]["kms_config"] == new["uid"]
    assert history[0]["actor"] == "api-key:test key"
    again = api.post(f"/api/v1/tenants/acme/kms-configs/{new['uid']}/make-primary/")
    assert again.status == 409


def test_a_config_can_be_made_primary_as_it_is_created(api, tenant):
    answer = api.post("/api/v1/tenants/acme/kms-configs/", {"provider": "local", "name": "K2", "make_primary": True})
    assert answer.status == 201 and answer.json["is_primary"]
    assert RekeyJob.objects.filter(tenant=tenant, target_config__uid=answer.json["uid"]).exists()


def test_a_vendor_key_never_replaces_the_tenants_own_key_even_while_suspended(api, tenants_own_key):
    kms_config_make_primary(config=tenants_own_key, actor=Actor.system("tenant-portal"))
    vendor = KmsConfig.objects.get(owner="vendor", tenant=tenants_own_key.tenant)
    answer = api.post(f"/api/v1/tenants/acme/kms-configs/{vendor.uid}/make-primary/")
    assert answer.status == 403 and answer.json["type"].endswith("/tenant-sovereignty")
    assert "can never replace it" in answer.json["detail"]
    assert api.post("/api/v1/tenants/acme/suspend/").status == 200
    assert api.post(f"/api/v1/tenants/acme/kms-configs/{vendor.uid}/make-primary/").status == 403
    assert KmsConfig.objects.get(pk=tenants_own_key.pk).is_primary


def test_decrypt_only_and_retire_wait_until_no_key_depends_on_the_config(api, tenant):
    first = KmsConfig.objects.get(tenant=tenant, is_primary=True)
    second = api.post("/api/v1/tenants/acme/kms-configs/", {"provider": "local", "name": "K2"}).json
    assert api.post(f"/api/v1/tenants/acme/kms-configs/{first.uid}/decrypt-only/").status == 409  # primary
    assert api.post(f"/api/v1/tenants/acme/kms-configs/{second['uid']}/decrypt-only/").json["state"] == "decrypt_only"
    job = api.post(f"/api/v1/tenants/acme/kms-configs/{second['uid']}/make-primary/").json
    blocked = api.post(f"/api/v1/tenants/acme/kms-configs/{first.uid}/retire/")
    assert blocked.status == 409 and "wrapped only under" in blocked.json["detail"]
    job_run(RekeyJob.objects.get(uid=job["uid"]).pk)
    assert api.get(f"/api/v1/rekey-jobs/{job['uid']}/").json["state"] == "succeeded"
    retired = api.post(f"/api/v1/tenants/acme/kms-configs/{first.uid}/retire/")
    assert retired.status == 200 and retired.json["state"] == "retired"
    assert KeyHistoryEntry.objects.filter(tenant=tenant, action="retired").exists()
    assert api.post("/api/v1/crypto/encrypt", {"tenant": "acme", "fields": {}, "requesting_id": "t"}).status == 200


def test_each_configuration_says_which_of_the_apis_actions_the_caller_may_take_and_why_not(api, tenant, moto):
    second = api.post("/api/v1/tenants/acme/kms-configs/", {"provider": "local", "name": "K2"}).json
    assert second["allowed_actions"] == ["make_primary", "decrypt_only", "retire"] and second["refused_actions"] == {}
    primary = _configs(api)["Vendor-provided key"]
    assert primary["allowed_actions"] == []
    assert primary["refused_actions"]["retire"] == "The primary key cannot be retired; make another key primary first."
    # what it says is what happens: a refused action is refused with the same reason
    refused = api.post(f"/api/v1/tenants/acme/kms-configs/{primary['uid']}/retire/")
    assert refused.status == 409 and refused.json["detail"] == primary["refused_actions"]["retire"]

    settings, secrets = moto.provider_settings(moto.create_key())
    kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.TENANT,
        data=ConfigInput(provider="aws", name="Acme's AWS key", settings=settings, secrets=secrets),
        actor=Actor.system("tenant-portal"),
    )
    configs = _configs(api)
    own = configs["Acme's AWS key"]
    assert own["allowed_actions"] == [] and "the tenant's own key" in own["refused_actions"]["make_primary"]
    now = configs["K2"]
    assert now["allowed_actions"] == ["decrypt_only", "retire"]
    assert "can never replace it" in now["refused_actions"]["make_primary"]
    answer = api.post(f"/api/v1/tenants/acme/kms-configs/{second['uid']}/make-primary/")
    assert answer.status == 403 and answer.json["detail"] == now["refused_actions"]["make_primary"]
