"""Shopper pages of the catalogue: the list (search, pages) and one product, both from the cache.

The cache is the same cache-aside store as the API's (inventory.cache): a product page and the
API's product detail share one cached entry per SKU; list pages have their own keys under the
list token. Availability is laid over the cached entries at each read (inventory.availability):
at most CATALOGUE_AVAILABILITY_MAX_AGE_MS old, and advisory; stock is decided when an order is
placed.
"""

import time
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from inventory import back_in_stock, selectors
from inventory.availability import overlay, remember_payloads
from inventory.cache import cached_list
from inventory.errors import InStockNow
from inventory.serializers import product_payload
from project.errors import DomainError, NotFound

PRODUCTS_PER_PAGE = 24


class CatalogueQueryForm(forms.Form):
    q = forms.CharField(max_length=100, required=False, strip=True, label="Search")
    page = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)


def _catalogue_page(search: str, page_number: int) -> dict:
    read_at = time.monotonic()
    products = selectors.catalogue_list(search=search, active=True)
    page = Paginator(products, PRODUCTS_PER_PAGE).get_page(page_number)
    payloads = [product_payload(product) for product in page.object_list]
    remember_payloads(payloads, read_at)
    return {
        "products": payloads,
        "number": page.number,
        "num_pages": page.paginator.num_pages,
        "count": page.paginator.count,
    }


@require_GET
def catalogue(request):
    query = CatalogueQueryForm(request.GET)
    if query.is_valid():
        search, page_number = query.cleaned_data["q"], query.cleaned_data["page"] or 1
    else:  # a mangled address still shows the shop: the first page of everything
        search, page_number = "", 1
    params = urlencode({"q": search, "page": page_number})
    # Only the shop's front page keeps a day-long "last good" copy for outages: one per search or
    # page number would let anyone fill the cache with copies nobody reads again.
    page = cached_list(
        f"pages/catalogue?{params}",
        lambda: _catalogue_page(search, page_number),
        keep_last_good=not search and page_number == 1,
    )
    return render(
        request,
        "inventory/catalogue.html",
        {
            "search": search,
            "search_invalid": not query.is_valid(),
            "products": overlay(page["products"]),
            "page_number": page["number"],
            "num_pages": page["num_pages"],
            "count": page["count"],
            "previous_query": urlencode({"q": search, "page": page["number"] - 1}) if page["number"] > 1 else "",
            "next_query": urlencode({"q": search, "page": page["number"] + 1})
            if page["number"] < page["num_pages"]
            else "",
        },
    )


@require_GET
def product(request, sku: str):
    """One product. Its add-to-cart form is plain HTML in the template, posted to the cart's URL
    (`cart-add`), whose view validates it; this page needs nothing of the cart's code."""
    entry = selectors.catalogue_entry(sku)
    if not selectors.sold(entry):
        raise Http404("No such product.")
    # Whether this shopper already waits for it: read per request, outside the shared cached entry
    # (only the product's data is cached; the page itself is rendered for each request).
    waiting = entry["available"] <= 0 and back_in_stock.is_waiting(user=request.user, sku=entry["sku"])
    # Sold beyond the shelf (a backorder or a preorder): said before the shopper orders, with the
    # date the next purchase order is expected (read per request: it is not in the cached entry).
    beyond = selectors.beyond_shelf(entry)
    expected = selectors.next_arrival(sku=entry["sku"]) if beyond else None
    return render(
        request,
        "inventory/product.html",
        {
            "product": entry,
            "max_quantity": settings.ORDER_MAX_QUANTITY,
            "waiting": waiting,
            "beyond": beyond,
            "expected": expected,
        },
    )


def _back_in_stock_form(request, change) -> str | None:
    """Run a back-in-stock form's service for a signed-in shopper; the message to show, or None
    when the service refused (its message is shown). 404 for a product shoppers cannot see."""
    try:
        return change()
    except NotFound:
        raise Http404("No such product.") from None
    except InStockNow:
        messages.info(request, "Good news: it is in stock now, so you can order it right away.")
    except DomainError as exc:  # a lock timeout above all: nothing changed, try again
        messages.error(request, f"Nothing changed: {exc.detail}")
    return None


def _back_in_stock_post(request, sku: str, change) -> object:
    """Run a back-in-stock form for a signed-in shopper (an anonymous one signs in first), say what
    happened, and go back to the product page."""
    page = reverse("product", args=[sku])
    if not request.user.is_authenticated:
        return redirect_to_login(page)
    done = _back_in_stock_form(request, change)
    if done:
        messages.success(request, done)
    return redirect(page)


@require_POST
def product_back_in_stock(request, sku: str):
    """The product page's "Notify me when it is back" form: subscribe, then back to the page."""

    def subscribe() -> str:
        back_in_stock.back_in_stock_subscribe(user=request.user, sku=sku)
        return "We will email you when it is back in stock."

    return _back_in_stock_post(request, sku, subscribe)


@require_POST
def product_back_in_stock_stop(request, sku: str):
    """The product page's "Stop waiting" form: unsubscribe, then back to the page."""

    def unsubscribe() -> str:
        back_in_stock.back_in_stock_unsubscribe(user=request.user, sku=sku)
        return "You are no longer waiting for it: we will not email you about it."

    return _back_in_stock_post(request, sku, unsubscribe)
