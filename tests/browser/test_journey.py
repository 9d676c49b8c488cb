"""The whole story as people live it, through the UI only, in Chromium: the journey of docs/tour.md.

The vendor's administrator creates a tenant and invites its owner, and makes an API key for its
application; the application (keycore.client, over HTTP) encrypts 1,000 documents; the owner signs up
through the invitation, enrols TOTP, brings an AWS KMS key (moto), tests it, makes it primary and
watches a real Celery worker move the tenant keys; the application decrypts its 1,000 documents
unchanged; the owner switches to a KMIP key (the PyKMIP server), then revokes it — the application is
refused within two seconds, and the vendor's dashboard, tenants list, tenant page and API say the
tenant is revoked.

Every step is checked by axe-core (no serious or critical violation) and photographed at a desktop's
width (1,280 px) and a phone's (390 px): under test-results/, and under docs/tour/ when
``KEYCORE_TOUR_DIR`` names that folder (``make tour``).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from django.core import mail

from keycore.client import KeyCoreClient, KeyRevoked
from keycore.models import KmsConfig, RekeyJob, Tenant
from keycore.services.keyuse import recorder
from tests.browser.conftest import sign_in
from tests.browser.test_accessibility import AXE, BLOCKING, RUN_AXE
from tests.browser.test_tenant_byok import fresh_totp_code
from tests.conftest import require
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OWNER = "owner@acme.example"
DOCUMENTS = 1000
WIDTHS = (("desktop", 1280, 800), ("phone", 390, 844))
#: a screenshot's height at most (a tour shows the top of a page, where its point is)
MAX_HEIGHT = {"desktop": 1400, "phone": 1800}


@pytest.fixture(scope="module")
def kmip_server(tmp_path_factory):
    from tests.providers.servers import ServiceUnavailable, start_kmip_server

    try:
        server = start_kmip_server(tmp_path_factory.mktemp("kmip"))
    except ServiceUnavailable as exc:
        require(False, f"PyKMIP server: {exc}")
    yield server
    server.stop()


class Tour:
    """Photographs each step at each width and runs axe on it; collects every accessibility problem."""

    def __init__(self, results: Path):
        self.results = results
        folder = os.environ.get("KEYCORE_TOUR_DIR")
        self.out = Path(folder) if folder else None
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
        self.problems: list[str] = []
        self.steps: list[str] = []

    def step(self, page, name: str, *, mask=()) -> None:
        page.wait_for_load_state("networkidle")
        original = page.viewport_size
        for label, width, height in WIDTHS:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(150)  # the layout settles (the phone's menu folds away)
            for violation in page.evaluate(RUN_AXE):
                if violation["impact"] in BLOCKING:
                    self.problems.append(f"{name} at {width} px: {json.dumps(violation, ensure_ascii=False)}")
            full = page.evaluate("() => document.documentElement.scrollHeight")
            clip = {"x": 0, "y": 0, "width": width, "height": min(full, MAX_HEIGHT[label])}
            path = self.results / f"{name}-{label}.png"
            page.screenshot(
                path=str(path), full_page=True, clip=clip, mask=list(mask), mask_color="#d9dde3", animations="disabled"
            )
            if self.out:
                _shrink(path, self.out / path.name)
        page.set_viewport_size(original)
        self.steps.append(name)

    def assert_accessible(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def _shrink(source: Path, target: Path) -> None:
    """A palette PNG: screenshots of a UI need few colours, and the tour stays small in the repository."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, optimize=True
        )


def _context(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20000)
    context.add_init_script(path=str(AXE))  # injected by the browser itself: the page's CSP does not apply
    page = context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a browser dialog: {dialog.message}"))
    return page


def _bring_key(page, tour: Tour, prefix: str, *, provider_button: str, name: str, fields: dict[str, str]):
    """Owner: KMS keys → Bring your own key → the provider's form → Test connection → Test and save."""
    page.get_by_role("link", name="KMS keys").first.click()
    page.get_by_role("button", name="Bring your own key").click()
    page.get_by_role("button", name=provider_button).click()
    page.fill("input[name=config_name]", name)
    for field, value in fields.items():
        page.fill(f"[name={field}]", value)
    page.get_by_role("button", name="Test connection").click()
    page.get_by_text("Connection works.").wait_for()
    tour.step(page, f"{prefix}-test-connection")
    page.get_by_role("button", name="Test and save").click()
    page.wait_for_url(re.compile(r".*/keys/[0-9a-f-]{36}/$"))


def _make_primary(page, tour: Tour, prefix: str, name: str) -> None:
    page.get_by_role("button", name="Make primary…").click()
    page.get_by_role("heading", name=f"Make {name} primary").wait_for()
    page.get_by_role("button", name=f"Make {name} primary").click()
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}/$"))
    page.get_by_text(f"every tenant key version is wrapped under {name}").wait_for(timeout=90000)
    tour.step(page, f"{prefix}-job-finished")


def _decrypts_unchanged(client: KeyCoreClient, sealed, originals) -> None:
    opened = client.batch_decrypt([("acme", doc.edek, doc.fields) for doc in sealed])
    failures = [r for r in opened if isinstance(r, Exception)]
    assert not failures, failures[:3]
    assert [dict(r) for r in opened] == originals


def test_the_journey_of_the_tour(browser, live_server, celery_worker, moto, kmip_server, vendor_admin, settings):
    settings.DEBUG = True  # as `make run` serves KeyCore: the demo banner is on every page, and must pass too
    results = Path(__file__).resolve().parent.parent.parent / "test-results" / "journey"
    results.mkdir(parents=True, exist_ok=True)
    tour = Tour(results)

    # --- the vendor: dashboard, a new tenant with its owner invited, an API key for the application ------------
    vendor = _context(browser, live_server)
    while time.time() % 30 > 25:  # a TOTP code computed in the last seconds of its period can arrive in the next
        time.sleep(0.5)
    sign_in(vendor, vendor_admin.email, PASSWORD, vendor_admin.totp_secret)
    vendor.goto("/vendor/")
    tour.step(vendor, "01-vendor-dashboard")
    vendor.goto("/vendor/onboarding/new/")
    vendor.fill("input[name=name]", "Acme Corporation")
    vendor.fill("input[name=external_id]", "acme")
    vendor.fill("input[name=admins-0-email]", OWNER)
    tour.step(vendor, "02-vendor-new-tenant")
    vendor.get_by_role("button", name="Create tenant").click()
    vendor.wait_for_url("**/vendor/tenants/acme/")
    assert vendor.get_by_text("Created Acme Corporation").is_visible()
    tour.step(vendor, "03-vendor-tenant-created")
    invitation = next(m for m in mail.outbox if m.to == [OWNER])
    link = re.search(r"https?://[^/\s]+(/invitations/[^/\s]+/)", invitation.body).group(1)

    vendor.goto("/vendor/api-keys/")
    vendor.fill("input[name=name]", "billing-service")
    vendor.get_by_label("Encrypt, decrypt and rekey tenant data").check()
    vendor.get_by_label("Read tenants").check()
    vendor.get_by_role("button", name="Create key").click()
    vendor.wait_for_url("**/accounts/reauthenticate/**")  # creating an API key asks for the password again
    vendor.fill("input[name=password]", PASSWORD)
    vendor.get_by_role("button", name="Confirm").click()
    vendor.locator("#new-secret").wait_for()
    secret = vendor.locator("#new-secret")
    api_key = secret.inner_text().strip()
    tour.step(vendor, "04-vendor-api-key", mask=[secret])  # a dead key, but a tour shows no key

    # --- the application encrypts its documents (under the vendor-provided key, for now) ----------------------
    app = KeyCoreClient(live_server.url, api_key, requesting_id="billing-service")
    originals = [
        {"iban": f"DE89 3704 0044 0532 {i:04d} 00".encode(), "name": f"Customer {i}".encode()} for i in range(DOCUMENTS)
    ]
    sealed = app.batch_encrypt([("acme", doc) for doc in originals], label="invoices")
    assert not [r for r in sealed if isinstance(r, Exception)]
    recorder.flush()  # the live server runs in this process: its key-use counts are written now, not in a second

    # --- the owner: invitation, sign-up, TOTP ----------------------------------------------------------------
    owner = _context(browser, live_server)
    owner.goto(link)
    owner.get_by_role("heading", name="Join Acme Corporation").wait_for()
    tour.step(owner, "05-owner-invitation")
    owner.get_by_role("button", name="Create account").click()
    owner.fill("input[name=email]", OWNER)
    owner.fill("input[name=password1]", PASSWORD)
    owner.fill("input[name=password2]", PASSWORD)
    owner.click("main button[type=submit]")
    owner.wait_for_url("**/accounts/2fa/")
    owner.get_by_role("button", name="Set up an authenticator app").click()
    owner.wait_for_url("**/2fa/totp/activate/**")
    totp_secret = owner.input_value("#authenticator_secret")
    tour.step(
        owner, "06-owner-enrol-totp", mask=[owner.locator("#authenticator_secret"), owner.locator("main img, main svg")]
    )
    owner.fill("input[name=code]", fresh_totp_code(totp_secret))
    owner.click("main button[type=submit]")
    owner.wait_for_load_state("networkidle")
    owner.goto("/tenant/acme/")
    owner.get_by_text("Your data is protected by a vendor-provided key").wait_for()
    tour.step(owner, "07-owner-overview")

    # --- an AWS KMS key: tested, saved, made primary; a real worker moves the tenant keys ---------------------
    aws_arn = moto.create_key()
    _, aws_secrets = moto.provider_settings(aws_arn)
    _bring_key(
        owner,
        tour,
        "08-aws",
        provider_button="Use AWS KMS",
        name="Acme AWS key",
        fields={
            "key_id": aws_arn,
            "endpoint_url": moto.url,
            "access_key_id": aws_secrets["access_key_id"],
            "secret_access_key": aws_secrets["secret_access_key"],
        },
    )
    _make_primary(owner, tour, "09-aws", "Acme AWS key")
    aws = KmsConfig.objects.get(tenant__external_id="acme", name="Acme AWS key")
    assert RekeyJob.objects.get(target_config=aws).state == "succeeded"
    _decrypts_unchanged(app, sealed, originals)  # the application never noticed: same documents, new key

    # --- the owner switches to a KMIP key -------------------------------------------------------------------
    kmip_uid = kmip_server.create_key(name="acme-tour")
    kmip_settings, kmip_secrets = kmip_server.provider_settings(kmip_uid)
    _bring_key(
        owner,
        tour,
        "10-kmip",
        provider_button="Use KMIP key manager",
        name="Acme KMIP key",
        fields={
            "host": kmip_settings["host"],
            "port": str(kmip_settings["port"]),
            "key_uid": kmip_uid,
            "client_certificate": kmip_settings["client_certificate"],
            "client_key": kmip_secrets["client_key"],
            "ca_bundle": kmip_settings["ca_bundle"],
        },
    )
    _make_primary(owner, tour, "11-kmip", "Acme KMIP key")
    kmip = KmsConfig.objects.get(tenant__external_id="acme", name="Acme KMIP key")
    _decrypts_unchanged(app, sealed, originals)
    owner.goto("/tenant/acme/")
    owner.get_by_text("Your data is protected by your own key").wait_for()
    tour.step(owner, "12-owner-overview-own-key")

    # --- the owner revokes it: the application is refused within two seconds --------------------------------
    owner.goto(f"/tenant/acme/keys/{kmip.uid}/revoke/")
    owner.fill("input[name=confirm_name]", "Acme Corporation")
    tour.step(owner, "13-owner-revoke")
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 1  # the last password entry is minutes old, as it would be
    time.sleep(1.2)
    owner.get_by_role("button", name="Revoke Acme KMIP key").click()
    owner.wait_for_url("**/accounts/reauthenticate/**")
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 300
    owner.fill("input[name=password]", PASSWORD)
    owner.click("main button[type=submit]")
    owner.wait_for_url(f"**/keys/{kmip.uid}/")
    revoked_at = time.monotonic()
    refused = None
    while refused is None and time.monotonic() - revoked_at < 2.0:
        try:
            app.decrypt("acme", sealed[0].edek, sealed[0].fields)
        except KeyRevoked as exc:
            refused = exc
        else:
            time.sleep(0.05)
    assert refused is not None, "the application could still decrypt 2 seconds after the revocation"
    tour.step(owner, "14-owner-key-revoked")
    owner.goto("/tenant/acme/")
    assert owner.get_by_text("Your data cannot be read or written").is_visible()
    overview = owner.locator("#key-state").inner_text()
    assert "Healthy" not in overview and "Only your key" not in overview
    tour.step(owner, "15-owner-overview-revoked")

    # --- the vendor sees it: dashboard first, then the list, the tenant's page, the API ----------------------
    vendor.goto("/vendor/")
    dark = vendor.locator("a.card-link", has_text="dark: key revoked or disabled")
    assert dark.locator(".stat").inner_text() == "1"
    tour.step(vendor, "16-vendor-dashboard-revoked")
    dark.click()
    vendor.wait_for_url("**/vendor/tenants/?key_status=dark")
    row = vendor.locator("table.tenants tbody tr")
    assert row.count() == 1 and "Revoked by tenant" in row.inner_text()
    tour.step(vendor, "17-vendor-tenants-dark")
    row.get_by_role("link", name="Acme Corporation").click()
    vendor.wait_for_url("**/vendor/tenants/acme/")
    card = vendor.locator("#key-status").inner_text()
    assert "Revoked by tenant" in card and "Healthy" not in vendor.locator("main").inner_text()
    tour.step(vendor, "18-vendor-tenant-revoked")
    answer = app.tenant("acme")
    assert answer["key_status"] == "revoked" and answer["key_status_detail"].startswith("Revoked by the tenant")
    assert Tenant.objects.get(external_id="acme").key_status == "revoked"

    # the live server's threads hold a database connection per kept-alive HTTP connection: close them all
    app.close()
    vendor.context.close()
    owner.context.close()
    tour.assert_accessible()
