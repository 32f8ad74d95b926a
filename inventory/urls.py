from django.urls import path

from inventory import api

urlpatterns = [
    path("products", api.ProductListView.as_view(), name="products"),
    path("products/<str:sku>", api.ProductDetailView.as_view(), name="product-detail"),
    path("stock", api.StockListView.as_view(), name="stock"),
    path("stock/adjustments", api.AdjustmentView.as_view(), name="stock-adjustments"),
    path("stock/counts", api.CountView.as_view(), name="stock-counts"),
    path("stock/transfers", api.TransferView.as_view(), name="stock-transfers"),
]
