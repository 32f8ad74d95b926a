"""REST endpoints of orders: parse, call one service or selector, shape the output."""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from orders import selectors, services
from orders.errors import IdempotencyKeyRequired
from orders.serializers import (
    OrderQuerySerializer,
    OrderRequestSerializer,
    OrderSerializer,
    order_payload,
    order_request_data,
    request_fingerprint,
)
from project.api.pagination import Cursor
from project.api.schema import errors, paginated
from project.errors import InvalidInput, NotFound
from project.http.conditional import etag, if_match_version
from users.permissions import IsStaff, ReadScope, WriteScope, acts_as_staff

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
# What an order number can look like (SR-XXXX-XXXX today): anything else is no order, and odd
# text (a NUL byte, which PostgreSQL refuses) never reaches the database.
ORDER_NUMBER = re.compile(r"[A-Za-z0-9-]{1,20}")

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True, description="Unique per order."
)
IF_MATCH = OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False)


class OrderPagination(Cursor):
    ordering = "-id"


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
        key = request.headers.get("Idempotency-Key")
        if key is None:
            raise IdempotencyKeyRequired()
        if not IDEMPOTENCY_KEY.match(key):
            raise InvalidInput(fields={"Idempotency-Key": ["1 to 255 printable ASCII characters, no spaces."]})
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
        """Staff: ship a paid order (its units leave on_hand)."""
        return super().post(request, number)


class OrderReturnView(_TransitionView):
    permission_classes = [IsStaff]
    service = staticmethod(services.order_return)

    @extend_schema(request=None, parameters=[IF_MATCH], responses={200: OrderSerializer, **TRANSITION_ERRORS})
    def post(self, request, number: str):
        """Staff: take a fulfilled order back; its units are restocked."""
        return super().post(request, number)
