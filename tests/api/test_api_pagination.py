"""The API's lists page through keycore.pagination: every row once, both ways, rows of the same time included,
and a cursor that is not this list's is a 400 problem."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone

from keycore.models import RekeyJob, Tenant
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenants(db):
    return [make_tenant(f"page-{i:02d}", f"Page {i:02d}") for i in range(7)]


def _path(url: str) -> str:
    return url.split("testserver", 1)[1]


def _walk(api, path: str) -> list[dict]:
    pages = []
    while path:
        pages.append(api.get(path).json)
        path = pages[-1]["next"] and _path(pages[-1]["next"])
    return pages


def test_the_tenants_list_walks_every_tenant_once_newest_first_and_back(api, tenants):
    pages = _walk(api, "/api/v1/tenants/?page_size=3")
    seen = [t["external_id"] for page in pages for t in page["results"]]
    assert seen == list(Tenant.objects.order_by("-id").values_list("external_id", flat=True))
    assert len(pages) == 3 and pages[0]["previous"] is None
    assert api.get(_path(pages[-1]["previous"])).json["results"] == pages[-2]["results"]


def test_rekey_jobs_started_in_the_same_instant_are_each_listed_once(api, tenants):
    for tenant in tenants:
        assert api.post(f"/api/v1/tenants/{tenant.external_id}/rekey-jobs/").status == 202
    RekeyJob.objects.update(created_at=timezone.now().replace(microsecond=0))
    pages = _walk(api, "/api/v1/rekey-jobs/?page_size=2")
    seen = [j["uid"] for page in pages for j in page["results"]]
    assert seen == [str(uid) for uid in RekeyJob.objects.order_by("-created_at", "-id").values_list("uid", flat=True)]
    assert len(seen) == len(tenants)


def test_a_cursor_that_is_not_this_lists_is_a_400_problem(api, tenants):
    cursor = parse_qs(urlparse(api.get("/api/v1/tenants/?page_size=2").json["next"]).query)["cursor"][0]
    assert api.get(f"/api/v1/tenants/?page_size=2&cursor={cursor}").status == 200
    for path in (
        f"/api/v1/audit/?cursor={cursor}",  # another list
        f"/api/v1/tenants/{tenants[0].external_id}/kms-configs/?cursor={cursor}",  # another list and order
        f"/api/v1/tenants/?cursor={cursor[:-2]}",  # truncated
        f"/api/v1/tenants/?cursor={cursor.swapcase()}",  # tampered
    ):
        answer = api.get(path)
        assert answer.status == 400 and answer.problem_type == "invalid-input", path
        assert answer.json["errors"] == {"cursor": ["Invalid cursor."]}
