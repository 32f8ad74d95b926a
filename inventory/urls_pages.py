"""Shopper pages of the catalogue (included at the site root by project.urls)."""

from django.urls import path, re_path

from inventory import views
from inventory.models import SKU_PATTERN

urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    # Only what could be a SKU reaches the view; anything else is a plain 404.
    re_path(rf"^products/(?P<sku>{SKU_PATTERN})/$", views.product, name="product"),
]
