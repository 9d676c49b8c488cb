"""Browser tests: Playwright driving Debian's Chromium against a live KeyCore server.

Screenshots of every failing test land in ``test-results/<test name>/``; a test
may also call ``shot(page, "name")`` to keep a picture of a page it built.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.conftest import require

# Playwright's sync API runs an event loop in the test thread; the ORM calls tests make are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("KEYCORE_CHROMIUM", "/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parent.parent.parent / "test-results"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def browser():
    require(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _folder(request) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::")[-1])[:120]
    path = RESULTS / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page(browser, request, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15000)
    page = context.new_page()
    page.results_dir = _folder(request)
    yield page
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        page.screenshot(path=str(page.results_dir / "failure.png"), full_page=True)
    context.close()


def shot(page, name: str) -> Path:
    path = page.results_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def sign_in(page, email: str, password: str, totp_secret: str | None = None) -> None:
    """Sign in through the real form (and the TOTP step when the account has one)."""
    from tests.factories import totp_code

    page.goto("/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    if totp_secret:
        page.wait_for_url("**/2fa/authenticate/**")
        page.fill("input[name=code]", totp_code(totp_secret))
        page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


@pytest.fixture
def busy_tenant(tenant, owner, moto):
    """Acme with its own AWS key (primary, moved), colleagues, an open invitation and 30 days of key use."""
    from keycore.models.keys import ConfigOwner
    from keycore.roles import TenantRole
    from keycore.services.audit import Actor
    from keycore.services.events import keyuse_append
    from keycore.services.jobs import job_run
    from keycore.services.keys import ConfigInput, kms_config_create, kms_config_make_primary
    from keycore.services.tenants import invitation_create
    from tests.factories import make_member

    actor = Actor.for_user(owner)
    settings, secrets = moto.provider_settings(moto.create_key())
    config = kms_config_create(
        tenant=tenant,
        owner=ConfigOwner.TENANT,
        data=ConfigInput(provider="aws", name="Acme production key", settings=settings, secrets=secrets),
        actor=actor,
    )
    job_run(kms_config_make_primary(config=config, actor=actor).pk)
    make_member(tenant, "it.admin@acme.example", TenantRole.ADMIN)
    make_member(tenant, "auditor@acme.example", TenantRole.AUDITOR)
    invitation_create(tenant=tenant, email="ciso@acme.example", role="owner", actor=actor, send=False)
    rng = random.Random(6)
    now = timezone.now().replace(second=0, microsecond=0)
    rows = []
    for day in range(30):
        minute = now - timedelta(days=day)
        for label, scale in (("invoices", 900), ("customer-pii", 400), ("payments", 250), ("", 60)):
            base = {"tenant_id": tenant.pk, "minute": minute, "label": label, "source_ip": "10.0.0.7"}
            for operation, share in (("encrypt", 1.0), ("decrypt", 2.5)):
                count = int(scale * share * rng.uniform(0.5, 1.2))
                rows.append(
                    {
                        **base,
                        "operation": operation,
                        "requesting_id": "billing",
                        "result": "ok",
                        "count": count,
                        "key_version": 1,
                    }
                )
        if day in (2, 3):
            rows.append(
                {
                    "tenant_id": tenant.pk,
                    "minute": minute,
                    "label": "invoices",
                    "source_ip": "10.0.0.9",
                    "operation": "decrypt",
                    "requesting_id": "legacy-export",
                    "result": "authentication-failed",
                    "count": 12,
                    "key_version": 1,
                }
            )
    keyuse_append(rows)
    return tenant
