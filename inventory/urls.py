from django.urls import path

from inventory import api, api_imports

urlpatterns = [
    path("products", api.ProductListView.as_view(), name="products"),
    path("products/<str:sku>", api.ProductDetailView.as_view(), name="product-detail"),
    path("stock", api.StockListView.as_view(), name="stock"),
    path("stock/adjustments", api.AdjustmentView.as_view(), name="stock-adjustments"),
    path("stock/counts", api.CountView.as_view(), name="stock-counts"),
    path("stock/transfers", api.TransferView.as_view(), name="stock-transfers"),
    path("imports", api_imports.ImportListView.as_view(), name="imports"),
    path("imports/<int:import_id>", api_imports.ImportDetailView.as_view(), name="import-detail"),
]
