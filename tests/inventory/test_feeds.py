"""Read feeds for integrations: the warehouses list, and the stock ledger as a feed that serves every
committed row exactly once, in (txid, id) order, even while rows are written (inventory.feeds)."""

import base64
import random
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from inventory import feeds, services
from inventory.models import StockLevel, StockMovement
from tests.conftest import bearer
from tests.factories import ProductFactory, WarehouseFactory
from users.services import api_key_create

MOVEMENTS = "/api/v1/stock/movements"
WAREHOUSES = "/api/v1/warehouses"
# How long a test waits for the feed's horizon to pass its rows. The horizon is the oldest
# transaction still open on the whole PostgreSQL server (other test runs share it): waiting for
# it is part of the contract, not a timing the test asserts.
HORIZON_WAIT_SECONDS = 60


def feed_order() -> list[int]:
    """Every ledger row's id in the feed's order, read straight from the table."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM inventory_stockmovement ORDER BY COALESCE(txid, '0'::xid8), id")
        return [row[0] for row in cursor.fetchall()]


def _txid_of(movement_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT txid::text FROM inventory_stockmovement WHERE id = %s", [movement_id])
        return cursor.fetchone()[0]


def wait_for_horizon() -> None:
    """Until every committed ledger row is below the snapshot's xmin (servable)."""
    deadline = time.monotonic() + HORIZON_WAIT_SECONDS
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(bool_and(COALESCE(txid, '0'::xid8) < pg_snapshot_xmin(pg_current_snapshot())), true)"
                " FROM inventory_stockmovement"
            )
            if cursor.fetchone()[0]:
                return
        assert time.monotonic() < deadline, "a transaction somewhere on the server held the feed back"
        time.sleep(0.05)


def follow(client: APIClient, url: str, params: dict | None = None, *, page_size: int = 25) -> tuple[list[dict], str]:
    """Every row from `url` on, following `next` until a page comes back short; the last `next`.
    `page_size`: the one in `params`, or in `url` (a `next` link)."""
    rows: list[dict] = []
    page_size = (params or {}).get("page_size", page_size)
    response = client.get(url, params)
    while True:
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["previous"] is None and body["next"]
        rows += body["results"]
        if len(body["results"]) < page_size:
            return rows, body["next"]
        response = client.get(body["next"])


@pytest.fixture
def shop(db):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG")
    ProductFactory(sku="TEA")


# --- warehouses ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_warehouses_are_for_staff_only(api_client, customer_client, staff_user, staff_client):
    WarehouseFactory(code="MAIN")
    _, read_write_key = api_key_create(user=staff_user, scopes=["read", "write"])

    assert api_client.get(WAREHOUSES).status_code in (401, 403)
    assert customer_client.get(WAREHOUSES).status_code == 403
    refused = bearer(APIClient(), read_write_key).get(WAREHOUSES)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert staff_client.get(WAREHOUSES).status_code == 200


@pytest.mark.django_db
def test_warehouses_list_pages_in_creation_order_with_every_field(staff_client):
    for n in range(5):
        WarehouseFactory(code=f"WH-{n}", name=f"Depot {n}", priority=50 - n, active=n != 2)

    first = staff_client.get(WAREHOUSES, {"page_size": 2}).json()
    second = staff_client.get(first["next"]).json()
    third = staff_client.get(second["next"]).json()

    pages = [first, second, third]
    assert [[w["code"] for w in page["results"]] for page in pages] == [["WH-0", "WH-1"], ["WH-2", "WH-3"], ["WH-4"]]
    assert third["next"] is None and first["previous"] is None and second["previous"]
    assert first["results"][0] == {
        "code": "WH-0",
        "name": "Depot 0",
        "priority": 50,
        "active": True,
        "created_at": first["results"][0]["created_at"],
    }
    assert first["results"][0]["created_at"]


@pytest.mark.django_db
def test_warehouses_filter_by_active(staff_client):
    WarehouseFactory(code="OPEN")
    WarehouseFactory(code="SHUT", active=False)

    assert [w["code"] for w in staff_client.get(WAREHOUSES, {"active": "true"}).json()["results"]] == ["OPEN"]
    assert [w["code"] for w in staff_client.get(WAREHOUSES, {"active": "false"}).json()["results"]] == ["SHUT"]
    assert [w["code"] for w in staff_client.get(WAREHOUSES).json()["results"]] == ["OPEN", "SHUT"]
    bad = staff_client.get(WAREHOUSES, {"active": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    assert "active" in bad.json()["error"]["fields"]


# --- movements: the API --------------------------------------------------------------------------


@pytest.mark.django_db
def test_movements_are_for_staff_only(api_client, customer_client, staff_user):
    _, read_write_key = api_key_create(user=staff_user, scopes=["read", "write"])

    assert api_client.get(MOVEMENTS).status_code in (401, 403)
    assert customer_client.get(MOVEMENTS).status_code == 403
    assert bearer(APIClient(), read_write_key).get(MOVEMENTS).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_following_next_serves_every_row_once_in_feed_order_with_its_fields(shop, staff_user, staff_client):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5, actor=staff_user, reference="PO-1")
    for n in range(6):
        services.stock_adjust(sku="TEA" if n % 2 else "MUG", warehouse_code="EAST", delta=n + 1, note=f"n{n}")
    wait_for_horizon()

    rows, _ = follow(staff_client, MOVEMENTS, {"page_size": 3})

    assert [row["id"] for row in rows] == feed_order()
    assert len(rows) == 7
    assert rows[0] == {
        "id": rows[0]["id"],
        "sku": "MUG",
        "warehouse": "MAIN",
        "delta_on_hand": 5,
        "delta_reserved": 0,
        "delta_bucketed": 0,
        "delta_backordered": 0,
        "reason": "receipt",
        "reference": "PO-1",
        "note": "",
        "actor": "staff@example.com",
        "created_at": rows[0]["created_at"],
    }
    assert rows[1]["actor"] is None and rows[1]["note"] == "n0" and rows[1]["reason"] == "adjustment"


@pytest.mark.django_db(transaction=True)
def test_a_caught_up_feed_answers_empty_pages_whose_next_brings_the_rows_written_later(shop, staff_client):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)
    wait_for_horizon()
    rows, tail = follow(staff_client, MOVEMENTS)
    assert len(rows) == 1

    empty = staff_client.get(tail).json()
    assert empty["results"] == [] and empty["next"] and empty["previous"] is None

    services.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=2)
    wait_for_horizon()
    later, _ = follow(staff_client, empty["next"])
    assert [(row["sku"], row["delta_on_hand"]) for row in later] == [("TEA", 2)]


@pytest.mark.django_db(transaction=True)
def test_a_short_filtered_page_moves_past_the_rows_it_did_not_match(shop):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)
    services.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)
    wait_for_horizon()
    last = max(StockMovement.objects.values_list("id", flat=True))

    rows, position = feeds.movements_page(after=None, limit=10, sku="NOPE")

    assert rows == []
    assert position > (int(_txid_of(last)), last)  # a caught-up poll starts after every row there is
    again, _ = feeds.movements_page(after=position, limit=10)
    assert again == []


@pytest.mark.django_db(transaction=True)
def test_movements_filters(shop, staff_user, staff_client):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=3, reference="PO-7")
    services.stock_receive(sku="TEA", warehouse_code="EAST", quantity=4, reference="PO-8")
    services.stock_adjust(sku="MUG", warehouse_code="EAST", delta=2, note="found", actor=staff_user)
    services.stock_transfer(sku="MUG", from_code="MAIN", to_code="EAST", quantity=1, actor=staff_user)
    wait_for_horizon()

    def pairs(**params):
        rows, _ = follow(staff_client, MOVEMENTS, params)
        return [(row["sku"], row["warehouse"], row["reason"], row["delta_on_hand"]) for row in rows]

    assert pairs(sku="TEA") == [("TEA", "EAST", "receipt", 4)]
    assert pairs(warehouse="EAST", sku="MUG") == [
        ("MUG", "EAST", "adjustment", 2),
        ("MUG", "EAST", "transfer", 1),
    ]
    assert pairs(reason="transfer") == [("MUG", "MAIN", "transfer", -1), ("MUG", "EAST", "transfer", 1)]
    assert pairs(reference="PO-7") == [("MUG", "MAIN", "receipt", 3)]
    assert pairs(sku="NOPE") == []
    assert pairs(created_since=(timezone.now() + timedelta(minutes=5)).isoformat()) == []
    assert len(pairs(created_since=(timezone.now() - timedelta(minutes=5)).isoformat())) == 5
    # Filters ride in the `next` links.
    first = staff_client.get(MOVEMENTS, {"reason": "transfer", "page_size": 1}).json()
    assert "reason=transfer" in first["next"]
    assert [row["warehouse"] for row in staff_client.get(first["next"]).json()["results"]] == ["EAST"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"reason": "stolen"}, "reason", "invalid"),
        ({"created_since": "yesterday"}, "created_since", "invalid"),
        ({"created_since": "9999-12-31T23:59:59-23:00"}, "created_since", "invalid"),
        ({"sku": "a b"}, "sku", "invalid"),
        ({"sku": "a\x00b"}, "sku", "invalid"),
        ({"warehouse": "main"}, "warehouse", "invalid"),
        ({"reference": "x" * 65}, "reference", "invalid"),
        ({"cursor": "not-a-cursor"}, "cursor", "invalid_cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"12:-3").decode()}, "cursor", "invalid_cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"18446744073709551616:1").decode()}, "cursor", "invalid_cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "cursor", "invalid_cursor"),
        ({"cursor": "x" * 65}, "cursor", "invalid"),
    ],
)
def test_bad_movement_queries_are_400_with_the_envelope(staff_client, params, field, code):
    response = staff_client.get(MOVEMENTS, params)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and field in error["fields"]


@pytest.mark.django_db(transaction=True)
def test_a_cursor_past_the_end_is_kept_and_page_size_is_parsed_as_every_list_parses_it(shop, staff_client):
    for n in range(3):
        services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=n + 1)
    wait_for_horizon()
    far = feeds.encode_cursor((2**64 - 1, 1))

    beyond = staff_client.get(MOVEMENTS, {"cursor": far}).json()
    assert beyond["results"] == [] and f"cursor={far}" in beyond["next"]  # never moves back
    assert len(staff_client.get(MOVEMENTS, {"page_size": 2}).json()["results"]) == 2
    assert len(staff_client.get(MOVEMENTS, {"page_size": 1000}).json()["results"]) == 3  # at most 100
    assert len(staff_client.get(MOVEMENTS, {"page_size": "lots"}).json()["results"]) == 3  # the default, 25


def test_cursor_round_trip():
    for position in [(0, 0), (0, 17), (123456, 7), (2**64 - 1, 2**63 - 1)]:
        text = feeds.encode_cursor(position)
        assert text.isascii() and "=" not in text and "/" not in text and "+" not in text
        assert feeds.decode_cursor(text) == position


# --- movements: the order and the txid column ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_every_ledger_writer_stamps_its_transaction_id(shop):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=3)  # Python: inventory_ledger_write
    level = StockLevel.objects.get(product__sku="MUG", warehouse__code="MAIN")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, reason, reference, note,"
            " created_at) VALUES (%s, 0, 0, 'count', '', 'plain insert', now())",
            [level.pk],
        )
        cursor.execute(
            "SELECT m.txid = pg_current_xact_id() FROM inventory_stockmovement m WHERE m.note = 'plain insert'"
        )
        assert cursor.fetchone()[0] is True
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(txid), count(DISTINCT txid) FROM inventory_stockmovement")
        assert cursor.fetchone() == (2, 2, 2)


@pytest.mark.django_db(transaction=True)
def test_rows_from_before_the_migration_are_served_first_in_id_order(shop, staff_client):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)
    level = StockLevel.objects.get(product__sku="MUG", warehouse__code="MAIN")
    with connection.cursor() as cursor:  # rows as a release before migration 0012 wrote them: no txid
        for n in (1, 2):
            cursor.execute(
                "INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, reason, reference,"
                " note, created_at, txid) VALUES (%s, %s, 0, 'receipt', '', 'old', now(), NULL)",
                [level.pk, n],
            )
    services.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=9)
    new_first, old_1, old_2, new_last = StockMovement.objects.order_by("id").values_list("id", flat=True)
    wait_for_horizon()

    rows, _ = follow(staff_client, MOVEMENTS, {"page_size": 1})

    assert [row["id"] for row in rows] == [old_1, old_2, new_first, new_last]
    assert [row["note"] for row in rows[:2]] == ["old", "old"]


@pytest.mark.django_db(transaction=True)
def test_movements_after_follows_the_ledger_for_jobs(shop):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)
    services.stock_receive(sku="TEA", warehouse_code="EAST", quantity=2)
    wait_for_horizon()

    first = feeds.movements_after(None, 1)
    rest = feeds.movements_after(first[-1].position, 10)

    assert [(m.sku, m.warehouse, m.delta_on_hand) for m in first + rest] == [("MUG", "MAIN", 1), ("TEA", "EAST", 2)]
    assert first[0].level_id == StockLevel.objects.get(product__sku="MUG").pk
    assert feeds.movements_after(rest[-1].position, 10) == []
    rows, position = feeds.movements_page(after=rest[-1].position, limit=10)
    assert rows == [] and position > rest[-1].position


@pytest.mark.django_db(transaction=True)
def test_a_slow_transaction_row_is_served_once_where_an_id_cursor_would_skip_it(shop, staff_client):
    """T_slow writes a ledger row and stays open while T_fast writes and commits a later row. The
    slow row has the lower id, yet commits last: a reader following ids has already gone past it.
    The feed holds T_fast's row back until T_slow ends, then serves both, each once."""
    services.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=10)  # a row before the race
    written, release = threading.Event(), threading.Event()
    slow: dict = {}

    def slow_writer():
        try:
            with transaction.atomic():
                services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=3, note="slow")
                slow["id"] = StockMovement.objects.get(note="slow").pk
                written.set()
                assert release.wait(timeout=60), "the test never let the slow transaction commit"
        except Exception as exc:  # the main thread reports it
            slow["error"] = exc
            written.set()
        finally:
            connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert written.wait(timeout=60) and "error" not in slow, slow.get("error")
        fast = services.stock_adjust(sku="TEA", warehouse_code="EAST", delta=4, note="fast")  # commits now
        fast_id = StockMovement.objects.get(note="fast").pk
        assert fast_id > slow["id"], "the interleaving did not happen: the slow row must take the lower id"
        assert fast.on_hand == 4

        # A naive reader ordered by id sees the fast row and moves its cursor past the slow one.
        naive_seen = list(StockMovement.objects.order_by("id").values_list("id", flat=True))
        assert fast_id in naive_seen and slow["id"] not in naive_seen
        naive_cursor = max(naive_seen)

        # The feed while T_slow is open: the first row, not the fast one (its txid is above xmin).
        before, tail = follow(staff_client, MOVEMENTS, {"page_size": 1})
        served_before = [row["id"] for row in before]
        assert fast_id not in served_before and slow["id"] not in served_before
    finally:
        release.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and "error" not in slow, slow.get("error")
    wait_for_horizon()

    after, _ = follow(staff_client, tail, page_size=1)  # the same `next`, once T_slow has committed
    served = served_before + [row["id"] for row in after]

    # The naive id cursor skips the slow row for ever...
    assert slow["id"] not in StockMovement.objects.filter(id__gt=naive_cursor).values_list("id", flat=True)
    # ...the feed serves every row exactly once, the slow one before the fast one (commit order).
    assert sorted(served) == sorted(StockMovement.objects.values_list("id", flat=True))
    assert len(served) == len(set(served)) == 3
    assert served.index(slow["id"]) < served.index(fast_id)
    assert served == feed_order()


@pytest.mark.django_db(transaction=True)
def test_a_follower_reading_while_many_writers_commit_out_of_order_sees_every_row_once(shop):
    """Writers hold their transactions open for a random while after writing, so rows commit out
    of id order; a follower polls the feed all along. Every row is served exactly once."""
    writers, changes = 6, 12
    codes = [f"W{n}" for n in range(writers)]
    for code in codes:
        WarehouseFactory(code=code)
    barrier = threading.Barrier(writers + 1)
    failures: list[Exception] = []

    def write(n: int):
        rng = random.Random(n)
        try:
            barrier.wait(timeout=30)
            for _ in range(changes):
                with transaction.atomic():
                    services.stock_adjust(sku="MUG", warehouse_code=codes[n], delta=1)
                    time.sleep(rng.uniform(0, 0.01))  # commit a little later, in another order
        except Exception as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    served: list[int] = []
    position, reads_while_writing = None, 0
    barrier.wait(timeout=30)
    while any(thread.is_alive() for thread in threads):
        rows, position = feeds.movements_page(after=position, limit=7)
        served += [row.id for row in rows]
        reads_while_writing += 1
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    wait_for_horizon()
    while True:
        rows, position = feeds.movements_page(after=position, limit=7)
        served += [row.id for row in rows]
        if len(rows) < 7:
            break

    assert reads_while_writing > 1
    assert len(served) == len(set(served)) == writers * changes
    assert sorted(served) == sorted(StockMovement.objects.values_list("id", flat=True))
    assert served == feed_order()
