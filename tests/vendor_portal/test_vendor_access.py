"""Who may reach every vendor-portal URL, generated from one table (NetBox-style).

Anonymous people are sent to sign in; tenant members are refused; auditors read but
every POST is refused; operators change tenants, keys and jobs but never reach staff
or API keys; administrators reach everything. One place decides: vendor_view(cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.urls import URLPattern, URLResolver, reverse

from keycore.models import KmsConfig, RekeyJob
from keycore.roles import Cap, VendorRole, vendor_can
from keycore.services import apikeys, keys, tenants, vendor_keys
from keycore.services.audit import Actor
from tests.vendor_portal.conftest import reauthenticate

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Route:
    name: str
    args: tuple[str, ...]  # names of World attributes
    method: str
    cap: str


ROUTES = [
    Route("dashboard", (), "get", Cap.READ),
    Route("tenants", (), "get", Cap.READ),
    Route("tenants_export", (), "get", Cap.READ),
    Route("tenant_create", (), "get", Cap.WRITE),
    Route("tenant_create", (), "post", Cap.WRITE),
    Route("tenant_import", (), "get", Cap.WRITE),
    Route("tenant_import", (), "post", Cap.WRITE),
    Route("tenant_import_confirm", (), "post", Cap.WRITE),
    Route("tenant", ("tenant",), "get", Cap.READ),
    Route("tenant_audit", ("tenant",), "get", Cap.READ),
    Route("tenant_status", ("tenant",), "post", Cap.WRITE),
    Route("tenant_shred", ("tenant",), "post", Cap.SHRED),
    Route("tenant_shred_request", ("tenant",), "post", Cap.SHRED),
    Route("tenant_shred_approve", ("tenant",), "post", Cap.SHRED),
    Route("invitation_create", ("tenant",), "post", Cap.WRITE),
    Route("invitation_resend", ("tenant", "invitation"), "post", Cap.WRITE),
    Route("invitation_revoke", ("tenant", "invitation"), "post", Cap.WRITE),
    Route("key_create", ("tenant",), "get", Cap.WRITE),
    Route("key_create", ("tenant",), "post", Cap.WRITE),
    Route("key_test", ("tenant",), "post", Cap.WRITE),
    Route("key_make_primary", ("tenant", "config"), "post", Cap.WRITE),
    Route("key_decrypt_only", ("tenant", "config"), "post", Cap.WRITE),
    Route("key_retire", ("tenant", "config"), "post", Cap.WRITE),
    Route("jobs", (), "get", Cap.READ),
    Route("job", ("job",), "get", Cap.READ),
    Route("job_progress", ("job",), "get", Cap.READ),
    Route("job_retry", ("job",), "post", Cap.WRITE),
    Route("job_cancel", ("job",), "post", Cap.WRITE),
    Route("staff", (), "get", Cap.MANAGE_STAFF),
    Route("staff_invite", (), "post", Cap.MANAGE_STAFF),
    Route("staff_role", ("staff",), "post", Cap.MANAGE_STAFF),
    Route("staff_deactivate", ("staff",), "post", Cap.MANAGE_STAFF),
    Route("staff_invitation_resend", ("staff_invitation",), "post", Cap.MANAGE_STAFF),
    Route("staff_invitation_revoke", ("staff_invitation",), "post", Cap.MANAGE_STAFF),
    Route("api_keys", (), "get", Cap.MANAGE_API_KEYS),
    Route("api_key_create", (), "post", Cap.MANAGE_API_KEYS),
    Route("api_key_rotate", ("api_key",), "post", Cap.MANAGE_API_KEYS),
    Route("api_key_revoke", ("api_key",), "post", Cap.MANAGE_API_KEYS),
    Route("audit", (), "get", Cap.READ),
    Route("vendor_keys", (), "get", Cap.READ),
    Route("vendor_key_create", (), "get", Cap.WRITE),
    Route("vendor_key_create", (), "post", Cap.WRITE),
    Route("vendor_key_test", (), "post", Cap.WRITE),
    Route("vendor_key_default", (), "post", Cap.WRITE),
    Route("vendor_key", ("vendor_key",), "get", Cap.READ),
    Route("vendor_key_check", ("vendor_key",), "post", Cap.WRITE),
    Route("vendor_key_assign", ("vendor_key",), "post", Cap.WRITE),
    Route("vendor_key_retire", ("vendor_key",), "post", Cap.WRITE),
]


@dataclass
class World:
    tenant: str
    config: str
    invitation: str
    job: str
    staff: str
    staff_invitation: str
    api_key: str
    vendor_key: str


@pytest.fixture
def world(tenant, vendor_operator) -> World:
    actor = Actor.system("tests")
    second = keys.kms_config_create(
        tenant=tenant, owner="vendor", data=keys.ConfigInput("local", "Second", {}, {}), actor=actor
    )
    job = keys.kms_config_make_primary(config=second, actor=actor)
    invitation, _ = tenants.invitation_create(tenant=tenant, email="new@acme.example", role="admin", actor=actor)
    staff_invitation, _ = tenants.invitation_create(email="new@vendor.example", role="operator", actor=actor)
    key, _ = apikeys.api_key_create(name="ci", scopes=["tenants:read"], actor=actor)
    return World(
        tenant=tenant.external_id,
        config=str(KmsConfig.objects.get(pk=second.pk).uid),
        invitation=str(invitation.uid),
        job=str(RekeyJob.objects.get(pk=job.pk).uid),
        staff=str(vendor_operator.vendor_staff.pk),
        staff_invitation=str(staff_invitation.uid),
        api_key=str(key.uid),
        vendor_key=str(
            vendor_keys.vendor_key_create(name="EU key", provider="local", settings_={}, secrets={}, actor=actor).uid
        ),
    )


def _url(route: Route, world: World) -> str:
    return reverse(f"vendor:{route.name}", args=[getattr(world, a) for a in route.args])


def _request(client, route: Route, world: World):
    return getattr(client, route.method)(_url(route, world))


def _walk(client, world, check) -> list[str]:
    """Request every route once; collect the ones whose response ``check`` rejects."""
    wrong = []
    for route in ROUTES:
        response = _request(client, route, world)
        problem = check(route, response)
        if problem:
            wrong.append(f"{route.method.upper()} {route.name}: {problem}")
    return wrong


def test_anonymous_people_are_sent_to_sign_in(client, world):
    def check(route, response):
        if response.status_code != 302 or not response["Location"].startswith(reverse("account_login")):
            return f"answered {response.status_code}"
        return None

    assert _walk(client, world, check) == []


def test_it_refuses_tenant_members(client, world, owner):
    client.force_login(owner)

    def check(route, response):
        if response.status_code != 403 or b"for the vendor" not in response.content:
            return f"answered {response.status_code}"
        return None

    assert _walk(client, world, check) == []


@pytest.mark.parametrize("who", ["vendor_auditor", "vendor_operator", "vendor_admin"])
def test_each_role_reaches_exactly_what_its_capabilities_allow(client, request, world, who):
    user = request.getfixturevalue(who)
    client.force_login(user)
    role = user.vendor_staff.role

    def check(route, response):
        if vendor_can(role, route.cap):
            if response.status_code == 403 or response.get("Location", "").startswith(reverse("account_login")):
                return f"refused ({response.status_code}) although {role} may {route.cap}"
        elif response.status_code != 403 or b"cannot do this" not in response.content:
            return f"answered {response.status_code} although {role} may not {route.cap}"
        return None

    assert _walk(client, world, check) == []


def test_the_table_says_what_the_roles_say():
    """Auditors read only; operators cannot manage staff or API keys; administrators can do everything."""
    assert vendor_can(VendorRole.AUDITOR, Cap.READ) and not vendor_can(VendorRole.AUDITOR, Cap.WRITE)
    assert vendor_can(VendorRole.OPERATOR, Cap.WRITE)
    assert not vendor_can(VendorRole.OPERATOR, Cap.MANAGE_STAFF)
    assert not vendor_can(VendorRole.OPERATOR, Cap.MANAGE_API_KEYS)
    assert all(
        vendor_can(VendorRole.ADMIN, c) for c in (Cap.READ, Cap.WRITE, Cap.MANAGE_STAFF, Cap.MANAGE_API_KEYS, Cap.SHRED)
    )
    assert not vendor_can(VendorRole.OPERATOR, Cap.SHRED), "crypto-shredding is for administrators only"
    assert all(r.method == "get" or r.cap != Cap.READ for r in ROUTES), "a POST that only needs READ"


def test_every_vendor_url_is_guarded_by_vendor_view():
    from vendor_portal import urls

    def patterns(items):
        for item in items:
            if isinstance(item, URLResolver):
                yield from patterns(item.url_patterns)
            elif isinstance(item, URLPattern):
                yield item

    unguarded = [p.name for p in patterns(urls.urlpatterns) if getattr(p.callback, "keycore_access", None) is None]
    assert unguarded == []
    covered = {r.name for r in ROUTES}
    # every page module of the portal (views, keys, jobs, staff); the security events pages have their own tests
    mine = {
        p.name
        for p in patterns(urls.urlpatterns)
        if p.callback.__module__.startswith("vendor_portal.") and p.callback.__module__ != "vendor_portal.events"
    }
    assert mine <= covered, f"add these to ROUTES: {sorted(mine - covered)}"


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("key_make_primary", "config"),
        ("key_decrypt_only", "config"),
        ("key_retire", "config"),
        ("invitation_resend", "invitation"),
        ("invitation_revoke", "invitation"),
    ],
)
def test_another_tenants_objects_are_not_found_under_this_tenant(as_admin, world, other_tenant, name, extra):
    """globex's objects addressed under acme's URL are a 404: lookups start from the tenant in the URL."""
    actor = Actor.system("tests")
    foreign = {
        "config": str(KmsConfig.objects.get(tenant=other_tenant).uid),
        "invitation": str(
            tenants.invitation_create(tenant=other_tenant, email="x@globex.example", role="admin", actor=actor)[0].uid
        ),
    }[extra]
    reauthenticate(as_admin)  # retire asks for the password first; the 404 comes after it
    response = as_admin.post(reverse(f"vendor:{name}", args=[world.tenant, foreign]))
    assert response.status_code == 404


@pytest.mark.parametrize("name", ["tenant", "tenant_audit", "key_create"])
def test_an_unknown_tenant_is_not_found(as_admin, world, name):
    assert as_admin.get(reverse(f"vendor:{name}", args=["no-such-tenant"])).status_code == 404


@pytest.mark.parametrize(
    ("who", "shown", "hidden"),
    [
        ("vendor_admin", ["vendor:staff", "vendor:api_keys"], []),
        ("vendor_operator", [], ["vendor:staff", "vendor:api_keys"]),
        ("vendor_auditor", [], ["vendor:staff", "vendor:api_keys", "vendor:tenant_create"]),
    ],
)
def test_the_sidebar_offers_only_what_the_role_can_do_on_every_vendor_page(client, request, who, shown, hidden):
    client.force_login(request.getfixturevalue(who))
    for page in ("vendor:dashboard", "vendor:event_chains"):  # the second is rendered by another module's view
        body = client.get(reverse(page)).content.decode()
        assert all(f'href="{reverse(name)}"' in body for name in shown), page
        assert not any(f'href="{reverse(name)}"' in body for name in hidden), page
        assert ("read only" in body) == (who == "vendor_auditor")
