"""The vendor portal's tenant page shows exactly the actions keycore/key_rules.py allows the vendor on each
configuration: it asks the function and restates no rule — and the tenant's own key offers the vendor nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from keycore.key_rules import kms_config_allowed_actions
from keycore.models import KmsConfig
from keycore.services import keys
from keycore.services.audit import Actor

#: each action the vendor portal offers, and the URL of its button
OFFERED_BY = {
    "make_primary": "vendor:key_make_primary",
    "decrypt_only": "vendor:key_decrypt_only",
    "retire": "vendor:key_retire",
}


def _buttons(page: str, config) -> dict[str, str]:
    """{action: "enabled" or "disabled"} for each of the configuration's buttons on the page."""
    found = {}
    for action, name in OFFERED_BY.items():
        action_url = reverse(name, args=[config.tenant.external_id, config.uid])
        at = page.find(f'action="{action_url}"')
        if at >= 0:
            button = page[at : page.index("</button>", at)]
            found[action] = "disabled" if " disabled" in button else "enabled"
    return found


@pytest.mark.parametrize("state", ["active", "decrypt_only", "disabled", "revoked", "retired", "destroyed"])
def test_each_vendor_key_offers_what_the_rules_allow(as_admin, vendor_admin, tenant, state):
    second = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Second", {}, {}), actor=Actor.system("t")
    )
    KmsConfig.objects.filter(pk=second.pk).update(state=state)
    page = as_admin.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    for config in KmsConfig.objects.filter(tenant=tenant).select_related("tenant"):
        allowed = kms_config_allowed_actions(config, Actor.for_user(vendor_admin)).allowed
        enabled = {a for a, how in _buttons(page, config).items() if how == "enabled"}
        assert enabled == set(allowed) & set(OFFERED_BY), (config.name, config.state)


def test_once_the_tenant_owns_its_key_make_primary_is_shown_refused_with_the_reason(
    as_admin, vendor_admin, tenant, tenant_own_key
):
    vendor_key = KmsConfig.objects.select_related("tenant").get(tenant=tenant, owner="vendor")
    answer = kms_config_allowed_actions(vendor_key, Actor.for_user(vendor_admin))
    page = as_admin.get(reverse("vendor:tenant", args=["acme"])).content.decode()
    assert _buttons(page, vendor_key)["make_primary"] == "disabled"
    assert answer.reasons["make_primary"].replace("'", "&#x27;") in page
    # the tenant's own key offers the vendor no button at all
    assert _buttons(page, tenant_own_key) == {}
