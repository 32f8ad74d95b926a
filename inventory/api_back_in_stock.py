"""REST endpoints of back-in-stock subscriptions (customers): wait for a sold-out product, stop
waiting, list what you wait for. Parse, call one service or selector, shape the output.

Customers authenticate as for their orders (a session, or an API key): reading needs the `read`
scope, subscribing and cancelling the `write` scope. Each caller sees and changes only their own
subscriptions.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.back_in_stock import back_in_stock_subscribe, back_in_stock_unsubscribe, back_in_stock_waiting
from project.api.pagination import Cursor
from project.api.schema import errors, paginated
from users.permissions import ReadScope, WriteScope


class BackInStockPagination(Cursor):
    ordering = "-id"


class BackInStockSubscriptionSerializer(serializers.Serializer):
    sku = serializers.CharField(source="product.sku")
    name = serializers.CharField(source="product.name")
    created_at = serializers.DateTimeField(help_text="When you asked to be told.")


SKU = OpenApiParameter("sku", OpenApiTypes.STR, OpenApiParameter.PATH)


class ProductBackInStockView(APIView):
    permission_classes = [IsAuthenticated, WriteScope]

    @extend_schema(
        operation_id="v1_products_back_in_stock_create",
        parameters=[SKU],
        request=None,
        responses={
            200: BackInStockSubscriptionSerializer,
            201: BackInStockSubscriptionSerializer,
            **errors(401, 403, 404, 409, 429, 503),
        },
    )
    def post(self, request, sku: str):
        """Wait for a sold-out product: one email when it can be bought again (checked every 30
        seconds), then the subscription ends. 201 when new; 200 with the same subscription when you
        already wait for it. A product with units available now is 409 `in_stock`; an unknown or
        inactive SKU is 404."""
        subscription, created = back_in_stock_subscribe(user=request.user, sku=sku)
        return Response(
            BackInStockSubscriptionSerializer(subscription).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="v1_products_back_in_stock_destroy",
        parameters=[SKU],
        request=None,
        responses={204: OpenApiResponse(description="Not waiting (any more)."), **errors(401, 403, 404, 429, 503)},
    )
    def delete(self, request, sku: str):
        """Stop waiting for a product. 204 whether or not you were waiting; an unknown SKU is 404."""
        back_in_stock_unsubscribe(user=request.user, sku=sku)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BackInStockListView(APIView):
    permission_classes = [IsAuthenticated, ReadScope]

    @extend_schema(
        operation_id="v1_back_in_stock_list",
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated(BackInStockSubscriptionSerializer), **errors(401, 403, 404, 429, 503)},
    )
    def get(self, request):
        """The products you are waiting for, newest first (emailed ones are gone from the list)."""
        paginator = BackInStockPagination()
        page = paginator.paginate_queryset(back_in_stock_waiting(user=request.user), request, view=self)
        return paginator.get_paginated_response(BackInStockSubscriptionSerializer(page, many=True).data)
