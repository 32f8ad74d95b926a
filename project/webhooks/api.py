"""The staff REST API of webhooks: endpoints, their delivery log, sending a delivery again, and
the event types. Staff only (the wiring's staff rule, settings.WEBHOOKS_STAFF_PERMISSION: a staff
key without the `staff` scope is refused). Thin views: parse, call one service or selector, shape
the output.
"""

from django.conf import settings
from django.utils.module_loading import import_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from project.api.pagination import Cursor
from project.api.schema import errors, paginated
from project.errors import NotFound, PreconditionFailed, VersionConflict
from project.http.conditional import etag, if_match_version
from project.webhooks import endpoints, services
from project.webhooks.events import event_types
from project.webhooks.serializers import (
    WebhookDeliveryQuerySerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookEndpointWithSecretSerializer,
    WebhookEventTypeSerializer,
)

TAGS = ["webhooks"]
IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description='The endpoint\'s ETag from GET, e.g. "3".',
)
OPTIONAL_IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="The endpoint's ETag; stale is 412.",
)
PAGE = [OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)]
# Ids are bigint: a larger number in the path names no row (and must not reach PostgreSQL).
MAX_ID = 2**63 - 1


class StaffOnly(BasePermission):
    """Staff only, as the wiring defines staff: settings.WEBHOOKS_STAFF_PERMISSION, the dotted path
    of a DRF permission class (users.permissions.IsStaff: a staff user, and with an API key, a key
    holding the staff scope). The platform names no app."""

    @staticmethod
    def _rule() -> BasePermission:
        return import_string(settings.WEBHOOKS_STAFF_PERMISSION)()

    def has_permission(self, request, view) -> bool:
        rule = self._rule()
        self.message = getattr(rule, "message", None)
        return rule.has_permission(request, view)


def _row_id(value: int, what: str) -> int:
    if value > MAX_ID:
        raise NotFound(f"No webhook {what} {value}.")
    return value


class DeliveryLogPagination(Cursor):
    ordering = "-id"


class EndpointPagination(Cursor):
    ordering = "id"


def _endpoint_response(endpoint, *, status_code: int = status.HTTP_200_OK) -> Response:
    response = Response(WebhookEndpointWithSecretSerializer(endpoint).data, status=status_code)
    response["ETag"] = etag(endpoint.version)
    return response


def _as_precondition(conflict: VersionConflict) -> PreconditionFailed:
    """A stale If-Match is 412, as on PATCH /products: the service's conflict carries the version."""
    return PreconditionFailed(extra=conflict.extra)


class EndpointListView(APIView):
    permission_classes = [StaffOnly]

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_endpoints_list",
        parameters=PAGE,
        responses={
            200: paginated(WebhookEndpointSerializer, name="PaginatedWebhookEndpointList"),
            **errors(400, 401, 403, 404, 429, 503),
        },
    )
    def get(self, request):
        """Webhook endpoints, oldest first. Secrets are not listed: GET one endpoint to see its secret."""
        paginator = EndpointPagination()
        page = paginator.paginate_queryset(endpoints.endpoint_list(), request, view=self)
        return paginator.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_endpoints_create",
        request=WebhookEndpointCreateSerializer,
        responses={201: WebhookEndpointWithSecretSerializer, **errors(400, 401, 403, 413, 415, 429, 503)},
    )
    def post(self, request):
        """Register an endpoint. The answer holds its new signing `secret` (GET of the endpoint shows it again)."""
        params = WebhookEndpointCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        endpoint = endpoints.endpoint_create(**params.validated_data, actor=request.user)
        return _endpoint_response(endpoint, status_code=status.HTTP_201_CREATED)


ENDPOINT_ID = OpenApiParameter("endpoint_id", OpenApiTypes.INT, OpenApiParameter.PATH)


class EndpointDetailView(APIView):
    permission_classes = [StaffOnly]

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_endpoints_retrieve",
        parameters=[ENDPOINT_ID],
        responses={200: WebhookEndpointWithSecretSerializer, **errors(401, 403, 404, 429, 503)},
    )
    def get(self, request, endpoint_id: int):
        """One endpoint with its signing secret, and its version as ETag."""
        return _endpoint_response(endpoints.endpoint_get(endpoint_id=_row_id(endpoint_id, "endpoint")))

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_endpoints_partial_update",
        parameters=[ENDPOINT_ID, IF_MATCH],
        request=WebhookEndpointUpdateSerializer,
        responses={
            200: WebhookEndpointWithSecretSerializer,
            **errors(400, 401, 403, 404, 412, 413, 415, 428, 429, 503),
        },
    )
    def patch(self, request, endpoint_id: int):
        """Change an endpoint. `If-Match` is required (428 without it, 412 when stale).

        `active: true` on an endpoint that was switched off (by staff or after failing too long)
        clears its failure count and reason, and its waiting deliveries go out again."""
        expected = if_match_version(request, required=True)
        params = WebhookEndpointUpdateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            endpoint = endpoints.endpoint_update(
                endpoint_id=_row_id(endpoint_id, "endpoint"), expected_version=expected, **params.validated_data
            )
        except VersionConflict as conflict:
            raise _as_precondition(conflict) from None
        return _endpoint_response(endpoint)

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_endpoints_destroy",
        parameters=[ENDPOINT_ID, OPTIONAL_IF_MATCH],
        responses={
            204: OpenApiResponse(description="Deleted, with its deliveries."),
            **errors(401, 403, 404, 412, 429, 503),
        },
    )
    def delete(self, request, endpoint_id: int):
        """Delete an endpoint and its delivery log."""
        expected = if_match_version(request, required=False)
        try:
            endpoints.endpoint_delete(endpoint_id=_row_id(endpoint_id, "endpoint"), expected_version=expected)
        except VersionConflict as conflict:
            raise _as_precondition(conflict) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateSecretView(APIView):
    permission_classes = [StaffOnly]

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_endpoints_rotate_secret",
        parameters=[ENDPOINT_ID, OPTIONAL_IF_MATCH],
        request=None,
        responses={200: WebhookEndpointWithSecretSerializer, **errors(401, 403, 404, 412, 429, 503)},
    )
    def post(self, request, endpoint_id: int):
        """A new signing secret, in force at once: every attempt from now on is signed with it."""
        expected = if_match_version(request, required=False)
        try:
            endpoint = endpoints.endpoint_rotate_secret(
                endpoint_id=_row_id(endpoint_id, "endpoint"), expected_version=expected
            )
        except VersionConflict as conflict:
            raise _as_precondition(conflict) from None
        return _endpoint_response(endpoint)


class DeliveryLogView(APIView):
    permission_classes = [StaffOnly]

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_endpoints_deliveries_list",
        parameters=[ENDPOINT_ID, WebhookDeliveryQuerySerializer, *PAGE],
        responses={
            200: paginated(WebhookDeliverySerializer, name="PaginatedWebhookDeliveryList"),
            **errors(400, 401, 403, 404, 429, 503),
        },
    )
    def get(self, request, endpoint_id: int):
        """An endpoint's deliveries, newest first; `?state=` narrows the log."""
        query = WebhookDeliveryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        deliveries = endpoints.delivery_log(
            endpoint_id=_row_id(endpoint_id, "endpoint"), state=query.validated_data.get("state")
        )
        paginator = DeliveryLogPagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class DeliveryResendView(APIView):
    permission_classes = [StaffOnly]

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_deliveries_resend",
        parameters=[OpenApiParameter("delivery_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
        request=None,
        responses={202: WebhookDeliverySerializer, **errors(401, 403, 404, 429, 503)},
    )
    def post(self, request, delivery_id: int):
        """Send a delivery again: a failed or succeeded delivery is due again now, with the same
        webhook-id and body (202: it goes out shortly). One already waiting or in flight is left as it is."""
        services.delivery_resend(delivery_id=_row_id(delivery_id, "delivery"))
        delivery = endpoints.delivery_get(delivery_id=delivery_id)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class EventTypeListView(APIView):
    permission_classes = [StaffOnly]

    @extend_schema(
        tags=TAGS,
        operation_id="v1_webhooks_event_types_list",
        responses={200: WebhookEventTypeSerializer(many=True), **errors(401, 403, 429, 503)},
    )
    def get(self, request):
        """The event types an endpoint can subscribe to; each payload is described under `webhooks` in this schema."""
        rows = [{"type": name, "description": text} for name, text in sorted(event_types().items())]
        return Response(WebhookEventTypeSerializer(rows, many=True).data)
