"""Tenant isolation, walked over every tenant-portal URL pattern: another tenant's ids are a 404, always.

The walk iterates tenant_portal.urls.urlpatterns itself (tests/tenant_portal/walk.py), so a page added
later is covered without anyone remembering to add it here.
"""

from __future__ import annotations

import pytest

from keycore.models import Membership
from keycore.roles import TenantRole
from tests.factories import make_member
from tests.tenant_portal.conftest import reauthenticate
from tests.tenant_portal.walk import path_for, sample_objects, tenant_routes

pytestmark = pytest.mark.django_db

ROUTES = tenant_routes()


def test_the_walk_covers_every_tenant_page():
    names = {route.name for route in ROUTES}
    assert {"overview", "keys", "key", "key_revoke", "members", "member_role", "jobs", "job", "settings"} <= names
    for route in ROUTES:
        assert route.access is not None and route.access[0] == "tenant", f"tenant:{route} is not behind tenant_view"


def test_a_member_of_another_tenant_gets_404_for_every_url_of_this_one(client, tenant, owner, outsider):
    objects = sample_objects(tenant)
    client.force_login(outsider)
    reauthenticate(client)  # so that no "confirm your password" step stands in front of the answer
    wrong = []
    for route in ROUTES:
        path = path_for(route, tenant.external_id, objects)
        for method in ("get", "post"):
            status = getattr(client, method)(path, {"confirm_name": tenant.name}).status_code
            if status != 404:
                wrong.append(f"{method.upper()} {path}: {status}")
    assert not wrong, (
        "These answered a member of another tenant with something else than 404. Put @tenant_view outermost "
        "(above require_GET/require_POST and any other decorator), so the tenant is resolved before anything "
        "else answers:\n" + "\n".join(wrong)
    )


def test_this_tenants_objects_under_the_other_tenants_url_are_404(client, tenant, owner, other_tenant, outsider):
    """The outsider is a full owner of its own tenant, and names A's objects under its own URL."""
    objects = sample_objects(tenant)
    client.force_login(outsider)
    reauthenticate(client)
    wrong = []
    for route in [r for r in ROUTES if r.object_kwargs]:
        path = path_for(route, other_tenant.external_id, objects)
        body = {"confirm_name": other_tenant.name, "role": "auditor"}
        got = {m: getattr(client, m)(path, body).status_code for m in ("get", "post")}
        # 405 answers a method the page never takes, whatever the uid: it tells nothing about A's objects
        if not (set(got.values()) <= {404, 405} and 404 in got.values()):
            wrong.append(f"{path}: {got}")
    assert not wrong, "\n".join(wrong)
    # and nothing of A's changed
    from keycore.models import Invitation, KmsConfig, RekeyJob

    assert KmsConfig.objects.get(uid=objects["config"]).state == "active"
    assert Invitation.objects.get(uid=objects["invitation"]).state == "pending"
    assert RekeyJob.objects.get(uid=objects["job"]).state == "pending"
    assert Membership.objects.get(uid=objects["member"]).role == "owner"


def test_a_member_of_two_tenants_sees_each_only_under_its_own_entry(client, tenant, other_tenant, outsider):
    from keycore.models import KmsConfig

    make_member(tenant, "shared@example.com", TenantRole.AUDITOR)
    user = Membership.objects.get(user__email="shared@example.com").user
    Membership.objects.create(tenant=other_tenant, user=user, role=TenantRole.OWNER)
    client.force_login(user)
    switcher = client.get("/tenant/").content.decode()
    assert "/tenant/acme/" in switcher and "/tenant/globex/" in switcher
    acme_config = KmsConfig.objects.for_tenant(tenant).get(is_primary=True)
    globex_config = KmsConfig.objects.for_tenant(other_tenant).get(is_primary=True)
    acme = client.get("/tenant/acme/")
    globex = client.get("/tenant/globex/")
    assert acme.context["request"].membership.role == "auditor"
    assert globex.context["request"].membership.role == "owner"
    assert str(acme_config.uid) in acme.content.decode() and str(globex_config.uid) not in acme.content.decode()
    assert str(globex_config.uid) in globex.content.decode() and str(acme_config.uid) not in globex.content.decode()
    # each tenant's objects only under its own URL, though the user belongs to both
    assert client.get(f"/tenant/globex/keys/{acme_config.uid}/").status_code == 404
    assert client.get(f"/tenant/acme/keys/{globex_config.uid}/").status_code == 404
    # an auditor in Acme, an owner in Globex: Globex's rights do not reach Acme
    assert client.get("/tenant/acme/members/").status_code == 200
    assert client.get("/tenant/acme/settings/").status_code == 403
    assert client.get("/tenant/globex/settings/").status_code == 200
