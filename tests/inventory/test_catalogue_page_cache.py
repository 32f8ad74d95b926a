"""The shop's catalogue pages keep a "last good" copy (served while PostgreSQL is away) for the
front page only: searches and page numbers are anyone's to invent (issue 18, finding 3)."""

import pytest
from django.core.cache import cache

from inventory import services
from tests.factories import ProductFactory, WarehouseFactory


@pytest.fixture
def shelf(db):
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)


def test_only_the_front_page_keeps_a_last_good_copy(client, shelf):
    assert client.get("/").status_code == 200
    front = set(cache.keys("catalogue:last:*"))

    for n in range(20):
        assert client.get("/", {"q": f"junk{n}"}).status_code == 200
        assert client.get("/", {"page": n + 2}).status_code == 200

    assert len(front) == 1
    assert set(cache.keys("catalogue:last:*")) == front
    assert cache.keys("catalogue:list:*")  # the pages themselves are still cached for five minutes
