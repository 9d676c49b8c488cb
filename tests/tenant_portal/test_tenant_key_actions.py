"""The tenant portal shows exactly the actions keycore/key_rules.py allows on the tenant's own key, in every state:
it asks the function and restates no rule. An auditor, and a vendor-provided key, get none."""

from __future__ import annotations

import pytest

from keycore.key_rules import kms_config_allowed_actions
from keycore.models import KmsConfig
from keycore.services.audit import Actor
from tests.tenant_portal.conftest import url

#: each action of the function, and the page's link or form that offers it
OFFERED_BY = {
    "make_primary": "key_primary",
    "decrypt_only": "key_demote",
    "disable": "key_disable",
    "revoke": "key_revoke",
    "reenable": "key_reenable",
    "check": "key_check",
    "replace_secrets": "key_secrets",
}


def _shown(page: str, tenant, config) -> set[str]:
    return {action for action, name in OFFERED_BY.items() if url(name, tenant, config=config.uid) in page}


@pytest.mark.parametrize(
    ("state", "primary"),
    [(state, False) for state in ("active", "decrypt_only", "disabled", "revoked", "retired", "destroyed")]
    + [(state, True) for state in ("active", "disabled", "revoked")],
)
def test_the_key_page_offers_what_the_rules_allow_and_nothing_else(
    owner_client, owner, tenant, own_config, state, primary
):
    if primary:
        KmsConfig.objects.filter(tenant=tenant).update(is_primary=False)
    KmsConfig.objects.filter(pk=own_config.pk).update(state=state, is_primary=primary)
    own_config.refresh_from_db()
    page = owner_client.get(url("key", tenant, config=own_config.uid)).content.decode()
    allowed = kms_config_allowed_actions(own_config, Actor.for_user(owner)).allowed
    assert _shown(page, tenant, own_config) == set(allowed) & set(OFFERED_BY)


def test_an_auditor_is_offered_nothing(client, member, tenant, own_config):
    client.force_login(member)
    page = client.get(url("key", tenant, config=own_config.uid)).content.decode()
    assert _shown(page, tenant, own_config) == set()


def test_the_vendors_key_is_shown_without_actions(owner_client, tenant):
    vendor_key = KmsConfig.objects.get(tenant=tenant, owner="vendor")
    page = owner_client.get(url("key", tenant, config=vendor_key.uid)).content.decode()
    assert _shown(page, tenant, vendor_key) == set()


def test_a_health_check_of_a_retired_key_is_refused_with_the_rules_reason(owner_client, tenant, own_config):
    KmsConfig.objects.filter(pk=own_config.pk).update(state="retired")
    checked = own_config.health_checked_at
    response = owner_client.post(url("key_check", tenant, config=own_config.uid), follow=True)
    assert "Acme AWS key is retired: there is nothing to check." in response.content.decode()
    own_config.refresh_from_db()
    assert own_config.health_checked_at == checked
