"""The staff webhook API, mounted under /api/v1/webhooks/ by project/urls.py."""

from django.urls import path

from project.webhooks import api

urlpatterns = [
    path("endpoints", api.EndpointListView.as_view(), name="webhook-endpoints"),
    path("endpoints/<int:endpoint_id>", api.EndpointDetailView.as_view(), name="webhook-endpoint-detail"),
    path(
        "endpoints/<int:endpoint_id>/rotate-secret",
        api.EndpointRotateSecretView.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path("endpoints/<int:endpoint_id>/deliveries", api.DeliveryLogView.as_view(), name="webhook-endpoint-deliveries"),
    path("deliveries/<int:delivery_id>/resend", api.DeliveryResendView.as_view(), name="webhook-delivery-resend"),
    path("event-types", api.EventTypeListView.as_view(), name="webhook-event-types"),
]
