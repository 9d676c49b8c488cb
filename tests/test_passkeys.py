"""Passkeys (WebAuthn) through the real allauth views and fido2 checks, answered by a software passkey
(tests/webauthn.py): enrolment, the second factor, passwordless sign-in and its throttle, re-authentication
for destructive actions, the MFA gate, the audit trail — and what a phishing site, a replayed answer or
someone else's passkey gets: nothing. The same flows run in Chromium in tests/browser/test_passkeys.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from allauth.mfa.models import Authenticator
from django.conf import settings
from django.urls import reverse

from keycore.middleware import CONTENT_SECURITY_POLICY
from keycore.models import AuditEvent
from keycore.roles import TenantRole
from tests.factories import PASSWORD, make_member
from tests.webauthn import SoftPasskey, options_in

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent

#: the policy as it was before passkeys: enabling them must not widen it by a single source
CSP_BEFORE_PASSKEYS = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


def last_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def new_events(since: int) -> Counter:
    return Counter(AuditEvent.objects.filter(id__gt=since).values_list("action", flat=True))


def reauthenticate(client) -> None:
    assert client.post(reverse("account_reauthenticate"), {"password": PASSWORD}).status_code == 302


def enrol(client, passkey: SoftPasskey, *, name: str = "YubiKey 5", passwordless: bool = False, **answer):
    """Add a passkey the way the page does: read its options, let the authenticator answer, post the answer."""
    page = client.get(reverse("mfa_add_webauthn"))
    assert page.status_code == 200, page.get("Location")
    credential = passkey.create(options_in(page.content)["creation_options"], resident=passwordless, **answer)
    data = {"name": name, "credential": json.dumps(credential)}
    if passwordless:
        data["passwordless"] = "on"
    return client.post(reverse("mfa_add_webauthn"), data)


def forget_confirmation(client) -> None:
    """As if the last sign-in and confirmation were long ago: a destructive action asks again."""
    session = client.session
    session.pop("account_authentication_methods", None)
    session.save()


def passkeys_of(user) -> list[Authenticator]:
    return list(Authenticator.objects.filter(user=user, type=Authenticator.Type.WEBAUTHN))


def sign_out(client) -> None:
    client.post(reverse("account_logout"))


def sign_in_with_password(client, user):
    return client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})


def passwordless_options(client) -> dict:
    response = client.get(reverse("mfa_login_webauthn"), HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()["request_options"]


@pytest.fixture
def enrolled(client, owner):
    """The owner (TOTP already) with a passkey that can also sign in alone; signed in and recently confirmed."""
    passkey = SoftPasskey()
    client.force_login(owner)
    reauthenticate(client)
    assert enrol(client, passkey, name="Work laptop", passwordless=True).status_code == 302
    return passkey


# --- configuration: what is on, what stays off ----------------------------------------------------------


def test_passkeys_are_on_and_emailed_codes_and_insecure_origins_stay_off():
    from allauth.account import app_settings as account_settings
    from allauth.mfa import app_settings as mfa_settings

    assert "webauthn" in mfa_settings.SUPPORTED_TYPES
    assert mfa_settings.PASSKEY_LOGIN_ENABLED
    assert not mfa_settings.PASSKEY_SIGNUP_ENABLED, "accounts come from invitations"
    assert not mfa_settings.WEBAUTHN_ALLOW_INSECURE_ORIGIN
    assert "code" not in account_settings.REAUTHENTICATION_METHODS
    assert not account_settings.LOGIN_BY_CODE_ENABLED
    assert mfa_settings.RATE_LIMITS["webauthn_login"] == "10/m/ip"  # the per-IP part of the sign-in limit


def test_passwordless_sign_in_can_be_turned_off(tmp_path):
    """KEYCORE_PASSKEY_LOGIN=0: passkeys stay a second factor; no passwordless URL, no "alone" choice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYCORE_", "DATABASE_URL"))}
    env.update(KEYCORE_TESTING="1", KEYCORE_PASSKEY_LOGIN="0", KEYCORE_VAR_DIR=str(tmp_path))
    code = (
        "import django; django.setup()\n"
        "from allauth.mfa import app_settings\n"
        "from django.urls import NoReverseMatch, reverse\n"
        "from keycore.accounts import AddPasskeyForm\n"
        "assert 'webauthn' in app_settings.SUPPORTED_TYPES and not app_settings.PASSKEY_LOGIN_ENABLED\n"
        "assert 'passwordless' not in AddPasskeyForm.base_fields\n"
        "try:\n    reverse('mfa_login_webauthn')\nexcept NoReverseMatch:\n    print('off')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "off", result.stderr


def test_the_content_security_policy_is_the_one_from_before_passkeys():
    assert CONTENT_SECURITY_POLICY == CSP_BEFORE_PASSKEYS


# --- the pages: the same CSP, and no inline script or handler ------------------------------------------


class _ScriptAudit(HTMLParser):
    """Every <script> and every attribute of a page, for the rules a strict CSP needs."""

    def __init__(self):
        super().__init__()
        self.scripts: list[dict] = []
        self.inline_handlers: list[str] = []
        self.javascript_urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.inline_handlers.append(f"<{tag} {name}>")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.javascript_urls.append(f"<{tag} {name}={value}>")


def _audit(html: str) -> _ScriptAudit:
    parser = _ScriptAudit()
    parser.feed(html)
    return parser


def _passkey_pages(client, owner, passkey: SoftPasskey) -> dict[str, object]:
    authenticator = passkeys_of(owner)[0]
    pages = {
        "two-factor settings": client.get(reverse("mfa_index")),
        "passkeys": client.get(reverse("mfa_list_webauthn")),
        "add a passkey": client.get(reverse("mfa_add_webauthn")),
        "rename a passkey": client.get(reverse("mfa_edit_webauthn", args=[authenticator.pk])),
        "remove a passkey": client.get(reverse("mfa_remove_webauthn", args=[authenticator.pk])),
        "confirm with a passkey": client.get(reverse("mfa_reauthenticate_webauthn")),
        "confirm with a password": client.get(reverse("account_reauthenticate")),
        "confirm with a code": client.get(reverse("mfa_reauthenticate")),
        "recovery codes": client.get(reverse("mfa_view_recovery_codes")),
    }
    sign_out(client)
    pages["sign in"] = client.get(reverse("account_login"))
    sign_in_with_password(client, owner)
    pages["second factor"] = client.get(reverse("mfa_authenticate"))
    return pages


def test_the_passkey_pages_keep_the_csp_and_run_only_our_own_script_files(client, owner, enrolled):
    pages = _passkey_pages(client, owner, enrolled)
    with_ceremony = {"add a passkey", "confirm with a passkey", "sign in", "second factor"}
    for name, response in pages.items():
        assert response.status_code == 200, (name, response.status_code, response.get("Location"))
        assert response["Content-Security-Policy"] == CSP_BEFORE_PASSKEYS, name
        audit = _audit(response.content.decode())
        assert not audit.inline_handlers, (name, audit.inline_handlers)
        assert not audit.javascript_urls, (name, audit.javascript_urls)
        sources = []
        for script in audit.scripts:
            if "src" in script:
                assert script["src"].startswith(
                    settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/static/"
                )
                sources.append(script["src"])
            else:
                # a JSON data block: browsers never execute it, so script-src does not apply to it
                assert script.get("type") == "application/json", (name, script)
        if name in with_ceremony:
            assert any(src.endswith("js/passkeys.js") for src in sources), name
            assert "data-passkey=" in response.content.decode(), name
        for src in sources:  # and the files are there, from our own origin
            assert client.get(src).status_code == 200, src


# --- enrolment --------------------------------------------------------------------------------------------


def test_adding_a_passkey_asks_who_you_are_first_and_is_audited_with_its_name(
    client, owner, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    assert client.get(reverse("mfa_add_webauthn"))["Location"].startswith(reverse("account_reauthenticate"))
    reauthenticate(client)
    start = last_id()
    with django_capture_on_commit_callbacks(execute=True):  # the recovery codes are announced on commit
        response = enrol(client, SoftPasskey(), name="YubiKey 5")
    assert response.status_code == 302 and response["Location"] == reverse("mfa_view_recovery_codes")
    [passkey] = passkeys_of(owner)
    assert passkey.wrap().name == "YubiKey 5" and passkey.wrap().is_passwordless is False
    assert new_events(start) == Counter({"mfa.added": 2})  # the passkey, and the recovery codes that come with it
    event = AuditEvent.objects.get(id__gt=start, changes__type=[None, "webauthn"])
    assert event.changes == {"type": [None, "webauthn"], "name": [None, "YubiKey 5"]}
    assert event.actor_user == owner and event.chain == "vendor"


@pytest.mark.parametrize(
    ("origin", "rp_id"),
    [
        ("https://keycore-login.example", None),  # a look-alike site relaying KeyCore's challenge
        ("https://testserver", "keycore-login.example"),  # a passkey scoped to another site
        ("http://testserver", None),  # no TLS
    ],
    ids=["other-origin", "other-rp-id", "plain-http"],
)
def test_a_passkey_made_for_another_site_is_not_added(client, owner, origin, rp_id):
    client.force_login(owner)
    reauthenticate(client)
    response = enrol(client, SoftPasskey(origin=origin, rp_id=rp_id))
    assert response.status_code == 200
    assert "Incorrect code" in response.content.decode()
    assert passkeys_of(owner) == []


def test_renaming_and_removing_a_passkey_are_audited(client, owner, enrolled):
    [passkey] = passkeys_of(owner)
    start = last_id()
    too_long = client.post(reverse("mfa_edit_webauthn", args=[passkey.pk]), {"name": "x" * 101})
    assert too_long.status_code == 200 and "at most 100 characters" in too_long.content.decode()
    assert client.post(reverse("mfa_edit_webauthn", args=[passkey.pk]), {"name": "Old laptop"}).status_code == 302
    assert AuditEvent.objects.get(id__gt=start, action="mfa.renamed").changes == {"name": ["Work laptop", "Old laptop"]}
    start = last_id()
    assert client.post(reverse("mfa_remove_webauthn", args=[passkey.pk])).status_code == 302
    assert passkeys_of(owner) == []
    removed = AuditEvent.objects.get(id__gt=start, action="mfa.removed")
    assert removed.changes == {"type": ["webauthn", None], "name": ["Old laptop", None]}


def test_nobody_renames_or_removes_someone_elses_passkey(client, owner, enrolled, tenant):
    [passkey] = passkeys_of(owner)
    colleague = make_member(tenant, "colleague@acme.example", TenantRole.ADMIN)
    client.force_login(colleague)
    reauthenticate(client)
    assert client.post(reverse("mfa_edit_webauthn", args=[passkey.pk]), {"name": "mine now"}).status_code == 404
    assert client.post(reverse("mfa_remove_webauthn", args=[passkey.pk])).status_code == 404
    assert passkeys_of(owner)[0].wrap().name == "Work laptop"


# --- the MFA gate ----------------------------------------------------------------------------------------------


def test_an_administrator_may_meet_the_mfa_requirement_with_a_passkey_alone(client, tenant):
    admin = make_member(tenant, "new.admin@acme.example", TenantRole.ADMIN, mfa=False)
    overview = reverse("tenant:overview", args=[tenant.external_id])
    client.force_login(admin)
    assert client.get(overview)["Location"] == reverse("mfa_index")
    reauthenticate(client)
    assert enrol(client, SoftPasskey()).status_code == 302
    assert {a.type for a in Authenticator.objects.filter(user=admin)} == {"webauthn", "recovery_codes"}
    assert client.get(overview).status_code == 200


# --- signing in ----------------------------------------------------------------------------------------------


def test_a_passkey_is_a_second_factor_after_the_password(client, owner, enrolled, tenant):
    sign_out(client)
    assert sign_in_with_password(client, owner)["Location"] == reverse("mfa_authenticate")
    page = client.get(reverse("mfa_authenticate"))
    answer = enrolled.get(options_in(page.content)["request_options"], user_verified=False)  # a touch is enough
    start = last_id()
    response = client.post(reverse("mfa_authenticate"), {"credential": json.dumps(answer)})
    assert response.status_code == 302
    assert client.get(reverse("tenant:overview", args=[tenant.external_id])).status_code == 200
    signed_in = AuditEvent.objects.get(id__gt=start, action="auth.signed_in")
    assert signed_in.changes == {"method": [None, "password+passkey"]}

    # the same answer again, in a new sign-in: its challenge is spent
    sign_out(client)
    sign_in_with_password(client, owner)
    client.get(reverse("mfa_authenticate"))
    start = last_id()
    response = client.post(reverse("mfa_authenticate"), {"credential": json.dumps(answer)})
    assert response.status_code == 200 and "Incorrect code" in response.content.decode()
    assert client.get(reverse("tenant:overview", args=[tenant.external_id])).status_code == 302
    assert new_events(start) == Counter({"mfa.passkey_rejected": 1})
    assert AuditEvent.objects.get(id__gt=start).actor_user == owner


def test_an_administrator_without_a_passkey_is_not_offered_one_at_the_second_step(client, owner):
    sign_in_with_password(client, owner)
    page = client.get(reverse("mfa_authenticate")).content.decode()
    assert 'name="code"' in page and "data-passkey=" not in page and "passkeys.js" not in page


def test_a_passkey_alone_signs_in_only_when_it_verified_its_user(client, owner, enrolled, tenant):
    overview = reverse("tenant:overview", args=[tenant.external_id])
    sign_out(client)
    untouched = enrolled.get(passwordless_options(client), user_verified=False)
    start = last_id()
    response = client.post(reverse("mfa_login_webauthn"), {"credential": json.dumps(untouched)})
    assert response["Location"] == reverse("account_login")
    assert client.get(overview).status_code == 302, "a passkey that did not check its user is not enough alone"
    failed = AuditEvent.objects.get(id__gt=start)
    assert (failed.action, failed.changes, failed.actor_user) == (
        "auth.sign_in_failed",
        {"method": [None, "passkey"]},
        None,
    )

    start = last_id()
    answer = enrolled.get(passwordless_options(client), user_verified=True)
    assert client.post(reverse("mfa_login_webauthn"), {"credential": json.dumps(answer)}).status_code == 302
    assert client.get(overview).status_code == 200
    assert AuditEvent.objects.get(id__gt=start, action="auth.signed_in").changes == {"method": [None, "passkey"]}


def test_passwordless_sign_in_is_throttled_per_ip(client, enrolled):
    sign_out(client)
    garbage = json.dumps({"type": "public-key", "id": "AAAA", "rawId": "AAAA", "response": {}})
    statuses = [
        client.post(reverse("mfa_login_webauthn"), {"credential": garbage}, REMOTE_ADDR="203.0.113.9").status_code
        for _ in range(11)
    ]
    assert statuses[:10] == [302] * 10 and statuses[10] == 429
    # another address is not locked out by this one
    assert (
        client.post(reverse("mfa_login_webauthn"), {"credential": garbage}, REMOTE_ADDR="203.0.113.10").status_code
        == 302
    )


# --- re-authentication for destructive actions ------------------------------------------------------------


def test_a_passkey_confirms_a_destructive_action_and_an_emailed_code_never_does(client, vendor_admin):
    from keycore.services.apikeys import api_key_create
    from keycore.services.audit import Actor

    passkey = SoftPasskey()
    client.force_login(vendor_admin)
    reauthenticate(client)
    enrol(client, passkey)
    forget_confirmation(client)

    key, _ = api_key_create(name="ci", scopes=["tenants:read"], actor=Actor.system("t"))
    revoke = reverse("vendor:api_key_revoke", args=[key.uid])
    response = client.post(revoke)
    assert response["Location"].startswith(reverse("account_reauthenticate"))
    password_page = client.get(response["Location"])
    alternatives = {alt["description"]: alt["url"] for alt in password_page.context["reauthentication_alternatives"]}
    assert set(alternatives) == {"Use a passkey", "Use an authenticator code or a recovery code"}  # no emailed code
    assert client.get(reverse("account_request_reauthentication_code")).status_code == 403

    page = client.get(alternatives["Use a passkey"])
    assert page.status_code == 200
    answer = passkey.get(options_in(page.content)["request_options"])
    start = last_id()
    response = client.post(alternatives["Use a passkey"], {"credential": json.dumps(answer)})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None, "the suspended revoke ran once the passkey confirmed it"
    assert AuditEvent.objects.get(id__gt=start, action="api_key.revoked").actor_user == vendor_admin


def test_someone_elses_passkey_does_not_confirm_my_action(client, vendor_admin, enrolled):
    """The owner's passkey (enrolled) answers the vendor admin's challenge: refused, and nothing is confirmed."""
    from keycore.services.apikeys import api_key_create
    from keycore.services.audit import Actor

    sign_out(client)
    client.force_login(vendor_admin)
    reauthenticate(client)
    enrol(client, SoftPasskey())
    forget_confirmation(client)
    key, _ = api_key_create(name="ci", scopes=["tenants:read"], actor=Actor.system("t"))

    page = client.get(reverse("mfa_reauthenticate_webauthn"))
    options = options_in(page.content)["request_options"]
    options["publicKey"]["allowCredentials"] = []  # the other authenticator ignores which passkeys the server asked for
    client.post(reverse("mfa_reauthenticate_webauthn"), {"credential": json.dumps(enrolled.get(options))})
    response = client.post(reverse("vendor:api_key_revoke", args=[key.uid]))
    assert response["Location"].startswith(reverse("account_reauthenticate"))
    key.refresh_from_db()
    assert key.revoked_at is None
    assert AuditEvent.objects.filter(action="mfa.passkey_rejected", actor_user=vendor_admin).count() == 1
