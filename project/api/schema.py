"""OpenAPI helpers: every status an endpoint can return is declared, with the error envelope."""

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorEnvelope = inline_serializer(
    name="ErrorEnvelope",
    fields={
        "error": inline_serializer(
            name="ErrorBody",
            fields={
                "code": serializers.CharField(),
                "detail": serializers.CharField(),
                "fields": serializers.DictField(),
            },
        )
    },
)

ERROR_DESCRIPTIONS = {
    400: "Invalid input (code `invalid`, field errors in `fields`).",
    401: "Not authenticated, or the API key is invalid, expired or revoked.",
    403: "Authenticated but not allowed (role or key scope).",
    404: "Not found (on a list: the `cursor` is not one this list gave out).",
    409: "Domain conflict (see the code).",
    412: "If-Match does not match the current version.",
    413: "Request body too large.",
    415: "Unsupported media type.",
    422: "Idempotency key reused with another request body.",
    428: "If-Match required.",
    429: "Rate limited; see Retry-After.",
    503: "Lock timeout or an unavailable dependency; see Retry-After.",
}


def errors(*statuses: int) -> dict:
    return {code: OpenApiResponse(ErrorEnvelope, description=ERROR_DESCRIPTIONS[code]) for code in statuses}


def paginated(serializer_class, *, name: str | None = None):
    """The cursor-paginated page of a list built by hand in an APIView (what project.api.pagination.Cursor
    returns): `{"results": [...], "next": url|null, "previous": url|null}`."""
    base = serializer_class.__name__.removesuffix("Serializer")
    return inline_serializer(
        name=name or f"Paginated{base}List",
        fields={
            "results": serializer_class(many=True),
            "next": serializers.URLField(allow_null=True, help_text="The next page, or null on the last."),
            "previous": serializers.URLField(allow_null=True, help_text="The previous page, or null on the first."),
        },
    )


OPERATION_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
URI_TOO_LONG = "The URL is longer than the server accepts: answered by gunicorn (limit_request_line), as plain text."


def declare_uri_too_long(result, generator, request, public):
    """A postprocessing hook (SPECTACULAR_SETTINGS): gunicorn answers 414 itself for a request line
    over its limit, before Django sees the request, so any operation can return it; the schema
    says so once here rather than in every view."""
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            if method in OPERATION_METHODS:
                operation.setdefault("responses", {}).setdefault("414", {"description": URI_TOO_LONG})
    return result
