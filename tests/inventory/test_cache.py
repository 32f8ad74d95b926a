import pytest
from django.core.cache import cache
from django.db import transaction
from prometheus_client import REGISTRY

from inventory import services
from inventory.availability import ListTemplate
from inventory.cache import catalogue_changed
from inventory.errors import InsufficientStock
from inventory.models import Product, StockLevel
from project.db.redis import cache_connections
from tests.factories import ProductFactory, WarehouseFactory
from tests.support import closed_port


@pytest.fixture
def mug(transactional_db):
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    return Product.objects.get(sku="MUG")


def available(client, sku="MUG") -> int:
    return client.get(f"/api/v1/products/{sku}").json()["available"]


def listed_available(client) -> int:
    return client.get("/api/v1/products").json()["results"][0]["available"]


def test_reads_are_served_from_the_cache(api_client, mug, django_assert_num_queries, settings):
    settings.CATALOGUE_AVAILABILITY_MAX_AGE_MS = 60_000  # availability read at most once a minute
    available(api_client)
    listed_available(api_client)

    with django_assert_num_queries(0):
        assert available(api_client) == 5
        assert listed_available(api_client) == 5


def test_a_catalogue_page_is_cached_as_its_json_and_a_hit_answers_the_same_bytes(api_client, mug, monkeypatch):
    """The JSON with a gap for each product's availability, filled at every read."""
    stored = []
    set_many = cache.set_many

    def recorded(data, *args, **kwargs):
        stored.append(data)
        return set_many(data, *args, **kwargs)

    monkeypatch.setattr(cache, "set_many", recorded)
    miss = api_client.get("/api/v1/products?page_size=10")
    hit = api_client.get("/api/v1/products?page_size=10")

    assert hit.content == miss.content
    assert hit["Content-Type"] == miss["Content-Type"] == "application/json"
    assert miss.json()["results"][0]["sku"] == "MUG"
    entry, last_good = (next(iter(data.values())) for data in stored)
    assert isinstance(entry[1], ListTemplate) and entry[1].skus == ["MUG"]
    assert entry[1].fill() == last_good.fill() == miss.content  # the JSON itself, under its token
    assert entry[1].parts[0].endswith(b'"available":')  # the gap is where the number goes


class CommandCounter:
    """Counts the commands the cache sends (each one a round trip), through django-redis's client
    and through its own connections (project.db.redis.cache_connections), passing them on."""

    def __init__(self, monkeypatch):
        self.commands: list[str] = []
        clients = {id(client): client for client in (cache.client.get_client(write=w) for w in (False, True))}
        for client in clients.values():
            monkeypatch.setattr(client, "execute_command", self._counting(client.execute_command))
        connections = cache_connections()
        monkeypatch.setattr(connections, "execute", self._counting(connections.execute))

    def _counting(self, send):
        def counted(*args, **options):
            self.commands.append(str(args[0]))
            return send(*args, **options)

        return counted


def cache_gets(outcome: str) -> float:
    name = {"get": "django_cache_get_total", "hits": "django_cache_get_hits_total"}.get(
        outcome, "django_cache_get_misses_total"
    )
    return REGISTRY.get_sample_value(name, {"backend": "redis"}) or 0.0


def test_a_cached_read_is_one_redis_round_trip_and_counts_as_one_hit(api_client, mug, monkeypatch):
    available(api_client)
    listed_available(api_client)
    counter = CommandCounter(monkeypatch)
    gets, hits, misses = cache_gets("get"), cache_gets("hits"), cache_gets("misses")

    assert available(api_client) == 5
    assert listed_available(api_client) == 5

    assert counter.commands == ["MGET", "MGET"]
    assert (cache_gets("get") - gets, cache_gets("hits") - hits, cache_gets("misses") - misses) == (2, 2, 0)


def test_an_invalidation_is_one_mset_of_new_tokens(api_client, mug, monkeypatch):
    before = cache.get_many(["catalogue:product:MUG:token", "catalogue:list:token"])
    counter = CommandCounter(monkeypatch)

    with transaction.atomic():
        catalogue_changed(["MUG", "MUG"])
        assert counter.commands == []  # nothing before the commit

    assert counter.commands == ["MSET"]
    after = cache.get_many(["catalogue:product:MUG:token", "catalogue:list:token"])
    assert set(after) == {"catalogue:product:MUG:token", "catalogue:list:token"}
    assert all(after[key] != before.get(key) for key in after)


def test_an_entry_built_under_an_old_token_is_a_miss_and_is_replaced(api_client, mug):
    assert available(api_client) == 5
    misses = cache_gets("misses")
    StockLevel.objects.filter(product=mug).update(on_hand=4)
    with transaction.atomic():
        catalogue_changed(["MUG"])

    assert available(api_client) == 4
    assert cache_gets("misses") - misses == 1
    assert cache.get("catalogue:product:MUG")[1]["available"] == 4


def test_a_committed_stock_change_shows_in_detail_and_list_and_invalidates_nothing(api_client, mug, monkeypatch):
    assert (available(api_client), listed_available(api_client)) == (5, 5)
    counter = CommandCounter(monkeypatch)

    with transaction.atomic():
        services.reserve_stock(lines=[(mug, 2)], reference="ORD-1")
    assert counter.commands == []  # an order costs the cache nothing

    misses = cache_gets("misses")
    assert (available(api_client), listed_available(api_client)) == (3, 3)
    assert cache_gets("misses") == misses


def test_a_rolled_back_change_does_not_invalidate(api_client, mug, django_assert_num_queries, settings):
    settings.CATALOGUE_AVAILABILITY_MAX_AGE_MS = 60_000
    available(api_client)

    with pytest.raises(RuntimeError), transaction.atomic():
        services.product_update(sku="MUG", expected_version=1, changes={"name": "Renamed"})
        raise RuntimeError("abandon the edit")

    with django_assert_num_queries(0):
        assert available(api_client) == 5
    assert api_client.get("/api/v1/products/MUG").json()["name"] != "Renamed"


def test_product_edits_invalidate(api_client, mug):
    assert api_client.get("/api/v1/products/MUG").json()["name"] != "Renamed"

    services.product_update(sku="MUG", expected_version=1, changes={"name": "Renamed"})

    assert api_client.get("/api/v1/products/MUG").json()["name"] == "Renamed"
    assert api_client.get("/api/v1/products").json()["results"][0]["name"] == "Renamed"


def test_stock_decisions_never_read_the_cache(api_client, mug, settings):
    settings.CATALOGUE_AVAILABILITY_MAX_AGE_MS = 60_000
    assert available(api_client) == 5
    # The shelf changes and the catalogue, within its bound, still says 5 ...
    StockLevel.objects.filter(product=mug).update(on_hand=1)
    assert available(api_client) == 5

    # ... but a reservation decides from the database.
    with pytest.raises(InsufficientStock), transaction.atomic():
        services.reserve_stock(lines=[(mug, 2)], reference="ORD-1")


def test_a_change_to_many_products_invalidates_them_all_with_one_token(api_client, transactional_db):
    warehouse = WarehouseFactory(code="MAIN")
    products = ProductFactory.create_batch(120)
    for product in products:
        StockLevel.objects.create(product=product, warehouse=warehouse, on_hand=5)
    from inventory.models import StockMovement

    StockMovement.objects.bulk_create(
        [StockMovement(level=level, delta_on_hand=5, reason="receipt") for level in StockLevel.objects.all()]
    )
    first, last = products[0].sku, products[-1].sku
    assert (available(api_client, first), available(api_client, last)) == (5, 5)

    with transaction.atomic():
        services.reserve_stock(lines=[(p, 1) for p in products], reference="BIG")

    assert (available(api_client, first), available(api_client, last)) == (4, 4)


def test_with_the_caches_redis_unreachable_reads_come_from_the_database_and_changes_commit(
    api_client, mug, settings, caplog
):
    location = f"redis://127.0.0.1:{closed_port()}/0"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": location}}

    assert available(api_client) == 5
    assert listed_available(api_client) == 5
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    services.product_update(sku="MUG", expected_version=1, changes={"name": "Renamed"})  # invalidation fails, logged

    assert available(api_client) == 7
    assert listed_available(api_client) == 7
    assert api_client.get("/api/v1/products/MUG").json()["name"] == "Renamed"
    failures = [record.getMessage() for record in caplog.records if record.name == "stockroom.cache"]
    assert any(message.startswith("catalogue read from Redis failed") for message in failures)
    assert any(message.startswith("catalogue invalidation failed") for message in failures)
