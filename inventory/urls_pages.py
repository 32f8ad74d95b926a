"""Shopper pages of the catalogue (included at the site root by project.urls)."""

from django.urls import path, re_path

from inventory import views

urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    # Only what could be a SKU reaches the view; anything else is a plain 404.
    re_path(r"^products/(?P<sku>[A-Za-z0-9][A-Za-z0-9._-]{0,63})/$", views.product, name="product"),
]
