"""keycore/key_rules.py: what each kind of actor may do to a KMS configuration in each state — the one table the
services enforce, the portals show and the API describes. The table below is the specification; the services are
checked against the function for every state, so neither can drift from it."""

from __future__ import annotations

import pytest

from keycore import errors
from keycore.key_rules import ACTIONS, kms_config_allowed_actions
from keycore.models import AuditEvent, KmsConfig
from keycore.roles import VendorRole
from keycore.services import keys, tenants
from keycore.services.apikeys import api_key_create
from keycore.services.audit import Actor
from keycore.services.keys import ConfigInput
from tests.factories import make_staff

STATES = ("active", "decrypt_only", "disabled", "revoked", "retired", "destroyed")

#: what the tenant itself (and KeyCore's own jobs) may do to a configuration that is not primary, per state;
#: on its own key the same minus retire and destroy, which only exist for vendor-provided keys
NOT_PRIMARY = {
    "active": "make_primary decrypt_only disable revoke replace_secrets check retire destroy",
    "decrypt_only": "make_primary disable revoke replace_secrets check retire destroy",
    "disabled": "revoke reenable replace_secrets check retire destroy",
    "revoked": "reenable replace_secrets check retire destroy",
    "retired": "revoke replace_secrets destroy",
    "destroyed": "replace_secrets destroy",
}
#: the primary key: never demoted, retired or destroyed while its tenant is active
PRIMARY = {
    "active": "disable revoke replace_secrets check",
    "disabled": "revoke reenable replace_secrets check",
    "revoked": "reenable replace_secrets check",
}


def _set(words: str) -> set[str]:
    return set(words.split())


@pytest.fixture(params=["staff", "api-key", "operator"])
def vendor(request, db):
    """Each way the vendor acts: a staff member, an API key, the operator's command line."""
    if request.param == "staff":
        return Actor.for_user(make_staff("ops@vendor.example", VendorRole.ADMIN))
    if request.param == "api-key":
        key, _ = api_key_create(name="pipeline", scopes=["keys:write"], actor=Actor.system("setup"))
        return Actor(label=f"api-key:{key.name}", api_key=key)
    return Actor(label="operator:manage.py")


@pytest.fixture(params=["member", "system"])
def not_vendor(request, owner):
    """Who is never the vendor: a signed-in member of the tenant, and KeyCore's own jobs."""
    return Actor.for_user(owner) if request.param == "member" else Actor.system("tests")


def _config(tenant, *, owner: str, state: str, primary: bool = False) -> KmsConfig:
    """A configuration in ``state`` (unsaved: the rules read the row, not the KMS)."""
    return KmsConfig(tenant=tenant, owner=owner, provider="local", name="Key K", state=state, is_primary=primary)


def _bring_own_key(tenant) -> KmsConfig:
    config = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "Acme's own key", {}, {}), actor=Actor.system("t")
    )
    KmsConfig.objects.filter(pk=config.pk).update(owner="tenant")
    return KmsConfig.objects.get(pk=config.pk)


@pytest.mark.parametrize("state", STATES)
def test_the_tenant_and_keycore_may_do_what_the_state_allows(tenant, not_vendor, state):
    vendor_key = kms_config_allowed_actions(_config(tenant, owner="vendor", state=state), not_vendor)
    own_key = kms_config_allowed_actions(_config(tenant, owner="tenant", state=state), not_vendor)
    assert set(vendor_key.allowed) == _set(NOT_PRIMARY[state])
    assert set(own_key.allowed) == _set(NOT_PRIMARY[state]) - {"retire", "destroy"}
    assert set(vendor_key.allowed) | set(vendor_key.refusals) == set(ACTIONS)


@pytest.mark.parametrize("state", sorted(PRIMARY))
def test_the_primary_key_is_never_demoted_retired_or_destroyed_while_the_tenant_is_active(tenant, not_vendor, state):
    answer = kms_config_allowed_actions(_config(tenant, owner="vendor", state=state, primary=True), not_vendor)
    assert set(answer.allowed) == _set(PRIMARY[state])
    assert isinstance(answer.refusal("destroy").exception(), errors.Conflict)
    assert answer.reasons["decrypt_only"] == "The primary key cannot be decrypt-only; make another key primary first."


def test_an_offboarding_tenants_primary_vendor_key_may_be_destroyed(tenant, actor):
    tenant = tenants.tenant_set_status(tenant=tenant, transition="offboard", actor=actor)
    answer = kms_config_allowed_actions(_config(tenant, owner="vendor", state="active", primary=True), actor)
    assert "destroy" in answer


@pytest.mark.parametrize("state", STATES)
def test_the_vendor_manages_its_own_key_of_a_tenant_that_never_brought_one_as_the_tenant_would(tenant, vendor, state):
    answer = kms_config_allowed_actions(_config(tenant, owner="vendor", state=state), vendor)
    assert set(answer.allowed) == _set(NOT_PRIMARY[state])


@pytest.mark.parametrize("state", STATES)
def test_the_vendor_never_gets_an_action_on_the_tenants_own_key(tenant, vendor, state):
    answer = kms_config_allowed_actions(_config(tenant, owner="tenant", state=state), vendor)
    # a health check changes nothing and takes nothing away; everything else is the tenant's
    assert set(answer.allowed) <= {"check"}
    for action in ("make_primary", "decrypt_only", "disable", "revoke", "reenable", "replace_secrets"):
        refusal = answer.refusal(action)
        assert refusal.sovereignty, action
        assert "is the tenant's own key: only the tenant's administrators can" in refusal.reason
    assert answer.refusal("retire").error is errors.PermissionDenied
    assert answer.refusal("destroy").error is errors.PermissionDenied


@pytest.mark.parametrize("state", ["active", "decrypt_only"])
def test_once_the_tenant_brings_a_key_no_vendor_key_may_become_primary_on_the_vendors_word(tenant, vendor, state):
    _bring_own_key(tenant)
    vendor_key = _config(tenant, owner="vendor", state=state)
    answer = kms_config_allowed_actions(vendor_key, vendor)
    assert "make_primary" not in answer and answer.refusal("make_primary").sovereignty
    assert "can never replace it" in answer.reasons["make_primary"]
    # the state still offers it (the page shows the button, disabled, with the reason); the tenant may go back
    assert answer.offered["make_primary"]
    assert "make_primary" in kms_config_allowed_actions(vendor_key, Actor.system("tests"))
    # the rest of the vendor's own key stays the vendor's
    assert set(answer.allowed) == _set(NOT_PRIMARY[state]) - {"make_primary"}


def test_an_unknown_action_is_a_programming_error(tenant, actor):
    with pytest.raises(ValueError, match="unknown action"):
        kms_config_allowed_actions(_config(tenant, owner="vendor", state="active"), actor).refusal("delete")


# --- the services enforce exactly what the function answers -------------------------------------------

SERVICES = {
    "make_primary": keys.kms_config_make_primary,
    "decrypt_only": keys.kms_config_decrypt_only,
    "disable": keys.kms_config_disable,
    "revoke": keys.kms_config_revoke,
    "reenable": keys.kms_config_reenable,
    "retire": keys.kms_config_retire,
}


@pytest.mark.parametrize("state", ["active", "decrypt_only", "disabled", "revoked", "retired"])
@pytest.mark.parametrize("action", sorted(SERVICES))
def test_each_service_refuses_exactly_what_the_function_refuses_and_with_its_reason(tenant, actor, state, action):
    config = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=ConfigInput("local", "Second", {}, {}), actor=actor
    )
    KmsConfig.objects.filter(pk=config.pk).update(state=state)
    config.refresh_from_db()
    refusal = kms_config_allowed_actions(config, actor).refusal(action)
    if refusal is None:
        SERVICES[action](config=config, actor=actor)  # raises nothing
        return
    with pytest.raises(refusal.error) as raised:
        SERVICES[action](config=config, actor=actor)
    assert type(raised.value) is refusal.error and raised.value.detail == refusal.reason


@pytest.mark.parametrize("action", ["make_primary", "decrypt_only", "disable", "revoke", "reenable"])
def test_a_vendor_refused_by_the_function_is_refused_by_the_service_and_recorded(tenant, vendor, action):
    own = _bring_own_key(tenant)
    KmsConfig.objects.filter(pk=own.pk).update(state="disabled" if action == "reenable" else "active")
    own.refresh_from_db()
    reason = kms_config_allowed_actions(own, vendor).reasons[action]
    with pytest.raises(errors.TenantSovereignty) as refused:
        SERVICES[action](config=own, actor=vendor)
    assert refused.value.detail == reason
    recorded = AuditEvent.objects.filter(tenant=tenant, action="vendor.refused").latest("id")
    assert recorded.changes["reason"][1] == reason and recorded.actor_label == vendor.label
