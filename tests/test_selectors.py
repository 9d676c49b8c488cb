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


def test_a_tenants_lookups_never_find_another_tenants_rows(tenant, other_tenant, actor):
    from keycore.services.tenants import invitation_create

    theirs = selectors.kms_config_primary(tenant=other_tenant)
    their_invitation, _ = invitation_create(tenant=other_tenant, email="x@globex.example", role="admin", actor=actor)
    assert selectors.kms_config_get(tenant=other_tenant, uid=theirs.uid) == theirs
    with pytest.raises(errors.NotFound, match="no such KMS configuration"):
        selectors.kms_config_get(tenant=tenant, uid=theirs.uid)
    with pytest.raises(errors.NotFound, match="no such invitation"):
        selectors.invitation_get(tenant=tenant, uid=their_invitation.uid)
    assert theirs not in selectors.kms_config_list(tenant=tenant)
    assert their_invitation not in selectors.invitation_list(tenant=tenant)
    assert not selectors.key_history_list(tenant=tenant).filter(tenant=other_tenant).exists()
    assert selectors.kms_config_primary(tenant=tenant).tenant == tenant


def test_job_and_audit_lists_are_every_tenants_or_one_tenants(tenant, other_tenant, actor):
    from keycore.services.jobs import job_start_rewrap

    ours = job_start_rewrap(tenant=tenant, source=None, target=selectors.kms_config_primary(tenant=tenant), actor=actor)
    theirs = job_start_rewrap(
        tenant=other_tenant, source=None, target=selectors.kms_config_primary(tenant=other_tenant), actor=actor
    )
    assert set(selectors.rekey_job_list()) >= {ours, theirs}
    assert list(selectors.rekey_job_list(tenant=tenant)) == [ours]
    assert selectors.rekey_job_get(uid=theirs.uid) == theirs
    with pytest.raises(errors.NotFound, match="no such rekey job"):
        selectors.rekey_job_get(uid=other_tenant.uid)
    assert {e.tenant_id for e in selectors.audit_event_list(tenant=tenant)} == {tenant.pk}
    assert {e.tenant_id for e in selectors.audit_event_list()} >= {tenant.pk, other_tenant.pk}


def test_the_tenants_list_loads_only_its_columns_unless_asked_for_all(tenant):
    assert "require_mfa" in selectors.tenant_list().get(pk=tenant.pk).get_deferred_fields()
    assert not selectors.tenant_list(columns=None).get(pk=tenant.pk).get_deferred_fields()
