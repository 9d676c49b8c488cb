"""keycore.pagination, the one keyset pager of both portals and the API: every row once, in order, both ways,
and a cursor that is not ours (tampered, truncated, another list's or another order's) is never followed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from keycore.models import Tenant
from keycore.pagination import Sort, keyset_page
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db

NEWEST = Sort("-created", "created_at", True)
OLDEST = Sort("created", "created_at", False)


@pytest.fixture
def tied(db):
    """Eleven tenants, eight of them created in the same microsecond (an import, a bulk create)."""
    for i in range(11):
        make_tenant(f"tied-{i:02d}", f"Tied {i:02d}")
    moment = timezone.now().replace(microsecond=0)
    Tenant.objects.filter(external_id__lt="tied-08").update(created_at=moment)
    for i, external_id in enumerate(("tied-08", "tied-09", "tied-10")):
        Tenant.objects.filter(external_id=external_id).update(created_at=moment + timedelta(seconds=i + 1))
    return list(Tenant.objects.order_by("-created_at", "-id").values_list("external_id", flat=True))


def _walk(sort: Sort, size: int) -> tuple[list[list[str]], object]:
    pages, cursor = [], None
    while True:
        page = keyset_page(Tenant.objects.all(), scope="test", sort=sort, cursor=cursor, size=size)
        pages.append([t.external_id for t in page.rows])
        if page.next_cursor is None:
            return pages, page
        cursor = page.next_cursor


@pytest.mark.parametrize("size", [1, 3, 4, 11, 50])
def test_rows_with_the_same_sort_value_are_neither_repeated_nor_skipped(tied, size):
    pages, _ = _walk(NEWEST, size)
    assert [t for page in pages for t in page] == tied
    pages, _ = _walk(OLDEST, size)
    assert [t for page in pages for t in page] == list(reversed(tied))


def test_previous_cursors_walk_back_to_the_first_page(tied):
    pages, page = _walk(NEWEST, 3)
    back = [pages[-1]]
    while page.previous_cursor:
        page = keyset_page(Tenant.objects.all(), scope="test", sort=NEWEST, cursor=page.previous_cursor, size=3)
        back.append([t.external_id for t in page.rows])
    assert list(reversed(back)) == pages


def test_a_cursor_is_followed_only_by_the_list_and_the_order_it_was_made_for(tied):
    cursor = keyset_page(Tenant.objects.all(), scope="test", sort=NEWEST, cursor=None, size=3).next_cursor
    assert not keyset_page(Tenant.objects.all(), scope="test", sort=NEWEST, cursor=cursor, size=3).cursor_rejected
    for scope, sort in (("other-list", NEWEST), ("test", OLDEST), ("test", Sort("-created", "id", True))):
        page = keyset_page(Tenant.objects.all(), scope=scope, sort=sort, cursor=cursor, size=3)
        assert page.cursor_rejected and page.previous_cursor is None
        assert [t.external_id for t in page.rows] == (tied if sort.descending else list(reversed(tied)))[:3]


@pytest.mark.parametrize("mangle", [lambda c: c[:-1], lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"), str.upper])
def test_a_tampered_cursor_shows_the_first_page(tied, mangle):
    cursor = keyset_page(Tenant.objects.all(), scope="test", sort=NEWEST, cursor=None, size=3).next_cursor
    page = keyset_page(Tenant.objects.all(), scope="test", sort=NEWEST, cursor=mangle(cursor), size=3)
    assert page.cursor_rejected and [t.external_id for t in page.rows] == tied[:3]


@pytest.mark.parametrize("garbage", ["garbage", "x:y:z", "eyJ2IjpbXSwiaSI6MSwiYiI6ZmFsc2V9::", "\x00", "%" * 300])
def test_garbage_is_not_a_cursor(tied, garbage):
    page = keyset_page(Tenant.objects.all(), scope="test", sort=NEWEST, cursor=garbage, size=3)
    assert page.cursor_rejected and [t.external_id for t in page.rows] == tied[:3]
