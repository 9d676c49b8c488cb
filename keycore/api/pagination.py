from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Keyset pagination: constant time on page 1 and page 10,000 alike; no COUNT(*)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "-id"
