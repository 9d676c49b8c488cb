"""Reads in keycore/selectors.py that the portals, the API and the commands share."""

from __future__ import annotations

import pytest

from keycore import errors, selectors

pytestmark = pytest.mark.django_db


def test_a_tenant_is_found_by_its_external_id_exactly(tenant, other_tenant):
    assert selectors.tenant_by_external_id("acme") == tenant
    assert selectors.tenant_by_external_id("globex") == other_tenant
    for near_miss in ("ACME", "acm", "acme ", ""):
        with pytest.raises(errors.TenantNotFound, match="No tenant has the external id"):
            selectors.tenant_by_external_id(near_miss)


def test_a_tenant_lookup_can_load_only_the_columns_a_hot_path_needs(tenant, django_assert_num_queries):
    with django_assert_num_queries(1):
        found = selectors.tenant_by_external_id("acme", only=("pk", "uid", "status"))
    assert found.get_deferred_fields() >= {"name", "key_ownership"} and found.uid == tenant.uid
