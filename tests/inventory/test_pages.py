"""Catalogue pages: list with search and pages, product page with cached availability, bad input."""

import pytest
from django.test import Client

from inventory import services as stock
from inventory.views import PRODUCTS_PER_PAGE
from tests.factories import ProductFactory, WarehouseFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", name="Blue mug", price="12.50")
    ProductFactory(sku="TEA", name="Green tea", price="4.00")
    ProductFactory(sku="OLD", name="Old mug", active=False)
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=7)


def test_catalogue_lists_active_products_with_availability(client, catalogue):
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Blue mug" in body and "Green tea" in body
    assert "Old mug" not in body
    assert "In stock" in body and "Out of stock" in body
    assert "12.50 EUR" in body


def test_search_filters_by_name_or_sku(client, catalogue):
    body = client.get("/", {"q": "tea"}).content.decode()
    assert "Green tea" in body and "Blue mug" not in body
    assert "Results for" in body


def test_pages_split_the_catalogue_and_bad_page_numbers_fall_back(client, db):
    for n in range(PRODUCTS_PER_PAGE + 3):
        ProductFactory(sku=f"P{n:03d}", name=f"Thing {n:03d}")
    first = client.get("/").content.decode()
    assert "page 1 of 2" in first and "Thing 000" in first and "Thing 025" not in first
    second = client.get("/", {"page": 2}).content.decode()
    assert "Thing 025" in second and "Thing 000" not in second
    for bad in ["abc", "-1", "0", "1.5", "99999999999999999999", "\x00"]:
        response = client.get("/", {"page": bad})
        assert response.status_code == 200, bad
    assert "Thing 025" in client.get("/", {"page": 999}).content.decode()  # past the end: the last page


def test_odd_searches_never_fail(client, catalogue):
    for q in ["x" * 500, "\x00", "%", "_", "' OR 1=1 --", "<script>alert(1)</script>"]:
        response = client.get("/", {"q": q})
        assert response.status_code == 200, q
        assert b"<script>alert(1)</script>" not in response.content


def test_product_page_shows_price_and_availability(client, catalogue):
    response = client.get("/products/MUG/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Blue mug" in body and "12.50 EUR" in body and "7 available" in body
    assert 'name="csrfmiddlewaretoken"' in body  # the add-to-cart form


def test_product_page_availability_follows_stock_changes(client, catalogue, django_capture_on_commit_callbacks):
    assert "7 available" in client.get("/products/MUG/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):  # the cache is invalidated on commit
        stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=3)
    assert "10 available" in client.get("/products/MUG/").content.decode()


def test_out_of_stock_product_has_no_add_form(client, catalogue):
    body = client.get("/products/TEA/").content.decode()
    assert "Out of stock" in body and "Add to cart" not in body


@pytest.mark.parametrize(
    "path", ["/products/OLD/", "/products/NOPE/", "/products/%00/", "/products/a%2Fb/", "/products/-x/"]
)
def test_unknown_inactive_or_malformed_products_are_our_404(client, catalogue, path):
    response = client.get(path)
    assert response.status_code == 404
    assert b"There is nothing at this address" in response.content


def test_catalogue_is_served_from_the_cache(client, catalogue, django_assert_max_num_queries, settings):
    settings.CATALOGUE_AVAILABILITY_MAX_AGE_MS = 60_000  # availability read at most once a minute
    client.get("/")
    with django_assert_max_num_queries(0):
        assert client.get("/").status_code == 200


def test_the_stylesheet_is_served(client, catalogue):
    body = client.get("/").content.decode()
    assert "stockroom.css" in body
    assert "<script" not in body  # the pages need no JavaScript


def test_catalogue_refuses_post_without_a_500(catalogue):
    response = Client(enforce_csrf_checks=True).post("/", {"q": "x"})
    assert response.status_code in (403, 405)
