"""Every page a vendor's staff or a tenant's administrator visits, checked by axe-core and measured on a phone.

For each page, at a desktop width (1,280 px) and a phone's (390 px): axe-core
(vendored under tests/browser/axe/, injected by the browser, never fetched) finds
no *serious* or *critical* violation, and the page does not scroll sideways —
also at 360 px, the narrowest phone we promise. A screenshot of each page at
each width is kept under test-results/ for people to look at.

Every problem of every page is collected before the test fails, so one run
lists them all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from keycore.models import RekeyJob
from keycore.models.keys import ConfigOwner
from keycore.roles import VendorRole
from keycore.services.apikeys import api_key_create
from keycore.services.audit import Actor
from keycore.services.keys import ConfigInput, kms_config_create
from keycore.services.tenants import invitation_create, tenant_set_status
from keycore.services.vendor_keys import vendor_key_create
from tests.browser.conftest import sign_in
from tests.factories import PASSWORD, make_staff, make_tenant

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).resolve().parent / "axe" / "axe.min.js"
DESKTOP, PHONE, NARROW = 1280, 390, 360
BLOCKING = {"moderate", "serious", "critical"}
RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 4).map(
      n => n.target.join(" ") + " — " + n.failureSummary.split("\\n").slice(0, 2).join(" ")),
  }));
}"""
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.querySelectorAll("body *")) {
    if (!el.checkVisibility()) continue;
    const box = el.getBoundingClientRect();
    if (box.width && box.right > width + 1 && getComputedStyle(el).position !== "fixed") {
      let scroller = el.parentElement, clipped = false;
      while (scroller && scroller !== document.body) {
        const o = getComputedStyle(scroller).overflowX;
        if (o === "auto" || o === "scroll" || o === "hidden" || o === "clip") { clipped = true; break; }
        scroller = scroller.parentElement;
      }
      if (!clipped) wide.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
        (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\\s+/).join(".") : "") +
        " (" + Math.round(box.right) + " px)");
    }
  }
  return {scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 5)};
}"""


class PageAudit:
    """Visits pages at each width and collects what is wrong with them."""

    def __init__(self, page):
        self.page = page
        self.problems: list[str] = []
        page.context.add_init_script(path=str(AXE))  # injected by the browser itself: the page's CSP does not apply

    def check(self, path: str, name: str, *, keys: str = "", status: int = 200) -> None:
        """``keys``: pressed once the page has loaded (e.g. "j" selects a row), before anything is checked."""
        page = self.page
        for width in (DESKTOP, PHONE, NARROW):
            page.set_viewport_size({"width": width, "height": 900})
            response = page.goto(path)
            page.wait_for_load_state("networkidle")
            if response.status != status:
                self.problems.append(f"{name} ({path}): HTTP {response.status}")
                return
            for key in keys:
                page.keyboard.press(key)
            overflow = page.evaluate(OVERFLOW)
            if overflow["scroll"] > overflow["width"]:
                self.problems.append(
                    f"{name} at {width} px scrolls sideways: {overflow['scroll']} px of content; {overflow['wide']}"
                )
            if width == DESKTOP:  # on a desktop every table fits: none hides columns behind a scrollbar
                clipped = page.evaluate(
                    "() => [...document.querySelectorAll('.table-scroll')]"
                    ".filter(b => b.scrollWidth > b.clientWidth + 1).map(b => b.scrollWidth + '/' + b.clientWidth)"
                )
                if clipped:
                    self.problems.append(f"{name} at {width} px has tables wider than their box: {clipped}")
            if width == NARROW:
                continue
            for violation in page.evaluate(RUN_AXE):
                if violation["impact"] in BLOCKING:
                    self.problems.append(f"{name} at {width} px: {json.dumps(violation, ensure_ascii=False)}")
            page.screenshot(path=str(page.results_dir / f"{name}-{width}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture(autouse=True)
def _as_the_demo_runs(settings):
    """DEBUG on, as `make run` serves KeyCore: its pages carry the demo banner, which must pass too."""
    settings.DEBUG = True


def _signed_in(page, user) -> None:
    # a TOTP code computed in the last seconds of its period can arrive in the next one
    while time.time() % 30 > 25:
        time.sleep(0.5)
    sign_in(page, user.email, PASSWORD, user.totp_secret)


def test_every_vendor_page_passes_axe_and_fits_a_phone(page, busy_tenant, vendor_admin):
    for i in range(8):
        make_tenant(f"tenant-{i:02d}", f"Northwind Logistics {i}")
    actor = Actor.for_user(vendor_admin)
    api_key_create(name="billing-service", scopes=["crypto"], actor=actor)
    make_staff("operator@vendor.example", VendorRole.OPERATOR)
    invitation_create(email="new.hire@vendor.example", role=VendorRole.AUDITOR, actor=actor, send=False)
    job = RekeyJob.objects.filter(tenant=busy_tenant).latest("created_at")
    eu = vendor_key_create(name="EU key", provider="local", settings_={}, secrets={}, actor=actor, make_default=True)
    make_tenant("eu-tenant", "Northwind Europe")
    _signed_in(page, vendor_admin)
    audit = PageAudit(page)
    for path, name, *keys in [
        ("/vendor/", "vendor-dashboard"),
        ("/vendor/tenants/", "vendor-tenants"),
        ("/vendor/tenants/", "vendor-tenants-row-selected", "jj"),
        ("/vendor/tenants/?q=zzz-nothing", "vendor-tenants-empty"),
        (f"/vendor/tenants/{busy_tenant.external_id}/", "vendor-tenant-detail"),
        (f"/vendor/tenants/{busy_tenant.external_id}/audit/", "vendor-tenant-audit"),
        (f"/vendor/tenants/{busy_tenant.external_id}/keys/new/?provider=aws", "vendor-key-create"),
        ("/vendor/onboarding/new/", "vendor-tenant-create"),
        ("/vendor/onboarding/import/", "vendor-tenant-import"),
        ("/vendor/jobs/", "vendor-jobs"),
        (f"/vendor/jobs/{job.uid}/", "vendor-job-detail"),
        ("/vendor/audit/", "vendor-audit"),
        ("/vendor/events/chains/", "vendor-event-chains"),
        ("/vendor/api-keys/", "vendor-api-keys"),
        ("/vendor/staff/", "vendor-staff"),
        ("/vendor/vendor-keys/", "vendor-vendor-keys"),
        ("/vendor/vendor-keys/new/?provider=aws", "vendor-vendor-key-create"),
        (f"/vendor/vendor-keys/{eu.uid}/", "vendor-vendor-key-detail"),
        ("/vendor/tenants/?q=northwind", "vendor-tenants-filtered-assign"),
    ]:
        audit.check(path, name, keys="".join(keys))
    audit.assert_clean()


def test_every_tenant_page_passes_axe_and_fits_a_phone(page, busy_tenant, owner, moto, settings):
    tenant = busy_tenant
    config = tenant.kms_configs.get(name="Acme production key")
    job = RekeyJob.objects.filter(tenant=tenant).latest("created_at")
    key_settings, secrets = moto.provider_settings(moto.create_key())
    spare = kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.TENANT,
        data=ConfigInput(provider="aws", name="Acme spare key", settings=key_settings, secrets=secrets),
        actor=Actor.for_user(owner),
    )
    settings.KEYCORE_DEMO_KMS = {**key_settings, **secrets}  # the AWS form as `make run` shows it
    oldest = tenant.tenant_keys.order_by("version").first().version
    tenant_set_status(tenant=tenant, transition="suspend", actor=Actor(label="operator:manage.py"))
    tenant_set_status(tenant=tenant, transition="reactivate", actor=Actor(label="operator:manage.py"))
    _signed_in(page, owner)
    audit = PageAudit(page)
    base = f"/tenant/{tenant.external_id}"
    for path, name, *keys in [
        (f"{base}/", "tenant-overview"),
        (f"{base}/keys/", "tenant-keys"),
        (f"{base}/keys/", "tenant-keys-row-selected", "j"),
        (f"{base}/keys/{config.uid}/", "tenant-key-detail"),
        (f"{base}/keys/new/", "tenant-key-new"),
        (f"{base}/keys/new/aws/", "tenant-key-form"),
        (f"{base}/keys/{config.uid}/revoke/", "tenant-key-revoke"),
        (f"{base}/keys/{spare.uid}/make-primary/", "tenant-key-make-primary"),
        (f"/accounts/reauthenticate/?next={base}/keys/{config.uid}/revoke/", "reauthenticate"),
        (f"{base}/members/", "tenant-members"),
        (f"{base}/events/", "tenant-events"),
        (f"{base}/events/?view=admin", "tenant-events-admin"),
        (f"{base}/events/destinations/", "tenant-destinations"),
        (f"{base}/settings/", "tenant-settings"),
        (f"{base}/jobs/", "tenant-jobs"),
        (f"{base}/jobs/{job.uid}/", "tenant-job-detail"),
        (f"{base}/keys/versions/", "tenant-key-versions"),
        (f"{base}/keys/versions/{oldest}/retire/", "tenant-key-version-retire"),
        (f"{base}/vendor-actions/", "tenant-vendor-actions"),
    ]:
        audit.check(path, name, keys="".join(keys))
    audit.assert_clean()


def test_the_pages_before_sign_in_pass_axe_and_fit_a_phone(page, tenant):
    _, token = invitation_create(
        tenant=tenant, email="new.owner@acme.example", role="owner", actor=Actor.system("tests"), send=False
    )
    audit = PageAudit(page)
    audit.check("/accounts/login/", "sign-in")
    audit.check("/no-such-page/", "not-found", status=404)
    audit.check(f"/invitations/{token}/", "invitation")
    audit.check("/accounts/signup/", "sign-up")  # the invitation above is in the session now
    audit.assert_clean()


def test_on_a_phone_the_sections_are_behind_a_menu(page, vendor_admin):
    _signed_in(page, vendor_admin)
    page.set_viewport_size({"width": PHONE, "height": 800})
    page.goto("/vendor/")
    menu, sidebar = page.locator(".mobile-nav .portal-nav"), page.locator(".sidebar .portal-nav")
    assert not menu.is_visible() and not sidebar.is_visible()  # closed, and no sidebar above the content
    page.get_by_text("Menu", exact=True).click()
    assert menu.is_visible()
    overflow = page.evaluate(OVERFLOW)
    assert overflow["scroll"] <= overflow["width"], overflow
    page.screenshot(path=str(page.results_dir / "menu-open-390.png"))
    page.get_by_role("navigation", name="Vendor portal sections").get_by_role("link", name="Audit trail").click()
    page.wait_for_url("**/vendor/audit/")
    assert not menu.is_visible()  # a new page: the menu is closed again

    page.set_viewport_size({"width": DESKTOP, "height": 800})
    assert sidebar.is_visible() and not page.get_by_text("Menu", exact=True).is_visible()
