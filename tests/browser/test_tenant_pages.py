"""The tenant portal's other pages in Chromium, with data in them: the key-use charts, members, settings,
jobs, the KMIP and PKCS#11 forms, a failed connection test, and what an auditor sees (and cannot do).
``busy_tenant`` (in conftest.py) is the tenant they look at."""

from __future__ import annotations

import pytest

from tests.browser.conftest import shot, sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_pages_an_owner_uses_read_clearly(page, busy_tenant, owner):
    tenant = busy_tenant
    sign_in(page, owner.email, PASSWORD, owner.totp_secret)
    page.goto(f"/tenant/{tenant.external_id}/")
    assert page.get_by_text("Your data is protected by your own key").is_visible()
    assert page.locator("svg.chart rect.bar").count() > 60
    shot(page, "overview-with-key-use")
    page.get_by_text("As a table, by data label").click()
    shot(page, "overview-key-use-table")

    page.get_by_role("link", name="Members").click()
    assert page.get_by_text("ciso@acme.example").is_visible()
    shot(page, "members")
    page.get_by_role("link", name="Rekey jobs").click()
    shot(page, "jobs")
    page.get_by_role("link", name="Settings").click()
    shot(page, "settings")

    page.goto(f"/tenant/{tenant.external_id}/keys/new/kmip/")
    shot(page, "form-kmip")
    page.goto(f"/tenant/{tenant.external_id}/keys/new/pkcs11/")
    shot(page, "form-pkcs11")
    page.goto(f"/tenant/{tenant.external_id}/keys/new/aws/")
    page.fill("input[name=key_id]", "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000")
    page.fill("input[name=endpoint_url]", "http://127.0.0.1:1")
    page.get_by_role("button", name="Test connection").click()
    page.get_by_text("Test failed.").wait_for()
    shot(page, "form-aws-test-failed")
    page.fill("input[name=key_id]", "alias/aws/s3")
    page.fill("input[name=access_key_id]", "lowercase-is-wrong")
    page.get_by_role("button", name="Test and save").click()
    page.locator(".errorlist").first.wait_for()
    shot(page, "form-aws-field-errors")


def test_an_auditor_sees_everything_and_can_change_nothing(page, busy_tenant):
    tenant = busy_tenant
    from keycore.models import User

    auditor = User.objects.get(email="auditor@acme.example")
    from allauth.mfa.models import Authenticator

    Authenticator.objects.filter(user=auditor).delete()  # auditors need no MFA unless the tenant requires it
    sign_in(page, auditor.email, PASSWORD)
    page.goto(f"/tenant/{tenant.external_id}/keys/")
    assert page.locator(".sidebar").get_by_text("Read-only: you can see everything, change nothing.").is_visible()
    assert page.get_by_role("button", name="Bring your own key").count() == 0
    shot(page, "auditor-keys")
    page.get_by_role("link", name="Acme production key").first.click()
    assert page.get_by_role("button", name="Revoke…").count() == 0
    assert page.get_by_role("button", name="Make primary").count() == 0
    shot(page, "auditor-key-detail")
    assert page.get_by_role("link", name="Settings").count() == 0
