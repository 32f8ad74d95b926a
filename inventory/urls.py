from django.urls import path

from inventory import api, api_back_in_stock, api_bulk, api_feeds, api_imports, api_purchase_orders

urlpatterns = [
    path("products", api.ProductListView.as_view(), name="products"),
    path("products/<str:sku>", api.ProductDetailView.as_view(), name="product-detail"),
    path(
        "products/<str:sku>/back-in-stock",
        api_back_in_stock.ProductBackInStockView.as_view(),
        name="product-back-in-stock",
    ),
    path("back-in-stock", api_back_in_stock.BackInStockListView.as_view(), name="back-in-stock"),
    path("stock", api.StockListView.as_view(), name="stock"),
    path("stock/movements", api_feeds.MovementFeedView.as_view(), name="stock-movements"),
    path("stock/adjustments", api.AdjustmentView.as_view(), name="stock-adjustments"),
    path("stock/counts", api.CountView.as_view(), name="stock-counts"),
    path("stock/transfers", api.TransferView.as_view(), name="stock-transfers"),
    path("stock/settings", api.LevelSettingsView.as_view(), name="stock-settings"),
    path("stock/levels/bulk", api_bulk.StockLevelsBulkView.as_view(), name="stock-levels-bulk"),
    path("warehouses", api_feeds.WarehouseListView.as_view(), name="warehouses"),
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
    path(
        "purchase-orders/<int:purchase_order_id>/confirm",
        api_purchase_orders.PurchaseOrderConfirmView.as_view(),
        name="purchase-order-confirm",
    ),
]
