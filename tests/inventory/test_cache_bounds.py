"""What an anonymous client can make the catalogue cache hold (issue 18, finding 3): entries are keyed
on the validated query only, and "last good" copies are kept for a bounded set of pages."""

from base64 import b64decode, b64encode
from urllib.parse import parse_qs, unquote

import pytest
from django.core.cache import cache

from inventory import services
from tests.factories import ProductFactory, WarehouseFactory


@pytest.fixture
def catalogue(transactional_db):
    WarehouseFactory(code="MAIN")
    for sku in ("MUG", "CUP", "JUG"):
        ProductFactory(sku=sku)
        services.stock_receive(sku=sku, warehouse_code="MAIN", quantity=5)


def catalogue_keys() -> set[str]:
    return set(cache.keys("catalogue:*"))


def last_good_keys() -> set[str]:
    return set(cache.keys("catalogue:last:*"))


def cursor(query: str) -> str:
    return b64encode(query.encode()).decode()


def test_unknown_query_parameters_create_no_cache_entries(api_client, catalogue):
    plain = api_client.get("/api/v1/products?page_size=2")
    assert plain.status_code == 200
    before = catalogue_keys()

    for n in range(50):
        junk = api_client.get(f"/api/v1/products?page_size=2&x{n}=1")
        assert junk.status_code == 200
        assert junk.content == plain.content  # the same entry, links and all

    assert catalogue_keys() == before


def test_equivalent_spellings_of_a_query_share_one_entry(api_client, catalogue):
    assert api_client.get("/api/v1/products").status_code == 200
    before = catalogue_keys()

    # An unusable page size falls back to the default; a search is trimmed; a shopper asking for
    # inactive products sees the active ones; an over-large one is the maximum's page.
    for query in ("page_size=abc", "page_size=0", "page_size=25", "search=", "search=%20", "active=all"):
        assert api_client.get(f"/api/v1/products?{query}").status_code == 200, query
    assert catalogue_keys() == before

    api_client.get("/api/v1/products?page_size=100")
    after_max = catalogue_keys()
    api_client.get("/api/v1/products?page_size=1000")
    assert catalogue_keys() == after_max


def test_the_links_of_a_cached_page_carry_only_the_validated_query(api_client, catalogue):
    page = api_client.get("/api/v1/products?page_size=1&utm_source=evil.example&search=%20").json()

    assert page["next"].startswith("http://testserver/api/v1/products?")
    assert "utm_source" not in page["next"] and "search" not in page["next"]
    assert "page_size=1" in page["next"]
    second = api_client.get(page["next"] + "&junk=1")
    assert second.status_code == 200
    assert [p["sku"] for p in second.json()["results"]] != [p["sku"] for p in page["results"]]


def test_variants_of_one_cursor_share_one_entry_and_a_mangled_one_is_refused(api_client, catalogue):
    first = api_client.get("/api/v1/products?page_size=1").json()
    assert api_client.get(first["next"]).status_code == 200
    before = catalogue_keys()
    encoded = first["next"].split("cursor=")[1].split("&")[0]
    position = parse_qs(b64decode(unquote(encoded)).decode())["p"][0]

    # base64 ignores characters outside its alphabet, and the cursor's own query ignores unknown names
    variants = (encoded + "!!", cursor(f"p={position}&zz=1"), cursor(f"zz=2&o=0&p={position}"))
    for variant in variants:
        response = api_client.get(f"/api/v1/products?page_size=1&cursor={variant}")
        assert response.status_code == 200, variant
    assert catalogue_keys() == before

    refused = api_client.get(f"/api/v1/products?cursor={cursor('p=not-a-number')}")
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"


def test_last_good_copies_are_kept_only_for_first_pages_of_the_whole_catalogue(api_client, catalogue):
    first = api_client.get("/api/v1/products?page_size=1").json()
    kept = last_good_keys()
    assert len(kept) == 1

    api_client.get(first["next"])
    for n in range(20):
        assert api_client.get(f"/api/v1/products?search=mug{n}").status_code == 200
        assert api_client.get(f"/api/v1/products?updated_since=2020-01-01T00:00:{n:02}Z").status_code == 200

    assert last_good_keys() == kept


def test_an_unknown_sku_leaves_nothing_in_the_cache(api_client, catalogue):
    assert api_client.get("/api/v1/products/MUG").status_code == 200
    before = set(cache.keys("*"))

    for n in range(30):
        assert api_client.get(f"/api/v1/products/NO-SUCH-{n}").status_code == 404

    assert set(cache.keys("*")) == before
