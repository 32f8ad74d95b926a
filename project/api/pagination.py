from rest_framework.pagination import CursorPagination


class Cursor(CursorPagination):
    """`?cursor=` and `?page_size=` (up to 100); returns results, next, previous."""

    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-id"

    def get_paginated_response_schema(self, schema):
        schema = super().get_paginated_response_schema(schema)
        schema["required"] = ["results", "next", "previous"]
        return schema
