"""The vendor portal in a real browser: a member of staff's day, start to finish, and a picture of every page.

The rekey job of the key made primary runs on a real Celery worker (its own queue),
against the same database the live server serves; the page watches it finish by
polling with htmx.
"""

from __future__ import annotations

import re
import time

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import expect

from keycore.models import Invitation, KmsConfig, RekeyJob, Tenant
from keycore.models.keys import ConfigOwner
from tests.browser.conftest import shot, sign_in
from tests.factories import PASSWORD, make_tenant

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _sign_in(page, user) -> None:
    """sign_in with a TOTP code that will still be current when the form arrives.

    A code belongs to one 30-second period; computed in the last seconds of one it
    can reach the server in the next and be refused (seen on a loaded machine).
    """
    while time.time() % 30 > 25:
        time.sleep(0.5)
    sign_in(page, user.email, PASSWORD, user.totp_secret)


def _reauthenticate_if_asked(page) -> None:
    if "/reauthenticate/" in page.url:
        page.fill("input[name=password]", PASSWORD)
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_load_state("networkidle")


def _confirm_in_page(page, shot_name: str | None = None) -> None:
    """Answer the page's own confirmation dialog (data-confirm) with its action button."""
    dialog = page.locator("dialog.confirm-dialog[open]")
    dialog.wait_for()
    assert page.evaluate("document.activeElement.textContent") == "Cancel"  # Enter never confirms by accident
    if shot_name:
        shot(page, shot_name)
    dialog.locator("[data-answer=yes]").click()


def _no_browser_dialogs(page) -> None:
    page.on("dialog", lambda dialog: pytest.fail(f"a browser dialog: {dialog.message}"))


def test_staff_find_a_tenant_invite_its_admin_and_move_it_to_a_new_key(page, vendor_admin, celery_worker):
    make_tenant("acme", "Acme Corporation")
    make_tenant("globex", "Globex Industries")
    _sign_in(page, vendor_admin)
    assert page.get_by_role("heading", name="Dashboard").is_visible()

    # find the tenant: "/" jumps to the search box, typing filters as you type, j + Enter opens the first row
    page.goto("/vendor/tenants/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "id_q"
    page.keyboard.type("acm")
    expect(page.locator("#tenant-results tbody tr")).to_have_count(1)
    assert page.get_by_role("status").first.inner_text().startswith("Showing 1 tenant")
    assert "q=acm" in page.url  # the search is in the address bar, so it can be shared and reloaded
    shot(page, "tenants-search")
    page.locator("body").click(position={"x": 5, "y": 5})  # leave the search box, as a keyboard user would with Tab
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url("**/vendor/tenants/acme/")
    assert page.get_by_role("heading", name="Acme Corporation", level=1).is_visible()

    # invite a tenant administrator: the email carries a single-use link
    page.fill("#id_email", "it@acme.example")
    page.select_option("#id_role", "owner")
    page.get_by_role("button", name="Send invitation").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("Invited it@acme.example").is_visible()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["it@acme.example"]
    link = re.search(r"http\S+/invitations/\S+/", mail.outbox[0].body).group(0)
    assert Invitation.objects.get(email="it@acme.example").state == "pending" and link
    shot(page, "tenant-detail-invited")

    # add a vendor-provided key, then make it primary; the rekey job runs on the Celery worker
    page.get_by_role("button", name="Add a vendor-provided key").click()
    page.wait_for_url("**/keys/new/")
    page.fill("#id_config_name", "Second vendor key")
    shot(page, "key-create")
    page.get_by_role("button", name="Save key").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("Added Second vendor key").is_visible()
    new = KmsConfig.objects.get(tenant__external_id="acme", name="Second vendor key")
    assert new.owner == ConfigOwner.VENDOR and not new.is_primary
    _no_browser_dialogs(page)
    row = page.locator("table.configs tr", has_text="Second vendor key")
    row.get_by_role("button", name="Make primary").click()
    _confirm_in_page(page, "make-primary-confirm")
    page.wait_for_url("**/vendor/jobs/**")
    job = RekeyJob.objects.get(target_config=new)
    try:
        page.get_by_text("Done: 1 tenant key.").wait_for(timeout=60000)
    except Exception:
        raise AssertionError(celery_worker.output()[-3000:]) from None
    assert RekeyJob.objects.get(pk=job.pk).state == "succeeded"
    assert page.locator("#job-progress progress").get_attribute("value") == "1"
    assert "run_rekey_job" in celery_worker.output()
    shot(page, "job-finished")

    page.goto("/vendor/tenants/acme/")
    assert page.locator("table.configs tr", has_text="Second vendor key").get_by_text("primary").is_visible()


def test_every_vendor_page_renders_for_an_administrator(page, vendor_admin, vendor_operator):
    """A picture of each page (test-results/), and the destructive path through re-authentication."""
    acme = make_tenant("acme", "Acme Corporation")
    for i in range(12):
        make_tenant(f"tenant-{i:02d}", f"Northwind Logistics {i}")
    _sign_in(page, vendor_admin)
    _no_browser_dialogs(page)
    for path, name in [
        ("/vendor/", "dashboard"),
        ("/vendor/tenants/", "tenants"),
        ("/vendor/tenants/?q=north&match=contains&sort=-created", "tenants-filtered"),
        ("/vendor/onboarding/new/", "tenant-create"),
        ("/vendor/onboarding/import/", "tenant-import"),
        ("/vendor/tenants/acme/", "tenant-detail"),
        ("/vendor/tenants/acme/keys/new/?provider=aws", "key-create-aws"),
        ("/vendor/jobs/", "jobs"),
        ("/vendor/staff/", "staff"),
        ("/vendor/api-keys/", "api-keys"),
        ("/vendor/audit/", "audit"),
    ]:
        response = page.goto(path)
        assert response.status == 200, path
        shot(page, name)

    # bulk onboarding: the preview judges every row before anything is created
    page.goto("/vendor/onboarding/import/")
    page.set_input_files(
        "#id_file",
        files=[
            {
                "name": "tenants.csv",
                "mimeType": "text/csv",
                "buffer": b"external_id,name,admin_email,admin_role\n"
                b"initech,Initech,ceo@initech.example,owner\n"
                b"bad id,Broken,x@broken.example,owner\n"
                b"acme,Acme Corporation,,\n",
            }
        ],
    )
    page.get_by_role("button", name="Preview").click()
    assert page.get_by_text("will be created").is_visible() and page.get_by_text("exists already").is_visible()
    shot(page, "tenant-import-preview")
    page.get_by_role("button", name="Create 1 tenant").click()
    _confirm_in_page(page)
    assert page.get_by_role("heading", name="Created 1 tenant").is_visible()
    shot(page, "tenant-import-done")

    # a form with errors shows them next to the fields
    page.goto("/vendor/onboarding/new/")
    page.fill("#id_name", "Acme again")
    page.fill("#id_external_id", "acme")
    page.get_by_role("button", name="Create tenant").click()
    assert page.locator("#id_external_id_errors").inner_text() == "Already in use."
    shot(page, "tenant-create-errors")

    # an API key is shown once, in the page that created it
    page.goto("/vendor/api-keys/")
    page.fill("#id_name", "billing-service")
    page.check("input[value=crypto]")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url("**/reauthenticate/**")  # creating an API key asks for the password again
    shot(page, "reauthenticate")
    _reauthenticate_if_asked(page)
    secret = page.locator("#new-secret").inner_text()
    assert len(secret) > 20
    shot(page, "api-key-created")
    page.goto("/vendor/api-keys/")
    assert secret not in page.content()

    # revoking it asks for the password again, then does what was asked
    page.get_by_role("button", name="Revoke…").click()
    _confirm_in_page(page, "api-key-revoke-confirm")
    page.wait_for_load_state("networkidle")
    _reauthenticate_if_asked(page)  # asked again unless the password was given just now
    assert page.get_by_text("Revoked billing-service").is_visible()

    # offboarding shows the grace period; shredding needs the external id typed
    page.goto("/vendor/tenants/acme/")
    page.get_by_role("button", name="Offboard Acme Corporation…").click()
    _confirm_in_page(page)
    page.wait_for_load_state("networkidle")
    _reauthenticate_if_asked(page)
    assert page.get_by_text("Offboarding.", exact=True).is_visible()
    assert page.get_by_role("button", name="Ask to shred early…").is_visible()  # two administrators
    Tenant.objects.filter(pk=acme.pk).update(shred_after=timezone.now())  # the grace period is over
    page.reload()
    shred = page.get_by_role("button", name="Shred the keys of acme")
    assert shred.is_disabled()
    page.fill("#id_confirm", "acme")
    assert shred.is_enabled()
    shot(page, "tenant-offboarding")
    shred.click()
    _confirm_in_page(page)
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("Crypto-shredded 1 vendor-provided key").is_visible()
    acme.refresh_from_db()
    assert acme.status == "offboarded"
    shot(page, "tenant-shredded")


def test_test_connection_answers_in_place_for_a_key_in_the_vendors_aws_kms(page, vendor_admin):
    from tests.conftest import require
    from tests.providers.servers import ServiceUnavailable, start_moto_server

    try:
        moto = start_moto_server()
    except ServiceUnavailable as exc:
        require(False, f"moto server: {exc}")
    try:
        make_tenant("acme", "Acme Corporation")
        settings_, secrets = moto.provider_settings(moto.create_key())
        _sign_in(page, vendor_admin)
        page.goto("/vendor/tenants/acme/keys/new/?provider=aws")
        for name, value in {**settings_, **secrets}.items():
            page.fill(f"#id_{name}", value)
        page.get_by_role("button", name="Test connection").click()
        result = page.locator("#test-result")
        expect(result).to_contain_text("Connected")
        assert result.get_attribute("aria-live") == "polite"
        shot(page, "key-test-connection")
        page.fill("#id_key_id", "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000")
        page.get_by_role("button", name="Test connection").click()
        expect(result).to_contain_text("Failed")
        shot(page, "key-test-connection-failed")
        assert not KmsConfig.objects.filter(provider="aws").exists()
    finally:
        moto.stop()
