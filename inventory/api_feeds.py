"""Read feeds for integrations (staff): the warehouses, and the stock ledger as a feed that an ERP
follows with `next` (inventory.feeds). Parse, call one selector, shape the output."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from inventory import feeds
from inventory.models import CODE_VALIDATOR, SKU_VALIDATOR, StockMovement, Warehouse
from project.api.pagination import Cursor
from project.api.schema import ErrorEnvelope, errors, paginated
from users.permissions import IsStaff

PAGE_SIZE = OpenApiParameter("page_size", int, description="Rows per page, up to 100 (default 25).")


class WarehousePagination(Cursor):
    ordering = "id"


class WarehouseQuerySerializer(serializers.Serializer):
    active = serializers.ChoiceField(
        choices=["true", "false"], required=False, help_text="Only active (true) or inactive (false) warehouses."
    )


class WarehouseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Warehouse
        fields = ["code", "name", "priority", "active", "created_at"]


class WarehouseListView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_warehouses_list",
        parameters=[WarehouseQuerySerializer, OpenApiParameter("cursor", str), PAGE_SIZE],
        responses={200: paginated(WarehouseSerializer), **errors(400, 401, 403, 404, 429, 503)},
    )
    def get(self, request):
        """Every warehouse, in the order they were created: code (the key every other endpoint
        takes), name, priority (orders draw from lower numbers first), active."""
        query = WarehouseQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        active = query.validated_data.get("active")
        found = feeds.warehouses(active=None if active is None else active == "true")
        paginator = WarehousePagination()
        page = paginator.paginate_queryset(found, request, view=self)
        return paginator.get_paginated_response(WarehouseSerializer(page, many=True).data)


class MovementQuerySerializer(serializers.Serializer):
    cursor = serializers.CharField(
        required=False, max_length=64, help_text="The `next` of the page before (opaque); none: from the start."
    )
    sku = serializers.CharField(required=False, max_length=64, validators=[SKU_VALIDATOR])
    warehouse = serializers.CharField(
        required=False, max_length=32, validators=[CODE_VALIDATOR], help_text="A warehouse code."
    )
    reason = serializers.ChoiceField(choices=StockMovement.Reason.choices, required=False)
    reference = serializers.CharField(
        required=False, max_length=64, help_text="An order number, shipment, purchase order (PO-12), import id..."
    )
    created_since = serializers.DateTimeField(
        required=False, help_text="Rows written at or after this time (ISO 8601, with a time zone)."
    )

    def validate_cursor(self, value: str):
        return feeds.decode_cursor(value)


class MovementSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sku = serializers.CharField()
    warehouse = serializers.CharField(help_text="The warehouse's code.")
    delta_on_hand = serializers.IntegerField()
    delta_reserved = serializers.IntegerField()
    delta_bucketed = serializers.IntegerField(help_text="Units into (+) or out of (-) the level's hot-mode buckets.")
    delta_backordered = serializers.IntegerField()
    reason = serializers.ChoiceField(choices=StockMovement.Reason.choices)
    reference = serializers.CharField(allow_blank=True)
    note = serializers.CharField(allow_blank=True)
    actor = serializers.EmailField(allow_null=True, help_text="Who changed the stock; null: the system.")
    created_at = serializers.DateTimeField()


class MovementPageSerializer(serializers.Serializer):
    results = MovementSerializer(many=True)
    next = serializers.URLField(help_text="Always present: the page after this one, now or once more rows commit.")
    previous = serializers.URLField(allow_null=True, help_text="Always null: the feed reads forward only.")


BAD_FEED_QUERY = OpenApiResponse(
    ErrorEnvelope,
    description="Invalid input (code `invalid`, field errors in `fields`), or a cursor this feed did not give out"
    " (code `invalid_cursor`).",
)


class MovementFeedView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_stock_movements_list",
        parameters=[MovementQuerySerializer, PAGE_SIZE],
        responses={200: MovementPageSerializer, 400: BAD_FEED_QUERY, **errors(401, 403, 429, 503)},
    )
    def get(self, request):
        """The stock ledger as a feed: every committed movement exactly once, in a stable order,
        even while stock changes are being written.

        Follow `next` from the first page on; it is always present. A page with fewer results
        than `page_size` means you have caught up with what is committed now: keep its `next` and
        ask it again later for the rows written since (nothing is ever inserted before it).
        `previous` is always null (a forward-only feed). Rows appear in commit order, roughly:
        a change appears once the transactions that began before it have ended, so the newest
        commits show up with a short delay. Filters narrow the feed; keep them on every page (the
        `next` links carry them). A cursor this feed did not give out is a 400."""
        query = MovementQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = dict(query.validated_data)
        after = params.pop("cursor", None)
        limit = Cursor().get_page_size(request)  # parsed as every list parses it
        rows, position = feeds.movements_page(after=after, limit=limit, **params)
        next_url = replace_query_param(request.build_absolute_uri(), "cursor", feeds.encode_cursor(position))
        body = {"results": MovementSerializer(rows, many=True).data, "next": next_url, "previous": None}
        return Response(body)
