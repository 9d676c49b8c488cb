"""The first thing anyone does: sign in (with a TOTP code) and land in their own portal."""

from __future__ import annotations

import pytest

from tests.browser.conftest import shot, sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_vendor_admin_signs_in_with_totp_and_lands_on_the_dashboard(page, vendor_admin, tenant):
    sign_in(page, vendor_admin.email, PASSWORD, vendor_admin.totp_secret)
    assert page.url.endswith("/vendor/")
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    shot(page, "vendor-dashboard")


def test_a_tenant_owner_signs_in_and_sees_which_key_protects_the_data(page, owner, tenant):
    sign_in(page, owner.email, PASSWORD, owner.totp_secret)
    assert page.url.endswith(f"/tenant/{tenant.external_id}/")
    assert page.get_by_text("protected by a vendor-provided key").is_visible()
    shot(page, "tenant-overview")


def test_a_wrong_password_is_refused_with_a_message(page, owner):
    page.goto("/accounts/login/")
    page.fill("input[name=login]", owner.email)
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert page.get_by_text("not correct").first.is_visible()
    shot(page, "sign-in-refused")
