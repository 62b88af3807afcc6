from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Cursor pagination on every list: stable under inserts, cheap on deep pages."""

    ordering = "-id"
    page_size_query_param = "limit"
    max_page_size = 200
