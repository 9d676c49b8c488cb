"""The Vendor keys section of the vendor portal: add one in the vendor's AWS KMS (moto) after a test, see its health,
tenants and data, make it the default, assign the tenants of a filter to it (after re-authentication), move one
key's tenants to another — and a tenant that owns its key is never moved."""

from __future__ import annotations

import pytest
from django.urls import reverse

from keycore.models import AuditEvent, KmsConfig, RekeyJob, VendorKey
from keycore.models.jobs import JobKind
from keycore.services import vendor_keys
from keycore.services.audit import Actor
from keycore.services.jobs import job_run
from keycore.services.tenants import tenant_create
from tests.vendor_portal.conftest import reauthenticate

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


def _local(name, **kwargs):
    return vendor_keys.vendor_key_create(name=name, provider="local", settings_={}, secrets={}, actor=ACTOR, **kwargs)


def test_a_vendor_key_in_the_vendors_aws_kms_is_tested_then_saved(as_admin, moto, vendor_admin):
    settings_, secrets = moto.provider_settings(moto.create_key())
    form = {"provider": "aws", "config_name": "EU AWS key", "config_rate_limit": "0", **settings_, **secrets}
    tested = as_admin.post(reverse("vendor:vendor_key_test"), form, headers={"HX-Request": "true"})
    assert b"Connected" in tested.content and not VendorKey.objects.exists()
    saved = as_admin.post(reverse("vendor:vendor_key_create") + "?provider=aws", {**form, "make_default": "on"})
    vendor_key = VendorKey.objects.get(name="EU AWS key")
    assert saved.status_code == 302 and saved["Location"] == reverse("vendor:vendor_key", args=[vendor_key.uid])
    assert vendor_key.is_default and vendor_key.health == "ok"
    assert AuditEvent.objects.get(action="vendor_key.created").actor_user == vendor_admin
    page = as_admin.get(reverse("vendor:vendor_keys")).content.decode()
    assert "EU AWS key" in page and "default" in page and "arn:aws:kms" in page
    assert secrets["secret_access_key"] not in page


def test_the_list_shows_tenants_served_and_data_and_the_detail_names_them(as_admin):
    _local("EU key", make_default=True)
    for name in ("alpha", "beta"):
        tenant_create(external_id=name, name=name.title(), actor=ACTOR, send=False)
    vendor_key = VendorKey.objects.get(name="EU key")
    row = as_admin.get(reverse("vendor:vendor_keys")).context["rows"][0]
    assert (row["tenants"], row["key_versions"]) == (2, 2)
    detail = as_admin.get(reverse("vendor:vendor_key", args=[vendor_key.uid])).content.decode()
    assert "Alpha" in detail and "Beta" in detail
    check = as_admin.post(reverse("vendor:vendor_key_check", args=[vendor_key.uid]))
    assert check.status_code == 302


def test_the_default_for_new_tenants_is_a_setting(as_operator):
    us = _local("US key")
    as_operator.post(reverse("vendor:vendor_key_default"), {"vendor_key": str(us.uid)})
    assert VendorKey.objects.get(is_default=True) == us
    tenant = tenant_create(external_id="new", name="New", actor=ACTOR, send=False)
    assert KmsConfig.objects.get(tenant=tenant, is_primary=True).vendor_key == us
    as_operator.post(reverse("vendor:vendor_key_default"), {"vendor_key": ""})
    assert not VendorKey.objects.filter(is_default=True).exists()


def test_assigning_the_tenants_of_a_filter_asks_for_the_password_then_starts_a_job(as_admin, tenant, other_tenant):
    eu = _local("EU key")
    page = as_admin.get(reverse("vendor:tenants"), {"q": "acm"}).content.decode()
    assert "Move to EU key" in page and 'name="q" value="acm"' in page
    url = reverse("vendor:vendor_key_assign", args=[eu.uid])
    unconfirmed = as_admin.post(url, {"q": "acm"})
    assert unconfirmed.status_code == 302 and "reauthenticate" in unconfirmed["Location"]
    assert not RekeyJob.objects.filter(kind=JobKind.VENDOR_KEY_MOVE).exists()
    reauthenticate(as_admin)
    started = as_admin.post(url, {"q": "acm"})
    job = RekeyJob.objects.get(kind=JobKind.VENDOR_KEY_MOVE)
    assert started["Location"] == reverse("vendor:job", args=[job.uid]) and job.params["tenant_ids"] == [tenant.pk]
    job_run(job.pk)
    assert KmsConfig.objects.get(tenant=tenant, is_primary=True).vendor_key == eu
    assert KmsConfig.objects.get(tenant=other_tenant, is_primary=True).vendor_key is None
    assert b"Move tenants to EU key" in as_admin.get(reverse("vendor:job", args=[job.uid])).content


def test_an_assignment_without_a_filter_moves_nobody(as_admin, tenant):
    eu = _local("EU key")
    reauthenticate(as_admin)
    as_admin.post(reverse("vendor:vendor_key_assign", args=[eu.uid]), {})
    assert not RekeyJob.objects.filter(kind=JobKind.VENDOR_KEY_MOVE).exists()


def test_a_tenant_that_owns_its_key_is_not_moved_and_the_vendor_is_told(as_admin, tenant, tenant_own_key):
    eu = _local("EU key")
    reauthenticate(as_admin)
    response = as_admin.post(reverse("vendor:vendor_key_assign", args=[eu.uid]), {"q": "acme"}, follow=True)
    assert b"own their key and were not moved" in response.content
    assert AuditEvent.objects.filter(tenant=tenant, action="vendor.refused").exists()
    assert KmsConfig.objects.get(tenant=tenant, is_primary=True) == tenant_own_key


def test_one_keys_tenants_move_to_another_and_retiring_asks_for_the_password(as_admin):
    old = _local("EU key", make_default=True)
    tenant_create(external_id="alpha", name="Alpha", actor=ACTOR, send=False)
    new = _local("EU key 2026")
    vendor_keys.vendor_key_make_default(vendor_key=new, actor=ACTOR)
    reauthenticate(as_admin)
    as_admin.post(reverse("vendor:vendor_key_assign", args=[new.uid]), {"from_vendor_key": str(old.uid)})
    job_run(RekeyJob.objects.get(kind=JobKind.VENDOR_KEY_MOVE).pk)
    as_admin.post(reverse("vendor:vendor_key_retire", args=[old.uid]))
    assert VendorKey.objects.get(pk=old.pk).state == "retired"


def test_an_auditor_sees_vendor_keys_but_changes_nothing(as_auditor):
    eu = _local("EU key")
    assert as_auditor.get(reverse("vendor:vendor_keys")).status_code == 200
    assert as_auditor.post(reverse("vendor:vendor_key_default"), {"vendor_key": str(eu.uid)}).status_code == 403
    assert not VendorKey.objects.filter(is_default=True).exists()


def test_a_new_tenant_from_the_portal_may_name_its_vendor_key(as_operator):
    _local("EU key", make_default=True)
    us = _local("US key")
    form = as_operator.get(reverse("vendor:tenant_create")).content.decode()
    assert 'name="vendor_key"' in form and "US key" in form
    as_operator.post(
        reverse("vendor:tenant_create"),
        {
            "name": "Hooli",
            "external_id": "hooli",
            "vendor_key": str(us.uid),
            "admins-TOTAL_FORMS": "0",
            "admins-INITIAL_FORMS": "0",
        },
    )
    assert KmsConfig.objects.get(tenant__external_id="hooli", is_primary=True).vendor_key == us
