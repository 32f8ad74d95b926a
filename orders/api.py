"""REST endpoints of orders: parse, call one service or selector, shape the output."""

import re
from collections.abc import Callable

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from orders import selectors, services
from orders.errors import IdempotencyKeyRequired
from orders.idempotency import claim_idempotency_key, settled_on_failure
from orders.serializers import (
    LineProgressSerializer,
    OrderQuerySerializer,
    OrderRequestSerializer,
    OrderReturnSerializer,
    OrderSerializer,
    ReturnCreateSerializer,
    ShipmentCreateSerializer,
    ShipmentSerializer,
    ShipmentShipSerializer,
    order_payload,
    order_request_data,
    return_payload,
    shipment_payload,
)
from project.api.idempotency import idempotency_key, request_fingerprint
from project.api.pagination import Cursor
from project.api.schema import errors, paginated
from project.errors import InvalidInput, NotFound
from project.http.conditional import etag, if_match_version
from users.permissions import IsStaff, ReadScope, WriteScope, acts_as_staff

# What an order number can look like (SR-XXXX-XXXX today): anything else is no order, and odd
# text (a NUL byte, which PostgreSQL refuses) never reaches the database.
ORDER_NUMBER = re.compile(r"[A-Za-z0-9-]{1,20}")

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True, description="Unique per order."
)
IF_MATCH = OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False)


class OrderPagination(Cursor):
    ordering = "-id"


def _idempotency_key(request) -> str:
    return idempotency_key(request, missing=IdempotencyKeyRequired)


def render_order(order, lines=None) -> dict:
    """The API's body of a new order (order_place's `render`)."""
    return order_payload(order, lines)


def _order_response(order, status_code=status.HTTP_200_OK) -> Response:
    response = Response(order_payload(order), status=status_code)
    response["ETag"] = etag(order.version)
    return response


class OrderListView(APIView):
    def get_permissions(self):
        return [IsAuthenticated(), ReadScope()] if self.request.method == "GET" else [IsAuthenticated(), WriteScope()]

    @extend_schema(
        operation_id="v1_orders_list",
        parameters=[OrderQuerySerializer, OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated(OrderSerializer), **errors(400, 401, 403, 404, 429, 503)},
    )
    def get(self, request):
        """Your orders (staff: everyone's, or one customer's with `?user=`)."""
        query = OrderQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        orders = selectors.order_list(
            user=request.user,
            as_staff=acts_as_staff(request),
            status=data.get("status"),
            updated_since=data.get("updated_since"),
            owner_email=data.get("user"),
        )
        paginator = OrderPagination()
        page = paginator.paginate_queryset(orders, request, view=self)
        return paginator.get_paginated_response([order_payload(order) for order in page])

    @extend_schema(
        parameters=[IDEMPOTENCY_HEADER],
        request=OrderRequestSerializer,
        responses={
            201: OrderSerializer,
            **errors(400, 401, 403, 409, 413, 415, 422, 429, 503),
        },
        description=(
            "Reserve stock for the lines (split across warehouses by priority) or nothing. The same key and body "
            "return the first response again with `Idempotent-Replayed: true`; the same key with another body is 422; "
            "the same key still in flight is 409 `request_in_flight`. Not enough stock is 409 `insufficient_stock` "
            "with `items: [{sku, requested, available}]`."
        ),
    )
    def post(self, request):
        key = _idempotency_key(request)
        data = order_request_data(request.data)
        result = services.order_place(
            user=request.user,
            lines=[services.OrderLineRequest(line["sku"], line["quantity"]) for line in data["lines"]],
            shipping_address=dict(data["shipping_address"]),
            reference=data["reference"],
            idempotency_key=key,
            fingerprint=request_fingerprint(request.method, request.path, request.data),
            render=render_order,
        )
        response = Response(result.body, status=result.status)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        if result.status == status.HTTP_201_CREATED:
            response["ETag"] = etag(result.body["version"])
            response["Location"] = f"/api/v1/orders/{result.body['number']}"
        return response


def _visible_order(request, number: str):
    if not ORDER_NUMBER.fullmatch(number):
        raise NotFound("No such order.")
    order = selectors.order_for(user=request.user, number=number, as_staff=acts_as_staff(request))
    if order is None:
        raise NotFound("No such order.")
    return order


class OrderDetailView(APIView):
    permission_classes = [IsAuthenticated, ReadScope]

    @extend_schema(
        responses={
            200: OrderSerializer,
            304: OpenApiResponse(description="Not modified"),
            **errors(401, 403, 404, 429, 503),
        }
    )
    def get(self, request, number: str):
        order = _visible_order(request, number)
        if request.headers.get("If-None-Match") == etag(order.version):
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
            response["ETag"] = etag(order.version)
            return response
        return _order_response(order)


TRANSITION_ERRORS = errors(401, 403, 404, 409, 412, 429, 503)


class _TransitionView(APIView):
    service = None

    def post(self, request, number: str):
        order = _visible_order(request, number)
        expected = if_match_version(request, required=False)
        kwargs = {"order_id": order.pk, "expected_version": expected}
        if self.service is not services.order_pay:
            kwargs["actor"] = request.user
        moved = type(self).service(**kwargs)
        return _order_response(
            selectors.order_for(user=request.user, number=moved.number, as_staff=acts_as_staff(request))
        )


class OrderPayView(_TransitionView):
    permission_classes = [IsAuthenticated, WriteScope]
    service = staticmethod(services.order_pay)

    @extend_schema(request=None, parameters=[IF_MATCH], responses={200: OrderSerializer, **TRANSITION_ERRORS})
    def post(self, request, number: str):
        """Pay (simulated) a reserved order before its `expires_at`; 409 `reservation_expired` after."""
        return super().post(request, number)


class OrderCancelView(_TransitionView):
    permission_classes = [IsAuthenticated, WriteScope]
    service = staticmethod(services.order_cancel)

    @extend_schema(request=None, parameters=[IF_MATCH], responses={200: OrderSerializer, **TRANSITION_ERRORS})
    def post(self, request, number: str):
        """Cancel a reserved or paid order; its stock is released."""
        return super().post(request, number)


class OrderFulfilView(_TransitionView):
    permission_classes = [IsStaff]
    service = staticmethod(services.order_fulfil)

    @extend_schema(request=None, parameters=[IF_MATCH], responses={200: OrderSerializer, **TRANSITION_ERRORS})
    def post(self, request, number: str):
        """Staff: ship everything left of a paid or partially fulfilled order: its pending shipments,
        then one shipment per warehouse for the rest (the units leave on_hand). It ends fulfilled."""
        return super().post(request, number)


class OrderReturnView(_TransitionView):
    permission_classes = [IsStaff]
    service = staticmethod(services.order_return)

    @extend_schema(request=None, parameters=[IF_MATCH], responses={200: OrderSerializer, **TRANSITION_ERRORS})
    def post(self, request, number: str):
        """Staff: take back everything shipped and not yet returned, restocked into the warehouses it
        shipped from (a return with its refund is recorded). It ends returned."""
        return super().post(request, number)


# --- shipments and returns by line ---------------------------------------------------------------
#
# Requests name an order's lines by SKU (one line per product in an order); the views turn each SKU
# into its line and call one service of orders.services.

# A shipment's or return's id as the path shows it: a bigint's worth of digits; anything else is
# no such row (and never reaches the database).
ROW_ID = re.compile(r"[0-9]{1,18}")

SHIPMENT_ID_PARAMETER = OpenApiParameter("shipment_id", OpenApiTypes.INT, OpenApiParameter.PATH)
RETURN_ID_PARAMETER = OpenApiParameter("return_id", OpenApiTypes.INT, OpenApiParameter.PATH)
PAGE_PARAMETERS = [OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)]
ORDER_IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="The order's ETag (GET /orders/{number}); stale is 412.",
)
SHIPMENT_IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="The shipment's ETag; stale is 412.",
)
CREATE_ERRORS = errors(400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 503)
SHIPMENT_MOVE_ERRORS = errors(400, 401, 403, 404, 409, 412, 413, 415, 429, 503)
READ_ERRORS = errors(401, 403, 404, 429, 503)


def _idempotency_header(description: str) -> OpenApiParameter:
    return OpenApiParameter(
        "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True, description=description
    )


class OldestFirst(Cursor):
    ordering = "id"


def _line_ids(order, lines: list[dict]) -> list[int]:
    """The order's line of each requested SKU; a SKU not on the order is 400 (field `lines`, by item)."""
    by_sku = {line.product.sku: line.pk for line in order.lines.all()}
    problems = [
        {} if line["sku"] in by_sku else {"sku": [f"{line['sku']!r} is not on order {order.number}."]} for line in lines
    ]
    if any(problems):
        raise InvalidInput(fields={"lines": problems})
    return [by_sku[line["sku"]] for line in lines]


def _created_once(
    request, key: str, service: Callable, render: Callable[[object], dict], **kwargs
) -> tuple[int, dict, bool]:
    """Run `service(**kwargs)` at most once per Idempotency-Key, as order placement does
    (orders.placement.orm): the key is claimed and the claim committed first; the service stores
    its 201 body (`render` of what it created) on the claim in its own transaction. A domain
    refusal (4xx) is stored for replays; anything else drops the claim, so the client's retry runs
    again. Returns (status, body, replayed)."""
    fingerprint = request_fingerprint(request.method, request.path, request.data)
    claim_id, stored = claim_idempotency_key(user=request.user, key=key, fingerprint=fingerprint)
    if stored is not None:
        return stored.response_status, stored.response_body, True
    rendered = {}

    def keep(created) -> dict:
        # The body stored on the key is the one answered now, read in the service's transaction.
        rendered["body"] = render(created)
        return rendered["body"]

    with settled_on_failure(claim_id):
        service(**kwargs, claim_id=claim_id, render=keep)
    return status.HTTP_201_CREATED, rendered["body"], False


def _created_response(result: tuple[int, dict, bool], collection: str) -> Response:
    code, body, replayed = result
    response = Response(body, status=code)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    if code == status.HTTP_201_CREATED:
        response["Location"] = f"{collection}/{body['id']}"
        if "version" in body:
            response["ETag"] = etag(body["version"])
    return response


def render_shipment(shipment) -> dict:
    """The API's body of a new shipment (shipment_create's `render`)."""
    return shipment_payload(selectors.order_shipments(order_id=shipment.order_id).get(pk=shipment.pk))


def render_return(record) -> dict:
    """The API's body of a new return (return_create's `render`)."""
    return return_payload(selectors.order_returns(order_id=record.order_id).get(pk=record.pk))


def _order_shipment(request, number: str, shipment_id: str):
    """The visible order and its shipment `shipment_id`; 404 for either."""
    order = _visible_order(request, number)
    shipment = None
    if ROW_ID.fullmatch(shipment_id):
        shipment = selectors.order_shipments(order_id=order.pk).filter(pk=int(shipment_id)).first()
    if shipment is None:
        raise NotFound("No such shipment.")
    return order, shipment


def _shipment_response(shipment) -> Response:
    response = Response(shipment_payload(shipment))
    response["ETag"] = etag(shipment.version)
    return response


class OrderShipmentListView(APIView):
    def get_permissions(self):
        return [IsAuthenticated(), ReadScope()] if self.request.method == "GET" else [IsStaff()]

    @extend_schema(
        operation_id="v1_orders_shipments_list",
        parameters=PAGE_PARAMETERS,
        responses={200: paginated(ShipmentSerializer), **READ_ERRORS},
    )
    def get(self, request, number: str):
        """The order's shipments, oldest first (its owner or staff)."""
        order = _visible_order(request, number)
        paginator = OldestFirst()
        page = paginator.paginate_queryset(selectors.order_shipments(order_id=order.pk), request, view=self)
        return paginator.get_paginated_response([shipment_payload(shipment) for shipment in page])

    @extend_schema(
        operation_id="v1_orders_shipments_create",
        parameters=[_idempotency_header("Unique per shipment."), ORDER_IF_MATCH],
        request=ShipmentCreateSerializer,
        responses={201: ShipmentSerializer, **CREATE_ERRORS},
    )
    def post(self, request, number: str):
        """Staff: a pending shipment of these lines (by SKU) from one warehouse, for a paid or partially
        fulfilled order. It promises the units (they count against what is left to ship) and
        consumes nothing until shipped. More than is left, or more than the line has reserved in
        that warehouse without `move_allocation`, is 409 `not_shippable`; a SKU not on the order is
        400. The same key and body return the first response again with `Idempotent-Replayed: true`;
        the same key with another body is 422."""
        key = _idempotency_key(request)
        order = _visible_order(request, number)
        expected = if_match_version(request, required=False)
        params = ShipmentCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        lines = [
            services.ShipmentLineRequest(line_id, line["quantity"])
            for line_id, line in zip(_line_ids(order, data["lines"]), data["lines"], strict=True)
        ]
        created = _created_once(
            request,
            key,
            services.shipment_create,
            render_shipment,
            order_id=order.pk,
            warehouse=data["warehouse"],
            lines=lines,
            carrier=data["carrier"],
            tracking_number=data["tracking_number"],
            move_allocation=data["move_allocation"],
            actor=request.user,
            expected_version=expected,
        )
        return _created_response(created, f"/api/v1/orders/{order.number}/shipments")


class OrderShipmentDetailView(APIView):
    permission_classes = [IsAuthenticated, ReadScope]

    @extend_schema(
        operation_id="v1_orders_shipments_retrieve",
        parameters=[SHIPMENT_ID_PARAMETER],
        responses={200: ShipmentSerializer, **READ_ERRORS},
    )
    def get(self, request, number: str, shipment_id: str):
        """One shipment of the order, with its ETag (its owner or staff)."""
        _, shipment = _order_shipment(request, number, shipment_id)
        return _shipment_response(shipment)


class OrderShipmentShipView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_orders_shipments_ship",
        parameters=[SHIPMENT_ID_PARAMETER, SHIPMENT_IF_MATCH],
        request=ShipmentShipSerializer,
        responses={200: ShipmentSerializer, **SHIPMENT_MOVE_ERRORS},
    )
    def post(self, request, number: str, shipment_id: str):
        """Staff: ship a pending shipment (its units leave on_hand and reserved at its warehouse); the
        order becomes partially fulfilled or fulfilled. A shipment no longer pending is 409
        `invalid_transition`."""
        order, shipment = _order_shipment(request, number, shipment_id)
        expected = if_match_version(request, required=False)
        params = ShipmentShipSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        services.shipment_ship(
            order_id=order.pk,
            shipment_id=shipment.pk,
            actor=request.user,
            expected_version=expected,
            **params.validated_data,
        )
        return _shipment_response(selectors.order_shipments(order_id=order.pk).get(pk=shipment.pk))


class OrderShipmentCancelView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_orders_shipments_cancel",
        parameters=[SHIPMENT_ID_PARAMETER, SHIPMENT_IF_MATCH],
        request=None,
        responses={200: ShipmentSerializer, **errors(401, 403, 404, 409, 412, 429, 503)},
    )
    def post(self, request, number: str, shipment_id: str):
        """Staff: cancel a pending shipment; the units it promised are left to ship again."""
        order, shipment = _order_shipment(request, number, shipment_id)
        expected = if_match_version(request, required=False)
        services.shipment_cancel(
            order_id=order.pk, shipment_id=shipment.pk, actor=request.user, expected_version=expected
        )
        return _shipment_response(selectors.order_shipments(order_id=order.pk).get(pk=shipment.pk))


class OrderReturnListView(APIView):
    def get_permissions(self):
        return [IsAuthenticated(), ReadScope()] if self.request.method == "GET" else [IsStaff()]

    @extend_schema(
        operation_id="v1_orders_returns_list",
        parameters=PAGE_PARAMETERS,
        responses={200: paginated(OrderReturnSerializer), **READ_ERRORS},
    )
    def get(self, request, number: str):
        """The order's returns, oldest first (its owner or staff)."""
        order = _visible_order(request, number)
        paginator = OldestFirst()
        page = paginator.paginate_queryset(selectors.order_returns(order_id=order.pk), request, view=self)
        return paginator.get_paginated_response([return_payload(record) for record in page])

    @extend_schema(
        operation_id="v1_orders_returns_create",
        parameters=[_idempotency_header("Unique per return."), ORDER_IF_MATCH],
        request=ReturnCreateSerializer,
        responses={201: OrderReturnSerializer, **CREATE_ERRORS},
    )
    def post(self, request, number: str):
        """Staff: record units that came back to a fulfilled or partially returned order: per line (by
        SKU; a SKU may appear more than once) a quantity, the warehouse that takes them in and
        whether they are restocked or written off as damaged. The refund (units at their line's
        price) is recorded; the order becomes partially returned or returned. More than was shipped
        and not yet returned is 409 `not_returnable`. Idempotency-Key as for shipments."""
        key = _idempotency_key(request)
        order = _visible_order(request, number)
        expected = if_match_version(request, required=False)
        params = ReturnCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        lines = [
            services.ReturnLineRequest(line_id, line["quantity"], line["warehouse"], line["disposition"])
            for line_id, line in zip(_line_ids(order, data["lines"]), data["lines"], strict=True)
        ]
        created = _created_once(
            request,
            key,
            services.return_create,
            render_return,
            order_id=order.pk,
            lines=lines,
            reason=data["reason"],
            actor=request.user,
            expected_version=expected,
        )
        return _created_response(created, f"/api/v1/orders/{order.number}/returns")


class OrderReturnDetailView(APIView):
    permission_classes = [IsAuthenticated, ReadScope]

    @extend_schema(
        operation_id="v1_orders_returns_retrieve",
        parameters=[RETURN_ID_PARAMETER],
        responses={200: OrderReturnSerializer, **READ_ERRORS},
    )
    def get(self, request, number: str, return_id: str):
        """One return of the order (its owner or staff)."""
        order = _visible_order(request, number)
        record = None
        if ROW_ID.fullmatch(return_id):
            record = selectors.order_returns(order_id=order.pk).filter(pk=int(return_id)).first()
        if record is None:
            raise NotFound("No such return.")
        return Response(return_payload(record))


class OrderShippingView(APIView):
    permission_classes = [IsAuthenticated, ReadScope]

    @extend_schema(
        operation_id="v1_orders_shipping_retrieve",
        responses={200: LineProgressSerializer(many=True), **READ_ERRORS},
    )
    def get(self, request, number: str):
        """What became of each line of the order (its owner or staff): ordered, shipped, promised to
        pending shipments, left to ship, returned, and the same per warehouse it is reserved in."""
        order = _visible_order(request, number)
        progress = selectors.shipping_progress(order_id=order.pk)
        return Response(LineProgressSerializer(progress.values(), many=True).data)
