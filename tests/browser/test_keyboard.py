"""The kill switch by keyboard alone: from the key's page to "revoked", with Tab, typing and Enter.

Every stop on the way shows where the focus is (an outline or a ring), and the password page
that comes in between names what it confirms and has the focus in its field already.
"""

from __future__ import annotations

import time

import pytest

from keycore.models import KmsConfig
from tests.browser.conftest import shot, sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const ring = (style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0) || style.boxShadow !== "none";
  return {text: (el.innerText || el.value || el.getAttribute("aria-label") || el.name || "").trim(),
          tag: el.tagName.toLowerCase(), name: el.getAttribute("name") || "", visible: ring};
}"""


def _tab_to(page, wanted: str, *, limit: int = 80) -> dict:
    """Press Tab until the focused element's text (or name) is ``wanted``; every stop must show its focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        assert focused["visible"], f"no visible focus on {focused}"
        if wanted in (focused["text"], focused["name"]):
            return focused
    raise AssertionError(f"{wanted!r} cannot be reached with Tab")


def test_an_owner_revokes_a_key_with_the_keyboard_alone(page, busy_tenant, owner, settings):
    tenant = busy_tenant
    config = KmsConfig.objects.get(tenant=tenant, name="Acme production key")
    while time.time() % 30 > 25:  # a TOTP code must still be current when the form arrives
        time.sleep(0.5)
    sign_in(page, owner.email, PASSWORD, owner.totp_secret)
    page.goto(f"/tenant/{tenant.external_id}/keys/{config.uid}/")
    page.locator("body").focus()

    _tab_to(page, "Revoke…")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/keys/{config.uid}/revoke/")
    _tab_to(page, "confirm_name")
    page.keyboard.type(tenant.name)
    _tab_to(page, f"Revoke {config.name}")
    shot(page, "keyboard-revoke-ready")

    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 1  # the sign-in a moment ago no longer counts
    time.sleep(1.2)
    page.keyboard.press("Enter")
    page.wait_for_url("**/accounts/reauthenticate/**")
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 300
    assert page.get_by_text(f"You asked to revoke {config.name}").is_visible()
    assert page.evaluate(FOCUSED)["name"] == "password"  # no Tab needed: the field has the focus
    shot(page, "keyboard-revoke-password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")

    page.wait_for_url(f"**/keys/{config.uid}/")
    assert page.get_by_text("is revoked.").first.is_visible()
    config.refresh_from_db()
    assert config.state == "revoked"
    shot(page, "keyboard-revoke-done")
