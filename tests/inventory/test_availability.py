"""Availability in the catalogue: kept apart from the cached product data, at most
CATALOGUE_AVAILABILITY_MAX_AGE_MS old, on real PostgreSQL and Redis.

Every test here runs with the production bound (1 s; the rest of the suite reads availability
every time) and polls with a deadline of the bound plus a margin for the test's own work: a change
must show within the bound, never after it, and cached data must not have to be rebuilt for it.
"""

import time

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from inventory import availability, imports, services
from inventory.models import ImportJob, Product
from orders import jobs
from orders import services as orders
from orders.models import Order
from project.db.routers import wrote_in_request
from tests.factories import ProductFactory, WarehouseFactory
from tests.inventory.import_support import csv_bytes
from tests.orders.conftest import place
from tests.support import closed_port, wait_for

BOUND_MS = 1000
DEADLINE = BOUND_MS / 1000 + 2.0  # the bound, and room for the test's own requests on a busy host

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def bound(settings):
    settings.CATALOGUE_AVAILABILITY_MAX_AGE_MS = BOUND_MS


@pytest.fixture
def mug(transactional_db):
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG", name="Mug")
    ProductFactory(sku="TEA", name="Tea")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    services.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=9)
    return Product.objects.get(sku="MUG")


def detail(client, sku="MUG") -> int:
    return client.get(f"/api/v1/products/{sku}").json()["available"]


def listed(client, sku="MUG") -> int:
    results = client.get("/api/v1/products").json()["results"]
    return next(product["available"] for product in results if product["sku"] == sku)


def page_shows(client, text: str, sku="MUG") -> bool:
    return text in client.get(f"/products/{sku}/").content.decode()


def misses() -> float:
    return REGISTRY.get_sample_value("django_cache_get_misses_total", {"backend": "redis"}) or 0.0


def shows(client, units: int, sku="MUG") -> None:
    """The API's detail and list both show `units` within the deadline."""
    wait_for(lambda: detail(client, sku) == units, timeout=DEADLINE, interval=0.05, what=f"detail {units}")
    wait_for(lambda: listed(client, sku) == units, timeout=DEADLINE, interval=0.05, what=f"list {units}")


def test_within_the_bound_a_read_reuses_the_value_and_after_it_reads_again(api_client, mug):
    assert (detail(api_client), listed(api_client)) == (5, 5)

    with CaptureQueriesContext(connection) as queries:
        assert (detail(api_client), listed(api_client)) == (5, 5)
    assert len(queries) == 0  # data from Redis, availability from this process

    time.sleep(BOUND_MS / 1000)  # let the values age past the bound (this test is about the bound)
    with CaptureQueriesContext(connection) as queries:
        assert detail(api_client) == 5
    assert len(queries) == 1  # the one statement of inventory.availability


def test_an_order_shows_within_the_bound_and_rebuilds_no_cached_entry(api_client, customer_client, mug):
    assert (detail(api_client), listed(api_client)) == (5, 5)
    before = misses()

    assert place(customer_client, ("MUG", 2)).status_code == 201

    shows(api_client, 3)
    assert misses() == before  # the product's entry and the list page were not thrown away


def test_a_cancel_an_expiry_sweep_and_a_receipt_show_within_the_bound(api_client, customer_client, mug):
    first = Order.objects.get(number=place(customer_client, ("MUG", 2)).json()["number"])
    second = Order.objects.get(number=place(customer_client, ("MUG", 1)).json()["number"])
    shows(api_client, 2)

    orders.order_cancel(order_id=first.pk)
    shows(api_client, 4)

    Order.objects.filter(pk=second.pk).update(expires_at=timezone.now())
    assert jobs.expire_reservations() == 1
    shows(api_client, 5)

    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=7)
    shows(api_client, 12)


def test_an_import_shows_its_levels_and_its_new_products(api_client, mug, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    assert detail(api_client) == 5
    job = ImportJob(original_name="stock.csv")
    job.file.save("stock.csv", ContentFile(csv_bytes(["MUG,MAIN,40"])), save=False)
    job.save()

    assert imports.import_run(import_id=job.pk).status == "succeeded"

    shows(api_client, 40)


def test_a_sold_out_product_shows_out_of_stock_within_the_bound(client, customer_client, mug):
    assert page_shows(client, "5 available")

    assert place(customer_client, ("MUG", 5)).status_code == 201

    wait_for(lambda: page_shows(client, "Out of stock"), timeout=DEADLINE, interval=0.05, what="out of stock")
    assert not page_shows(client, "Add to cart")  # the form goes with the last unit
    wait_for(lambda: "Out of stock" in _catalogue_card(client, "Mug"), timeout=DEADLINE, what="catalogue card")


def test_the_etag_changes_with_availability_within_the_bound(api_client, customer_client, mug):
    tag = api_client.get("/api/v1/products/MUG")["ETag"]
    assert api_client.get("/api/v1/products/MUG", HTTP_IF_NONE_MATCH=tag).status_code == 304

    assert place(customer_client, ("MUG", 1)).status_code == 201

    wait_for(
        lambda: api_client.get("/api/v1/products/MUG", HTTP_IF_NONE_MATCH=tag).status_code == 200,
        timeout=DEADLINE,
        interval=0.05,
        what="a new ETag",
    )
    assert api_client.get("/api/v1/products/MUG")["ETag"] == '"1-4"'


def test_with_redis_away_availability_comes_from_postgresql(api_client, customer_client, mug, settings):
    assert detail(api_client) == 5
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{closed_port()}/0"}}

    assert place(customer_client, ("MUG", 3)).status_code == 201

    shows(api_client, 2)


def _catalogue_card(client, name: str) -> str:
    body = client.get("/").content.decode()
    start = body.index(name)
    return body[start : start + 400]


def test_values_a_replica_read_for_a_cached_entry_are_not_kept(api_client, mug, settings):
    settings.DATABASES = {**settings.DATABASES, "replica": settings.DATABASES["default"]}
    token = wrote_in_request.set(False)  # a fresh request: catalogue reads would go to the replica
    try:
        availability.remember({"MUG": 99}, time.monotonic())  # as a build on the replica would
    finally:
        wrote_in_request.reset(token)

    with CaptureQueriesContext(connection) as primary:
        assert availability.availability(["MUG"]) == {"MUG": 5}
    assert len(primary) == 1  # read again from the primary, not taken from the replica's build
