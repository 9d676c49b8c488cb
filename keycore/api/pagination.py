from rest_framework import exceptions, pagination

from keycore import errors


class CursorPagination(pagination.CursorPagination):
    """Keyset pagination: constant time on page 1 and page 10,000 alike; no COUNT(*).

    Follow ``next`` until it is null. Items are newest first (by id); a cursor stays
    valid while rows are added, so a crawl of 100k tenants never repeats or skips one.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "-id"

    def get_paginated_response_schema(self, schema):
        out = super().get_paginated_response_schema(schema)
        out["required"] = ["next", "previous", "results"]
        out["properties"]["next"]["example"] = "https://keys.example.com/api/v1/tenants/?cursor=cD0yMDI1"
        out["properties"]["previous"]["example"] = None
        return out

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            # a bad query parameter is the caller's mistake (400), not a missing resource (DRF says 404)
            raise errors.InvalidInput(
                "The cursor is not valid: use the next or previous link of a page as given.",
                field_errors={self.cursor_query_param: ["Invalid cursor."]},
            ) from None


class OldestFirstPagination(CursorPagination):
    """For short lists that read best in the order things happened (a tenant's KMS configurations)."""

    ordering = "id"


class NewestFirstByTime(CursorPagination):
    """Rekey jobs: their indexes are (state, -created_at) and (tenant, -created_at)."""

    ordering = "-created_at"


class HistoryPagination(CursorPagination):
    """Key history: its index is (tenant, -at)."""

    ordering = "-at"
