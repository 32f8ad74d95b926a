from django.urls import path

from orders import api

urlpatterns = [
    path("orders", api.OrderListView.as_view(), name="orders"),
    path("orders/<str:number>", api.OrderDetailView.as_view(), name="order-detail"),
    path("orders/<str:number>/pay", api.OrderPayView.as_view(), name="order-pay"),
    path("orders/<str:number>/cancel", api.OrderCancelView.as_view(), name="order-cancel"),
    path("orders/<str:number>/fulfil", api.OrderFulfilView.as_view(), name="order-fulfil"),
    path("orders/<str:number>/return", api.OrderReturnView.as_view(), name="order-return"),
]
