"""REST endpoints of purchase orders (staff): record what a supplier will deliver, receive it
delivery by delivery, cancel what will not come; edit and confirm (or cancel: discard) the drafts
the reorder job proposes (inventory.reorder). Parse, call one service or selector, shape the output."""

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory import reorder, selectors, services
from inventory.errors import DeliveryKeyRequired
from inventory.models import CODE_VALIDATOR, SKU_VALIDATOR, PurchaseOrder
from inventory.serializers import MAX_QUANTITY
from project.api.bounded_lists import BoundedListSerializer
from project.api.idempotency import idempotency_key
from project.api.pagination import Cursor
from project.api.schema import errors, paginated
from users.permissions import IsStaff

# A delivery's Idempotency-Key as the header may carry it: printable ASCII without spaces, as the
# orders' keys, and no longer than a receipt row stores.


class PurchaseOrderPagination(Cursor):
    ordering = "-id"


# --- requests ------------------------------------------------------------------------------------


class PurchaseOrderLinesSerializer(BoundedListSerializer):
    """Counted against the limit before any line is validated (project.api.bounded_lists)."""

    default_error_messages = {"too_long": "A purchase order or delivery has at most {max_length} lines."}


class PurchaseOrderLineRequestSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)

    class Meta:
        list_serializer_class = PurchaseOrderLinesSerializer


def _lines() -> PurchaseOrderLinesSerializer:
    return PurchaseOrderLineRequestSerializer(
        many=True, allow_empty=False, max_length=services.MAX_PURCHASE_ORDER_LINES
    )


class PurchaseOrderCreateSerializer(serializers.Serializer):
    warehouse = serializers.CharField(max_length=32, validators=[CODE_VALIDATOR])
    supplier_reference = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    expected_on = serializers.DateField(required=False, allow_null=True, default=None)
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    lines = _lines()


class PurchaseOrderReceiptSerializer(serializers.Serializer):
    lines = _lines()
    allow_over_receipt = serializers.BooleanField(
        required=False, default=False, help_text="Take more than a line still expects (else 400)."
    )


class DraftLineRequestSerializer(PurchaseOrderLineRequestSerializer):
    quantity = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY, help_text="0 removes the line.")


class PurchaseOrderDraftUpdateSerializer(serializers.Serializer):
    lines = DraftLineRequestSerializer(many=True, allow_empty=False, max_length=reorder.MAX_DRAFT_UPDATE_LINES)
    expected_version = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, default=None, help_text="Refuse (409) unless it is this version."
    )


class PurchaseOrderConfirmSerializer(serializers.Serializer):
    expected_version = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, default=None, help_text="Refuse (409) unless it is this version."
    )


class PurchaseOrderQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=PurchaseOrder.Status.choices, required=False)
    warehouse = serializers.CharField(max_length=32, required=False)


# --- responses -----------------------------------------------------------------------------------


class PurchaseOrderLineSerializer(serializers.Serializer):
    sku = serializers.CharField(source="product.sku")
    ordered = serializers.IntegerField()
    received = serializers.IntegerField()
    outstanding = serializers.IntegerField(help_text="Units still expected (0 once received in full).")


class PurchaseOrderSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reference = serializers.CharField(help_text="What its ledger rows reference: PO-<id>.")
    supplier_reference = serializers.CharField()
    warehouse = serializers.CharField(source="warehouse.code")
    expected_on = serializers.DateField(allow_null=True)
    status = serializers.ChoiceField(choices=PurchaseOrder.Status.choices)
    note = serializers.CharField()
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    lines = PurchaseOrderLineSerializer(many=True)


def _payload(purchase_order_id: int) -> dict:
    """The purchase order as it is now, read through the selector (after a write: fresh lines)."""
    return PurchaseOrderSerializer(selectors.purchase_order(purchase_order_id=purchase_order_id)).data


def _delivery_key(request) -> str:
    return idempotency_key(request, max_length=services.DELIVERY_KEY_MAX_LENGTH, missing=DeliveryKeyRequired)


def _pairs(lines: list[dict]) -> list[tuple[str, int]]:
    return [(line["sku"], line["quantity"]) for line in lines]


# --- views ---------------------------------------------------------------------------------------

PURCHASE_ORDER_ID = OpenApiParameter("purchase_order_id", OpenApiTypes.INT, OpenApiParameter.PATH)
DELIVERY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="Unique per delivery: the same key and lines again receive nothing more (200).",
)
READ_ERRORS = errors(401, 403, 404, 429, 503)


class PurchaseOrderListView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_purchase_orders_list",
        parameters=[PurchaseOrderQuerySerializer, OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated(PurchaseOrderSerializer), **errors(400, 401, 403, 404, 429, 503)},
    )
    def get(self, request):
        """Purchase orders, newest first; `?status=` (`draft` for the reorder job's proposals) and
        `?warehouse=` (a code) narrow the list."""
        query = PurchaseOrderQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        orders = selectors.purchase_orders(
            status=query.validated_data.get("status"), warehouse_code=query.validated_data.get("warehouse")
        )
        paginator = PurchaseOrderPagination()
        page = paginator.paginate_queryset(orders, request, view=self)
        return paginator.get_paginated_response(PurchaseOrderSerializer(page, many=True).data)

    @extend_schema(
        operation_id="v1_purchase_orders_create",
        request=PurchaseOrderCreateSerializer,
        responses={201: PurchaseOrderSerializer, **errors(400, 401, 403, 413, 415, 429, 503)},
    )
    def post(self, request):
        """Record stock a supplier is expected to deliver to one warehouse: an open purchase order, a
        line per SKU (each SKU once). Nothing moves on a level until a delivery is received."""
        params = PurchaseOrderCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        order = services.purchase_order_create(
            warehouse_code=data["warehouse"],
            lines=_pairs(data["lines"]),
            supplier_reference=data["supplier_reference"],
            expected_on=data["expected_on"],
            note=data["note"],
            actor=request.user,
        )
        url = request.build_absolute_uri(reverse("purchase-order-detail", args=[order.pk]))
        return Response(_payload(order.pk), status=status.HTTP_201_CREATED, headers={"Location": url})


class PurchaseOrderDetailView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_purchase_orders_retrieve",
        parameters=[PURCHASE_ORDER_ID],
        responses={200: PurchaseOrderSerializer, **READ_ERRORS},
    )
    def get(self, request, purchase_order_id: int):
        """One purchase order with its lines: ordered, received and still outstanding."""
        return Response(_payload(purchase_order_id))

    @extend_schema(
        operation_id="v1_purchase_orders_partial_update",
        parameters=[PURCHASE_ORDER_ID],
        request=PurchaseOrderDraftUpdateSerializer,
        responses={200: PurchaseOrderSerializer, **errors(400, 401, 403, 404, 409, 413, 415, 429, 503)},
    )
    def patch(self, request, purchase_order_id: int):
        """Set a draft's line quantities before confirming it: each line named sets that SKU's
        quantity (a SKU not on the draft is added), 0 removes it, lines not named stay. At least one
        line must be left (else 400: cancel the draft instead). Anything but a draft is 409
        `purchase_order_not_draft`; a stale `expected_version` is 409 `version_conflict`."""
        params = PurchaseOrderDraftUpdateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        order = reorder.purchase_order_draft_update(
            purchase_order_id=purchase_order_id,
            lines=_pairs(data["lines"]),
            expected_version=data["expected_version"],
            actor=request.user,
        )
        return Response(_payload(order.pk))


class PurchaseOrderReceiptView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_purchase_orders_receipts_create",
        parameters=[PURCHASE_ORDER_ID, DELIVERY_KEY_HEADER],
        request=PurchaseOrderReceiptSerializer,
        responses={
            200: PurchaseOrderSerializer,
            201: PurchaseOrderSerializer,
            **errors(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
        },
    )
    def post(self, request, purchase_order_id: int):
        """Receive one delivery: on_hand rises by each line's quantity in the order's warehouse (ledger
        `receipt`, reference PO-<id>); the order is `received` once every line has arrived. 201 when
        units were added. The same Idempotency-Key with the same lines adds nothing and answers 200
        with `Idempotent-Replayed: true`; with other lines it is 422 `idempotency_key_reused`. More
        than a line still expects is 400 unless `allow_over_receipt`; a SKU not on the order is 400;
        an order no longer open is 409 `purchase_order_closed`."""
        key = _delivery_key(request)
        params = PurchaseOrderReceiptSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        order, added = services.purchase_order_receive(
            purchase_order_id=purchase_order_id,
            key=key,
            lines=_pairs(data["lines"]),
            allow_over_receipt=data["allow_over_receipt"],
            actor=request.user,
        )
        response = Response(_payload(order.pk), status=status.HTTP_201_CREATED if added else status.HTTP_200_OK)
        if not added:
            response["Idempotent-Replayed"] = "true"
        return response


class PurchaseOrderCancelView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_purchase_orders_cancel",
        parameters=[PURCHASE_ORDER_ID],
        request=None,
        responses={200: PurchaseOrderSerializer, **errors(401, 403, 404, 409, 429, 503)},
    )
    def post(self, request, purchase_order_id: int):
        """Stop expecting what has not arrived: an open order becomes `cancelled` (what it received
        stays on hand), and a draft is discarded the same way; cancelling it again changes nothing.
        A received order is 409 `purchase_order_closed`."""
        order = services.purchase_order_cancel(purchase_order_id=purchase_order_id, actor=request.user)
        return Response(_payload(order.pk))


class PurchaseOrderConfirmView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_purchase_orders_confirm",
        parameters=[PURCHASE_ORDER_ID],
        request=PurchaseOrderConfirmSerializer,
        responses={200: PurchaseOrderSerializer, **errors(400, 401, 403, 404, 409, 413, 415, 429, 503)},
    )
    def post(self, request, purchase_order_id: int):
        """Order a draft (proposed by the reorder job) from its supplier: it becomes `open`, and its
        lines count as the levels' `incoming`. Anything but a draft is 409
        `purchase_order_not_draft` (confirming twice included); a stale `expected_version` is 409
        `version_conflict`."""
        params = PurchaseOrderConfirmSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        order = reorder.purchase_order_confirm(
            purchase_order_id=purchase_order_id,
            expected_version=params.validated_data["expected_version"],
            actor=request.user,
        )
        return Response(_payload(order.pk))
