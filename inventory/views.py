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
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from inventory import selectors
from inventory.availability import overlay, remember_payloads
from inventory.cache import cached_list
from inventory.serializers import product_payload

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
    return render(
        request,
        "inventory/product.html",
        {"product": entry, "max_quantity": settings.ORDER_MAX_QUANTITY},
    )
