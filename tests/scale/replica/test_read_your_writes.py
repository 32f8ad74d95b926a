"""Catalogue reads against a real streaming replica held behind (replay paused): every client reads
its own writes, anonymous reads are stale at most REPLICA_MAX_LAG_SECONDS, the catalogue cache never
keeps what a lagging replica still shows, and a replica gone is skipped. Never a 5xx."""

import time
import uuid

import httpx
import pytest

from tests.orders.conftest import order_body
from tests.scale.replica.conftest import (
    MAX_LAG_SECONDS,
    bearer,
    cached,
    session,
    skipped,
    standby_value,
)
from tests.support import wait_for

pytestmark = pytest.mark.slow

ON_HAND_SQL = (
    "SELECT s.on_hand FROM inventory_stocklevel s JOIN inventory_product p ON p.id = s.product_id WHERE p.sku = %s"
)


def available(base: str, sku: str, headers=None, cookies=None) -> int:
    response = httpx.get(f"{base}/api/v1/products/{sku}", headers=headers, cookies=cookies, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["available"]


def page(base: str, sku: str, cookies=None) -> str:
    response = httpx.get(f"{base}/products/{sku}/", cookies=cookies, timeout=10)
    assert response.status_code == 200, response.text[:500]
    return response.text


def on_hand(base: str, shop, who: str, sku: str) -> int:
    response = httpx.get(f"{base}/api/v1/stock", params={"sku": sku}, headers=bearer(shop, who), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["on_hand"]


def adjust(base: str, shop, who: str, sku: str, delta: int, reason: str) -> None:
    """Adjust `sku`'s MAIN level by `delta` as `who`, through the API; the answer is the commit's."""
    adjusted = httpx.post(
        f"{base}/api/v1/stock/adjustments",
        json={"sku": sku, "warehouse": "MAIN", "delta": delta, "reason": reason},
        headers=bearer(shop, who),
        timeout=10,
    )
    assert adjusted.status_code == 201, adjusted.text


def test_a_shopper_sees_their_own_order_and_cancel_at_once(node, shop, replica_paused):
    base, pair = node, replica_paused
    before = available(base, "MUG")  # anonymous: this process now keeps the value (for a minute)
    assert available(base, "MUG", headers=bearer(shop, "shopper")) == before

    placed = httpx.post(
        f"{base}/api/v1/orders",
        json=order_body(("MUG", 2)),
        headers={**bearer(shop, "shopper"), "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert placed.status_code == 201, placed.text

    # Someone else may still be shown the value this process kept (within the availability bound)...
    assert available(base, "MUG", headers=bearer(shop, "other_shopper")) == before
    assert f"{before} available" in page(base, "MUG")
    # ...the shopper sees their own change, through the API with their key and on the page with their session.
    assert available(base, "MUG", headers=bearer(shop, "shopper")) == before - 2
    assert f"{before - 2} available" in page(base, "MUG", cookies=session(shop, "shopper"))
    assert standby_value(pair, ON_HAND_SQL, ["MUG"]) == 50  # the replica has not seen any of it

    cancelled = httpx.post(
        f"{base}/api/v1/orders/{placed.json()['number']}/cancel", headers=bearer(shop, "shopper"), timeout=10
    )
    assert cancelled.status_code == 200, cancelled.text
    assert available(base, "MUG", headers=bearer(shop, "shopper")) == before
    assert f"{before} available" in page(base, "MUG", cookies=session(shop, "shopper"))


def test_staff_see_their_own_stock_adjustment_and_product_edit(node, shop, replica_paused):
    base, pair = node, replica_paused
    start = on_hand(base, shop, "staff", "PEN")
    counted = skipped(base)

    adjust(base, shop, "staff", "PEN", 7, "found a box")
    assert on_hand(base, shop, "staff", "PEN") == start + 7
    assert standby_value(pair, ON_HAND_SQL, ["PEN"]) == start  # so that read came from the primary
    assert skipped(base)["behind_client"] > counted["behind_client"]

    staff_view = httpx.get(f"{base}/api/v1/products/PEN", headers=bearer(shop, "staff"), timeout=10)
    edited = httpx.patch(
        f"{base}/api/v1/products/PEN",
        json={"name": "Red pen, fine"},
        headers={**bearer(shop, "staff"), "If-Match": staff_view.headers["ETag"]},
        timeout=10,
    )
    assert edited.status_code == 200, edited.text
    read = httpx.get(f"{base}/api/v1/products/PEN", headers=bearer(shop, "staff"), timeout=10)
    assert read.json()["name"] == "Red pen, fine"
    admin_page = httpx.get(f"{base}/admin/inventory/product/", cookies=session(shop, "staff"), timeout=10)
    assert admin_page.status_code == 200
    assert "Red pen, fine" in admin_page.text


def test_the_cache_never_keeps_a_value_the_replica_is_behind_on(node, shop, replica_paused):
    base, pair = node, replica_paused
    assert httpx.get(f"{base}/api/v1/products/TEA", timeout=10).json()["price"] == "10.00"
    listed = httpx.get(f"{base}/api/v1/products", timeout=10).json()["results"]
    assert {product["sku"]: product["price"] for product in listed}["TEA"] == "10.00"

    etag = httpx.get(f"{base}/api/v1/products/TEA", headers=bearer(shop, "staff"), timeout=10).headers["ETag"]
    edited = httpx.patch(
        f"{base}/api/v1/products/TEA",
        json={"price": "12.50"},
        headers={**bearer(shop, "staff"), "If-Match": etag},
        timeout=10,
    )
    assert edited.status_code == 200, edited.text
    assert standby_value(pair, "SELECT price::text FROM inventory_product WHERE sku = %s", ["TEA"]) == "10.00"

    # Anonymous readers miss (the edit replaced the tokens) while the replica still has the old price:
    # the entries are rebuilt from the primary, never from the replica.
    for _ in range(3):
        assert httpx.get(f"{base}/api/v1/products/TEA", timeout=10).json()["price"] == "12.50"
        listed = httpx.get(f"{base}/api/v1/products", timeout=10).json()["results"]
        assert {product["sku"]: product["price"] for product in listed}["TEA"] == "12.50"
    token, entry = cached("catalogue:product:TEA")
    assert entry["price"] == "12.50"
    assert "@" in token  # the token carries the edit's WAL position
    assert cached("catalogue:last:product:TEA")["price"] == "12.50"

    pair.resume_replay()
    pair.wait_caught_up()
    assert httpx.get(f"{base}/api/v1/products/TEA", timeout=10).json()["price"] == "12.50"
    assert cached("catalogue:product:TEA")[1]["price"] == "12.50"
    assert cached("catalogue:last:product:TEA")["price"] == "12.50"


def test_other_clients_read_the_replica_within_the_bound_then_the_primary(node, shop, pair):
    base = node
    # The other staff member's key records its use (a write of theirs) now, not during the test.
    start = on_hand(base, shop, "other_staff", "PEN")
    pair.wait_caught_up()
    pair.pause_replay()
    try:
        assert on_hand(base, shop, "other_staff", "PEN") == start  # the node sees the replica caught up
        counted = skipped(base)
        adjust(base, shop, "staff", "PEN", 3, "recount")
        committed_by = time.monotonic()  # the commit finished before the answer came
        reads = []

        def fresh() -> bool:
            started = time.monotonic()
            value = on_hand(base, shop, "other_staff", "PEN")
            reads.append((started - committed_by, value))
            return value == start + 3

        wait_for(fresh, timeout=MAX_LAG_SECONDS + 10, interval=0.1, what="the other staff member to see the change")
        # Served by the replica (the old figure) at first, by the primary once the replica was
        # beyond the bound; no read that started past the bound showed the old figure.
        assert reads[0][1] == start
        assert all(value == start + 3 for since, value in reads if since > MAX_LAG_SECONDS)
        assert standby_value(pair, ON_HAND_SQL, ["PEN"]) == start  # still paused: the primary answered
        after = skipped(base)
        assert after["lag"] > counted["lag"]
        assert after["behind_client"] == counted["behind_client"]  # not theirs: only the bound applies
    finally:
        pair.resume_replay()
        pair.wait_caught_up()


def test_an_unreachable_replica_is_skipped_for_the_primary(node, shop, pair):
    base = node
    pair.wait_caught_up()

    def search() -> httpx.Response:  # a search nobody made yet: a cache miss, built from the database
        return httpx.get(f"{base}/api/v1/products", params={"search": uuid.uuid4().hex[:8]}, timeout=10)

    assert search().status_code == 200  # the node has just seen the replica answer, within the bound
    counted = skipped(base)
    pair.stop_standby()
    try:
        for _ in range(3):
            responses = [
                search(),
                httpx.get(f"{base}/api/v1/stock", params={"sku": "MUG"}, headers=bearer(shop, "other_staff")),
                httpx.get(f"{base}/api/v1/products/MUG", timeout=10),
                httpx.get(f"{base}/products/MUG/", timeout=10),
            ]
            for response in responses:
                assert response.status_code == 200, (response.url, response.status_code)
                assert "X-Stale" not in response.headers
        assert skipped(base)["unreachable"] > counted["unreachable"]
    finally:
        pair.start_standby()
    pair.wait_caught_up()
