"""Keyset ("cursor") pagination: the one pager of both portals' long lists and of the REST API.

A page is the ``size`` rows that follow the last row seen in a total order of
(sort key, id). The cursor carries that row's sort key and id — signed, so it is
opaque to the browser and cannot be bent into another query. There is no COUNT(*)
and no OFFSET: page 1 and page 2,000 cost the same index range scan of
``size + 1`` rows.

A cursor is signed for one list (``scope``) and one sort: a cursor that is
tampered with, truncated, or taken from another list or sort is rejected, and
the caller decides what that means (the portals show the first page; the API
answers 400). ``keycore.api.pagination`` is the API's face of this module.

``after_filtering`` orders by an expression no index provides. A search that
matches a few thousand tenants then reads them through its own (trigram) index
and sorts them, instead of walking the whole name index in order and testing each
row, which is what a planner tends to do under a LIMIT when the matches cluster
in one part of the alphabet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core import signing
from django.core.exceptions import ValidationError
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils.dateparse import parse_datetime

#: kept from when this module was the vendor portal's, so that links in open pages stay valid
CURSOR_SALT = "keycore.vendor_portal.cursor"


@dataclass(frozen=True)
class Sort:
    """One way a list can be ordered: by ``field`` (then id), ascending or descending."""

    key: str
    field: str
    descending: bool
    label: str = ""


@dataclass(frozen=True)
class Page:
    rows: list
    next_cursor: str | None
    previous_cursor: str | None
    #: the cursor was unreadable (tampered with, or from another list); the first page is shown
    cursor_rejected: bool = False


def _encode(value: Any) -> Any:
    return {"t": value.isoformat()} if isinstance(value, datetime) else value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"}:
        parsed = parse_datetime(str(value["t"]))
        if parsed is None:
            raise ValueError("bad timestamp")
        return parsed
    if not isinstance(value, str | int | float):
        raise ValueError("bad sort value")
    return value


def make_cursor(scope: str, sort: Sort, row: Any, *, backwards: bool) -> str:
    return signing.dumps(
        {"v": _encode(getattr(row, sort.field)), "i": row.pk, "b": backwards}, salt=f"{CURSOR_SALT}:{scope}:{sort.key}"
    )


def read_cursor(scope: str, sort: Sort, cursor: str) -> tuple[Any, int, bool]:
    """(sort value, id, backwards) of a cursor; ValueError when it is not one of ours for this list."""
    try:
        data = signing.loads(cursor, salt=f"{CURSOR_SALT}:{scope}:{sort.key}")
        value, pk, backwards = _decode(data["v"]), int(data["i"]), bool(data["b"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise ValueError("unreadable cursor") from exc
    return value, pk, backwards


def _as_field_value(queryset: QuerySet, sort: Sort, value: Any) -> Any:
    """``value`` as the sort field holds it; ValueError when it cannot be one (a cursor of another order)."""
    try:
        return queryset.model._meta.get_field(sort.field).to_python(value)
    except (ValidationError, TypeError) as exc:
        raise ValueError("the cursor's value does not fit this order") from exc


def _after(sort: Sort, value: Any, pk: int, *, ascending: bool) -> Q:
    """Rows strictly after (value, pk) in the given direction, in a form an index range scan serves."""
    f = sort.field
    if ascending:
        return Q(**{f"{f}__gte": value}) & (Q(**{f"{f}__gt": value}) | Q(pk__gt=pk))
    return Q(**{f"{f}__lte": value}) & (Q(**{f"{f}__lt": value}) | Q(pk__lt=pk))


def _ordered(queryset: QuerySet, sort: Sort, *, ascending: bool, after_filtering: bool) -> QuerySet:
    key = Coalesce(F(sort.field), F(sort.field)) if after_filtering else F(sort.field)
    if ascending:
        return queryset.order_by(key.asc(), "pk")
    return queryset.order_by(key.desc(), "-pk")


def keyset_page(
    queryset: QuerySet,
    *,
    scope: str,
    sort: Sort,
    cursor: str | None,
    size: int,
    after_filtering: bool = False,
) -> Page:
    """One page of ``queryset`` in ``sort`` order, starting after (or, going back, before) ``cursor``."""
    rejected = False
    backwards = False
    if cursor:
        try:
            value, pk, backwards = read_cursor(scope, sort, cursor)
            value = _as_field_value(queryset, sort, value)
        except ValueError:
            rejected, cursor = True, None
    # walking backwards is walking forwards in the opposite order, then reversing the page
    ascending = (not sort.descending) != backwards
    query = queryset
    if cursor:
        query = query.filter(_after(sort, value, pk, ascending=ascending))
    rows = list(_ordered(query, sort, ascending=ascending, after_filtering=after_filtering)[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    next_cursor = previous_cursor = None
    if rows:
        # going forwards, "more" means a next page; going backwards, it means a previous one
        if backwards or more:
            next_cursor = make_cursor(scope, sort, rows[-1], backwards=False)
        if (backwards and more) or (not backwards and cursor):
            previous_cursor = make_cursor(scope, sort, rows[0], backwards=True)
    return Page(rows=rows, next_cursor=next_cursor, previous_cursor=previous_cursor, cursor_rejected=rejected)


def keyset_iterate(queryset: QuerySet, *, sort: Sort, chunk: int = 1000) -> Iterator[Any]:
    """Every row of ``queryset`` in ``sort`` order, fetched ``chunk`` rows at a time by keyset (for exports)."""
    ascending = not sort.descending
    last = None
    while True:
        query = queryset
        if last is not None:
            query = query.filter(_after(sort, getattr(last, sort.field), last.pk, ascending=ascending))
        rows = list(_ordered(query, sort, ascending=ascending, after_filtering=False)[:chunk])
        yield from rows
        if len(rows) < chunk:
            return
        last = rows[-1]
