"""Shopper pages of the cart, checkout and orders (included at the site root by project.urls)."""

from django.urls import path, re_path

from orders import views

ORDER = r"(?P<number>[A-Z0-9-]{1,20})"

urlpatterns = [
    path("cart/", views.cart_view, name="cart"),
    path("cart/add/", views.cart_add, name="cart-add"),
    path("cart/set/", views.cart_set, name="cart-set"),
    path("cart/remove/", views.cart_remove, name="cart-remove"),
    path("cart/empty/", views.cart_empty, name="cart-empty"),
    path("checkout/", views.checkout, name="checkout"),
    path("orders/", views.order_list, name="order-list"),
    re_path(rf"^orders/{ORDER}/$", views.order_detail, name="order-detail"),
    re_path(rf"^orders/{ORDER}/pay/$", views.order_pay, name="order-pay"),
    re_path(rf"^orders/{ORDER}/cancel/$", views.order_cancel, name="order-cancel"),
    re_path(rf"^orders/{ORDER}/reorder/$", views.order_reorder, name="order-reorder"),
]
