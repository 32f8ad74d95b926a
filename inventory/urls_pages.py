"""Shopper pages of the catalogue (included at the site root by project.urls)."""

from django.urls import path, re_path

from inventory import views
from inventory.models import SKU_PATTERN

urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    # Only what could be a SKU reaches the view; anything else is a plain 404.
    re_path(rf"^products/(?P<sku>{SKU_PATTERN})/$", views.product, name="product"),
    re_path(
        rf"^products/(?P<sku>{SKU_PATTERN})/back-in-stock/$",
        views.product_back_in_stock,
        name="product-back-in-stock-page",
    ),
    re_path(
        rf"^products/(?P<sku>{SKU_PATTERN})/back-in-stock/stop/$",
        views.product_back_in_stock_stop,
        name="product-back-in-stock-stop-page",
    ),
]
