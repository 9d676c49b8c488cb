"""Security events in a real browser (Chromium): a tenant owner reads key use and admin events, adds a
webhook and sees its secret once, sends a test event, and verifies the chain while htmx follows the run;
a vendor auditor verifies a tenant's chain. Screenshots land in test-results/.

(It lives with the other browser tests, which share one Chromium per session.)"""

from __future__ import annotations

import re

import pytest

from keycore.models import ChainVerification
from keycore.services.events import chain_verification_run
from tests.browser.conftest import shot, sign_in
from tests.events.conftest import use_keys
from tests.events.receivers import WebhookReceiver
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def recorder():
    from keycore.services.keyuse import recorder

    recorder.reset()
    yield recorder
    recorder.reset()


@pytest.fixture
def receiver():
    server = WebhookReceiver(status=200)
    yield server
    server.close()


def test_a_tenant_owner_reads_forwards_and_verifies_security_events(page, owner, tenant, recorder, receiver):
    use_keys(tenant, encrypts=40, decrypts=25, label="invoices", who="billing-svc")
    use_keys(tenant, encrypts=7, decrypts=3, label="payroll", who="hr-svc")
    sign_in(page, owner.email, PASSWORD, owner.totp_secret)

    page.goto(f"/tenant/{tenant.external_id}/events/")
    assert page.get_by_role("heading", name="Security events").is_visible()
    table = page.locator("table.data")
    assert table.get_by_text("billing-svc").first.is_visible()
    assert page.get_by_text("encrypt · ok: 47").is_visible()
    shot(page, "events-key-use")

    page.fill("input[name=label]", "payroll")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("encrypt · ok: 7").is_visible()
    assert table.get_by_text("billing-svc").count() == 0

    page.get_by_role("link", name="Admin events").click()
    assert page.get_by_text("tenant.created").first.is_visible()
    shot(page, "events-admin")

    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    assert download.value.suggested_filename.startswith("keycore-events-acme-")

    page.get_by_role("link", name="Webhooks and syslog →").click()
    page.get_by_label("Webhook (HTTPS, HMAC-signed)").check()
    page.get_by_label("Webhook URL").fill(receiver.url)
    page.get_by_label("Name", exact=True).fill("Our SIEM")
    page.get_by_role("button", name="Add destination").click()
    secret = page.locator("code.secret-once").inner_text().strip()
    assert len(secret) >= 32
    shot(page, "events-secret-once")
    page.get_by_role("button", name=re.compile("I have stored it")).click()
    assert secret not in page.content()
    page.get_by_role("button", name="Send a test event").click()
    page.get_by_text("Test event accepted").wait_for()  # htmx swaps the result in
    assert receiver.requests and receiver.requests[-1].events[0]["kind"] == "test"
    shot(page, "events-destination")

    page.goto(f"/tenant/{tenant.external_id}/events/verify/")
    page.get_by_role("button", name="Verify now").click()
    page.get_by_role("heading", name="Verifying…").wait_for()
    chain_verification_run(ChainVerification.objects.get(tenant=tenant).pk)  # what the Celery task does
    page.get_by_role("heading", name="The chain is intact").wait_for(timeout=10000)  # htmx polls every 2 s
    shot(page, "events-chain-verified")


def test_a_vendor_auditor_verifies_a_tenants_chain(page, vendor_auditor, tenant):
    sign_in(page, vendor_auditor.email, PASSWORD, vendor_auditor.totp_secret)
    page.get_by_role("link", name="Event chains").click()
    page.fill("input[name=tenant]", tenant.external_id)
    page.get_by_role("button", name="Verify").click()
    chain_verification_run(ChainVerification.objects.get(tenant=tenant).pk)
    page.get_by_role("heading", name="The chain is intact").wait_for(timeout=10000)
    shot(page, "vendor-event-chains")
