from django.urls import path

from inventory import api, api_imports, api_purchase_orders

urlpatterns = [
    path("products", api.ProductListView.as_view(), name="products"),
    path("products/<str:sku>", api.ProductDetailView.as_view(), name="product-detail"),
    path("stock", api.StockListView.as_view(), name="stock"),
    path("stock/adjustments", api.AdjustmentView.as_view(), name="stock-adjustments"),
    path("stock/counts", api.CountView.as_view(), name="stock-counts"),
    path("stock/transfers", api.TransferView.as_view(), name="stock-transfers"),
    path("imports", api_imports.ImportListView.as_view(), name="imports"),
    path("imports/<int:import_id>", api_imports.ImportDetailView.as_view(), name="import-detail"),
    path("purchase-orders", api_purchase_orders.PurchaseOrderListView.as_view(), name="purchase-orders"),
    path(
        "purchase-orders/<int:purchase_order_id>",
        api_purchase_orders.PurchaseOrderDetailView.as_view(),
        name="purchase-order-detail",
    ),
    path(
        "purchase-orders/<int:purchase_order_id>/receipts",
        api_purchase_orders.PurchaseOrderReceiptView.as_view(),
        name="purchase-order-receipts",
    ),
    path(
        "purchase-orders/<int:purchase_order_id>/cancel",
        api_purchase_orders.PurchaseOrderCancelView.as_view(),
        name="purchase-order-cancel",
    ),
]
