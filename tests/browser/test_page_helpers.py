"""keycore.js's small helpers in Chromium: the external id suggested from a tenant's name, the focus on a
form's first error, Copy buttons (and the text to select without them), the demo KMS's Fill button."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from keycore.models import Tenant
from tests.browser.conftest import sign_in
from tests.factories import PASSWORD, make_tenant

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _signed_in(page, user) -> None:
    while time.time() % 30 > 25:  # a TOTP code must still be current when the form arrives
        time.sleep(0.5)
    sign_in(page, user.email, PASSWORD, user.totp_secret)


def _create_key_confirming_it_is_me(page) -> None:
    """Create the API key the form holds; creating one asks for the password again first (then does it)."""
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url("**/accounts/reauthenticate/**")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    page.locator("#new-secret").wait_for()


def test_the_new_tenant_form_suggests_an_external_id_and_points_at_the_first_error(page, vendor_admin):
    make_tenant("acme-corp", "Acme Corp (the first)")
    _signed_in(page, vendor_admin)
    page.goto("/vendor/onboarding/new/")
    page.locator("#id_name").press_sequentially("Société Générale & Co.")
    assert page.input_value("#id_external_id") == "societe-generale-co"
    page.fill("#id_external_id", "sg")  # typed by hand: the name no longer overrides it
    page.locator("#id_name").press_sequentially("!")
    assert page.input_value("#id_external_id") == "sg"

    page.fill("#id_name", "")
    page.fill("#id_external_id", "")
    page.locator("#id_name").press_sequentially("Acme Corp")
    assert page.input_value("#id_external_id") == "acme-corp"  # taken: the server says so
    page.get_by_role("button", name="Create tenant").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#id_external_id_errors").inner_text() == "Already in use."
    assert page.evaluate("document.activeElement.id") == "id_external_id"
    assert not Tenant.objects.filter(name="Acme Corp").exists()


def test_a_new_api_key_has_a_copy_button_and_stays_selectable_without_it(page, vendor_admin):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _signed_in(page, vendor_admin)
    page.goto("/vendor/api-keys/")
    page.fill("#id_name", "billing-service")
    page.check("input[value=crypto]")
    _create_key_confirming_it_is_me(page)
    secret = page.locator("#new-secret").inner_text()
    copy = page.locator("button[data-copy=new-secret]")
    page.bring_to_front()  # the clipboard answers a focused page only
    copy.click()
    expect(copy).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret


def test_without_javascript_there_is_no_dead_copy_button(browser, live_server, vendor_admin):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    try:
        _signed_in(page, vendor_admin)
        page.goto("/vendor/api-keys/")
        page.fill("#id_name", "billing-service")
        page.check("input[value=crypto]")
        _create_key_confirming_it_is_me(page)
        assert page.locator("#new-secret").is_visible()  # the key, to select by hand
        assert not page.get_by_role("button", name="Copy the new API key").is_visible()
    finally:
        context.close()


def test_the_demo_kms_fills_the_aws_form(page, owner, tenant, settings):
    settings.KEYCORE_DEMO_KMS = {
        "endpoint_url": "http://127.0.0.1:8765",
        "key_id": "arn:aws:kms:us-east-1:123456789012:key/5b1e7c1e-0000-4000-8000-000000000001",
        "region": "us-east-1",
        "access_key_id": "AKIAKEYCOREDEMO00001",
        "secret_access_key": "keycore-demo-secret-not-an-aws-secret",
    }
    _signed_in(page, owner)
    page.goto(f"/tenant/{tenant.external_id}/keys/new/aws/")
    page.get_by_role("button", name="Fill in the form with the demo key").click()
    for name, value in settings.KEYCORE_DEMO_KMS.items():
        assert page.input_value(f"#kms-form [name={name}]") == value
    assert page.evaluate("document.activeElement.name") == "config_name"  # what is left to type
