"""The API's face of ``keycore.pagination``: the portals' keyset pager, with DRF's query parameters and links.

Constant time on page 1 and page 10,000 alike; no COUNT(*). Follow ``next`` until
it is null; a cursor stays valid while rows are added, so a crawl of 100k tenants
never repeats or skips one. A list is ordered by its sort key, then by id, so rows
with the same time are never repeated or skipped either.
"""

from __future__ import annotations

from rest_framework import pagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from keycore import errors
from keycore.pagination import Page, Sort, keyset_page


class CursorPagination(pagination.CursorPagination):
    """Newest first (by id). DRF's class is the base for its query parameters and their schema only:
    the paging itself is ``keyset_page``, and its cursors are signed for this list and order."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    sort = Sort("-id", "id", True)

    def paginate_queryset(self, queryset, request, view=None) -> list:
        self.base_url = request.build_absolute_uri()
        self.page: Page = keyset_page(
            queryset,
            scope=f"api:{queryset.model._meta.label_lower}",
            sort=self.sort,
            cursor=request.query_params.get(self.cursor_query_param),
            size=self.get_page_size(request),
        )
        if self.page.cursor_rejected:
            # a bad query parameter is the caller's mistake (400), not a missing resource
            raise errors.InvalidInput(
                "The cursor is not valid: use the next or previous link of a page as given.",
                field_errors={self.cursor_query_param: ["Invalid cursor."]},
            )
        return self.page.rows

    def _link(self, cursor: str | None) -> str | None:
        return replace_query_param(self.base_url, self.cursor_query_param, cursor) if cursor else None

    def get_next_link(self) -> str | None:
        return self._link(self.page.next_cursor)

    def get_previous_link(self) -> str | None:
        return self._link(self.page.previous_cursor)

    def get_paginated_response(self, data) -> Response:
        return Response({"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_paginated_response_schema(self, schema):
        out = super().get_paginated_response_schema(schema)
        out["required"] = ["next", "previous", "results"]
        out["properties"]["next"]["example"] = "https://keys.example.com/api/v1/tenants/?cursor=cD0yMDI1"
        out["properties"]["previous"]["example"] = None
        return out


class OldestFirstPagination(CursorPagination):
    """For short lists that read best in the order things happened (a tenant's KMS configurations)."""

    sort = Sort("id", "id", False)


class NewestFirstByTime(CursorPagination):
    """Rekey jobs: their indexes are (state, -created_at) and (tenant, -created_at)."""

    sort = Sort("-created", "created_at", True)


class HistoryPagination(CursorPagination):
    """Key history: its index is (tenant, -at)."""

    sort = Sort("-at", "at", True)
