"""Who may open or post to each tenant-portal URL, generated from the URL list and each view's capability
(keycore.access.tenant_view records it), so a new page gets these cases without anyone writing them:
anonymous people sign in, vendor staff are refused, a role without the capability is refused, a role with
it gets the page. Each test walks every URL and reports all the URLs that break the rule at once."""

from __future__ import annotations

import pytest
from django.urls import reverse

from keycore.roles import TenantRole, tenant_can
from tests.tenant_portal.walk import path_for, sample_objects, tenant_routes

pytestmark = pytest.mark.django_db

ROUTES = tenant_routes()
#: what a refused POST carries, so that a form-level check could not hide a missing capability check
BODY = {"confirm_name": "Acme Corporation", "role": "owner", "email": "x@acme.example"}
#: "this address never takes that method": says nothing about who may do what
NOT_ALLOWED = 405


def statuses(client, path) -> dict[str, int]:
    return {method: getattr(client, method)(path, BODY).status_code for method in ("get", "post")}


def refused(got: dict[str, int], status: int) -> bool:
    """``status`` for every method the URL takes (and at least one), 405 for the others."""
    return set(got.values()) <= {status, NOT_ALLOWED} and status in got.values()


def test_anonymous_people_are_sent_to_sign_in_everywhere(client, tenant, owner):
    objects = sample_objects(tenant)
    wrong = []
    for route in ROUTES:
        path = path_for(route, tenant.external_id, objects)
        for method in ("get", "post"):
            response = getattr(client, method)(path)
            if response.status_code == NOT_ALLOWED:
                continue
            if response.status_code != 302 or not response["Location"].startswith(reverse("account_login")):
                wrong.append(f"{method.upper()} {path}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_vendor_staff_cannot_act_as_a_tenant_anywhere(client, tenant, owner, vendor_admin):
    objects = sample_objects(tenant)
    client.force_login(vendor_admin)
    wrong = []
    for route in ROUTES:
        path = path_for(route, tenant.external_id, objects)
        got = statuses(client, path)
        if not refused(got, 403):
            wrong.append(f"{path}: {got}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("role", list(TenantRole))
def test_each_role_gets_exactly_the_pages_its_capabilities_allow(client, role, tenant, owner, admin, member):
    objects = sample_objects(tenant)
    client.force_login({TenantRole.OWNER: owner, TenantRole.ADMIN: admin, TenantRole.AUDITOR: member}[role])
    wrong = []
    for route in ROUTES:
        path = path_for(route, tenant.external_id, objects)
        cap = route.access[1]
        if tenant_can(role, cap):
            # a page, a partial, or "this address takes POST only"; never a refusal or an error (POSTs that
            # change things are tested page by page)
            status = client.get(path).status_code
            if status not in (200, 302, NOT_ALLOWED):
                wrong.append(f"{role} may {cap}, yet GET {path}: {status}")
        else:
            got = statuses(client, path)
            if not refused(got, 403):
                wrong.append(f"{role} may not {cap}, yet {path}: {got}")
    assert not wrong, "\n".join(wrong)
