from django.urls import path

from orders import api

urlpatterns = [
    path("orders", api.OrderListView.as_view(), name="orders"),
    path("orders/<str:number>", api.OrderDetailView.as_view(), name="order-detail"),
    path("orders/<str:number>/pay", api.OrderPayView.as_view(), name="order-pay"),
    path("orders/<str:number>/cancel", api.OrderCancelView.as_view(), name="order-cancel"),
    path("orders/<str:number>/fulfil", api.OrderFulfilView.as_view(), name="order-fulfil"),
    path("orders/<str:number>/return", api.OrderReturnView.as_view(), name="order-return"),
    path("orders/<str:number>/shipping", api.OrderShippingView.as_view(), name="order-shipping"),
    path("orders/<str:number>/shipments", api.OrderShipmentListView.as_view(), name="order-shipments"),
    path(
        "orders/<str:number>/shipments/<str:shipment_id>",
        api.OrderShipmentDetailView.as_view(),
        name="order-shipment-detail",
    ),
    path(
        "orders/<str:number>/shipments/<str:shipment_id>/ship",
        api.OrderShipmentShipView.as_view(),
        name="order-shipment-ship",
    ),
    path(
        "orders/<str:number>/shipments/<str:shipment_id>/cancel",
        api.OrderShipmentCancelView.as_view(),
        name="order-shipment-cancel",
    ),
    path("orders/<str:number>/returns", api.OrderReturnListView.as_view(), name="order-returns"),
    path(
        "orders/<str:number>/returns/<str:return_id>", api.OrderReturnDetailView.as_view(), name="order-return-detail"
    ),
]
